"""The PostgreSQL connection pool: how it is built, opened and probed.

One ``AsyncConnectionPool`` per process, opened in the application lifespan and
handed to handlers through lifespan state. Connections are in autocommit mode:
a read is one round trip, and writes that need several statements open an
explicit ``conn.transaction()``.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from todo_server.config import DatabaseSettings

logger = logging.getLogger("todo_server.db")

RECONNECT_TIMEOUT_SECONDS = 3.0

SESSION_SETTINGS_SQL = """
SELECT set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false)
"""


def create_pool(settings: DatabaseSettings) -> AsyncConnectionPool:
    """A closed pool configured from the settings; open it in the lifespan."""
    statement_timeout_ms = int(settings.statement_timeout * 1000)

    async def configure(conn: psycopg.AsyncConnection) -> None:
        # A session setting rather than a startup option, so it also works
        # through poolers that refuse unknown startup parameters.
        # UTC sessions, so timestamps leave the database as RFC 3339 with +00:00.
        await conn.execute(SESSION_SETTINGS_SQL, (f"{statement_timeout_ms}ms",))

    return AsyncConnectionPool(
        settings.url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout,
        open=False,
        configure=configure,
        # A server restart breaks every pooled connection; checking on checkout
        # discards them instead of failing the first requests after a restart.
        check=AsyncConnectionPool.check_connection,
        kwargs={
            "autocommit": True,
            "prepare_threshold": settings.prepare_threshold,
            "row_factory": dict_row,
        },
        # Give up a reconnection loop after a few seconds: the next request starts
        # a fresh one at once, so recovery follows the database within seconds
        # instead of waiting out an exponential back-off grown during a long outage.
        reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
        name="todo-server",
    )


async def probe(pool: AsyncConnectionPool, timeout: float) -> bool:
    """True when the database answers a trivial query within ``timeout`` seconds."""
    try:
        async with pool.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")
        return True
    except (PoolTimeout, psycopg.OperationalError) as exc:
        logger.warning("database probe failed: %s", type(exc).__name__)
        return False
