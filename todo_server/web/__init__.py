"""The HTTP edge: the uvicorn protocol adapter, the one middleware, bodies, responses, errors.

Above storage, below auth and tasks: it knows HTTP, not who is asking or what a task is.
"""
