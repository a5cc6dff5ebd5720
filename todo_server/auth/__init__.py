"""Who is asking: tokens, JWKS, Better Auth sessions, local accounts, and the route guard.

Above the HTTP edge, below tasks: nothing here knows what a task is.
"""
