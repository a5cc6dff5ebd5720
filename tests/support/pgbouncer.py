"""A real PgBouncer (Debian's) in front of the suite's PostgreSQL, as a fixture."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from devtools.pgbouncer import PgBouncer

#: The login role tests connect through the bouncer as (a superuser, to run migrations).
ROLE = "todo_pgbouncer"


@pytest.fixture
def bouncer(pg_server) -> Iterator[PgBouncer]:
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            admin.execute(f"CREATE ROLE {ROLE} LOGIN SUPERUSER")
    bouncer = PgBouncer(pg_server.admin_url, pool_size=4).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


def through(bouncer: PgBouncer, database_url: str, user: str = ROLE) -> str:
    return bouncer.url(urlsplit(database_url).path.lstrip("/"), user=user)
