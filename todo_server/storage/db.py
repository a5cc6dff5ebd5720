"""The PostgreSQL connection pool: how it is built, opened and probed.

One ``AsyncConnectionPool`` per process, opened in the application lifespan and
handed to handlers through lifespan state. Connections are in autocommit mode:
a read is one round trip, and writes that need several statements open an
explicit ``conn.transaction()``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from todo_server import metrics
from todo_server.config import DatabaseSettings
from todo_server.storage.row_security import UserConnection

logger = logging.getLogger("todo_server.db")

RECONNECT_TIMEOUT_SECONDS = 3.0

#: Tries of a transaction PostgreSQL aborted for a deadlock or a serialization
#: failure: the first, and two more.
CONFLICT_ATTEMPTS = 3
CONFLICT_BACKOFF_SECONDS = 0.02
RETRYABLE_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

T = TypeVar("T")

#: A connection that reads rows as dicts: the pool's, or one opened with dict_row.
DictConnection: TypeAlias = psycopg.AsyncConnection[DictRow]

#: The service's pool: its connections read rows as dicts and can act as a user.
Pool: TypeAlias = AsyncConnectionPool[UserConnection]

#: A connection checked out again within this many seconds is trusted as is;
#: one that sat idle longer is checked with a round trip first.
TRUST_RECENTLY_USED_SECONDS = 1.0

SESSION_SETTINGS_SQL = """
SELECT set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false)
"""


async def keep_role_defaults(conn: psycopg.AsyncConnection[Any], statement_timeout: str) -> None:
    """Make the session settings the role's defaults, for a transaction-pooling PgBouncer.

    PgBouncer runs each transaction on whichever server connection is free, so
    a session setting reaches only the server connection it happened to run
    on. A role's defaults reach every server connection PgBouncer opens. An
    ordinary role may set its own; when it may not, the log says what to run.
    """
    statements: list[sql.Composed | sql.SQL] = [
        sql.SQL("ALTER ROLE CURRENT_USER SET statement_timeout = {}").format(
            sql.Literal(statement_timeout)
        ),
        sql.SQL("ALTER ROLE CURRENT_USER SET TimeZone = 'UTC'"),
    ]
    try:
        for statement in statements:
            await conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        logger.error(
            "DB_PGBOUNCER=transaction: cannot set this role's defaults; as its owner run: %s",
            "; ".join(statement.as_string(conn) for statement in statements),
        )
        return
    logger.info(
        "DB_PGBOUNCER=transaction: role defaults statement_timeout=%s, TimeZone=UTC",
        statement_timeout,
    )


def statement_timeout_setting(seconds: float) -> str:
    """PostgreSQL's ``statement_timeout`` for ``seconds``, in whole milliseconds.

    Rounded up: a tiny positive timeout must not become ``0ms``, which means no limit.
    """
    return f"{math.ceil(seconds * 1000)}ms"


def create_pool(
    settings: DatabaseSettings,
    on_connect: Callable[[UserConnection], Awaitable[None]] | None = None,
) -> Pool:
    """A closed pool configured from the settings; open it in the lifespan.

    ``on_connect`` runs on every new connection after the session settings; an
    exception there discards the connection (the schema check uses this).
    """
    statement_timeout = statement_timeout_setting(settings.statement_timeout)
    role_defaults_kept: list[bool] = []  # once per pool is enough

    async def configure(conn: UserConnection) -> None:
        # A session setting rather than a startup option, so it also works
        # through poolers that refuse unknown startup parameters.
        # UTC sessions, so timestamps leave the database as RFC 3339 with +00:00.
        await conn.execute(SESSION_SETTINGS_SQL, (statement_timeout,))
        conn.user_prepare_threshold = settings.prepare_threshold
        if settings.pgbouncer and not role_defaults_kept:
            await keep_role_defaults(conn, statement_timeout)
            role_defaults_kept.append(True)
        if on_connect is not None:
            await on_connect(conn)

    return AsyncConnectionPool(
        settings.url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout,
        # Beyond this many waiting requests, answer 503 at once instead of queueing.
        max_waiting=settings.pool_max_waiting,
        open=False,
        configure=configure,
        check=check_if_idle,
        connection_class=UserConnection,
        kwargs={
            "autocommit": True,
            # Statements are prepared by UserConnection (settings.prepare_threshold);
            # psycopg preparing its own would make it DEALLOCATE ALL on rollbacks.
            "prepare_threshold": None,
            "row_factory": dict_row,
        },
        # Give up a reconnection loop after a few seconds: the next request starts
        # a fresh one at once, so recovery follows the database within seconds
        # instead of waiting out an exponential back-off grown during a long outage.
        reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
        name="todo-server",
    )


async def check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """Check a connection on checkout only if it has been idle a while.

    A server restart breaks every pooled connection; checking an idle one
    discards it instead of failing the first request after a quiet restart.
    Checking every checkout would cost a round trip per request, a large share
    of a short request's time (bench/README.md), and under steady load
    connections are reused within milliseconds: a restart then costs a few
    503s, after which the pool has replaced the broken connections.
    """
    now = time.monotonic()
    last = getattr(conn, "_todo_checked_out_at", None)
    conn._todo_checked_out_at = now  # type: ignore[attr-defined]
    if last is None or now - last > TRUST_RECENTLY_USED_SECONDS:
        await AsyncConnectionPool.check_connection(conn)


async def probe(pool: Pool, timeout: float) -> bool:
    """True when the database answers a trivial query within ``timeout`` seconds."""
    try:
        async with pool.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")
        return True
    except (PoolTimeout, psycopg.OperationalError) as exc:
        logger.warning("database probe failed: %s", type(exc).__name__)
        return False


#: How often the pool's state and counts are copied into the metrics.
POOL_SAMPLE_SECONDS = 1.0


async def sample_pool(pool: Pool, interval: float = POOL_SAMPLE_SECONDS) -> None:
    """Copy the pool's statistics into the metrics every ``interval`` seconds, until cancelled.

    Sampled from the pool's own counts rather than timed on every checkout: the
    requests pay nothing, and each worker's values reach a scrape served by
    any process.
    """
    try:
        while True:
            metrics.pool_sampled(pool.pop_stats())
            await asyncio.sleep(interval)
    finally:
        metrics.pool_sampled({})


async def retry_conflicts(
    conn: psycopg.AsyncConnection[Any], work: Callable[[], Awaitable[T]], what: str
) -> T:
    """``work()``, run again after a deadlock or serialization failure (3 tries in all).

    PostgreSQL rolls back the whole transaction it chose as a deadlock victim,
    so running it again is safe only when ``work`` is that whole transaction
    (it opens and closes ``conn.transaction()`` itself) or one autocommit
    statement. Inside an outer transaction the connection is left aborted, not
    idle: then nothing is retried and the error goes on to the handler.
    """
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return await work()
        except RETRYABLE_CONFLICTS as exc:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                raise
            if attempt == CONFLICT_ATTEMPTS:
                logger.warning(
                    "%s: %s %d times; giving up", what, type(exc).__name__, CONFLICT_ATTEMPTS
                )
                raise
            metrics.conflict_retried()
            logger.info(
                "%s: %s; trying again (%d of %d)",
                what,
                type(exc).__name__,
                attempt + 1,
                CONFLICT_ATTEMPTS,
            )
            # The victim gave way so the other transaction can finish; retried at once
            # it can take the same row again first and deadlock anew. A few random
            # milliseconds let the other side go first.
            await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS) * attempt)
    raise AssertionError("unreachable")
