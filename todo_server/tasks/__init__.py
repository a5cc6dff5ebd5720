"""The tasks feature: handlers, input checks, and the SQL each job runs.

The top layer below the composition root; the code map is docs/architecture.md.
"""
