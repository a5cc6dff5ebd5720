"""Storage: PostgreSQL through one pool, statements run as the acting user, migrations.

Below the HTTP edge: nothing here imports Starlette (tests/test_layers.py).
"""
