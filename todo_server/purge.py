"""Purging what is kept only for a while: deleted tasks past their retention,
expired idempotency keys, and aged throttling rows.

Runs inside the service on a timer (every ``PURGE_INTERVAL`` seconds) and as
``todo-server purge`` for ops. Each batch is one short transaction that first
takes a transaction-scoped advisory lock without waiting: when another replica
holds it, that replica is purging and this one skips its turn (safe behind
PgBouncer's transaction pooling, unlike a session lock). Batches are small, so
no purge holds locks or a connection for long; rows another transaction holds
are skipped and purged next time.

Deleted tasks and idempotency keys are purged by SECURITY DEFINER functions
(sql/0009, sql/0011) that clamp the cutoff they are given with the database's
own clock: a caller may purge less, never more. Deleted tasks are kept at least
the owner's ``purge_policy`` retention (30 days unless the owner lowers it),
whatever ``TASK_RETENTION_DAYS`` says; keys their 24 hours. Throttling rows are
likewise kept their whole window by the database's clock (login_throttle.py
counts them by it), so a server whose clock runs ahead cannot purge them early.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import PoolTimeout

from todo_server import metrics
from todo_server.auth.login_throttle import WINDOW_SECONDS
from todo_server.storage.db import DictConnection, Pool
from todo_server.tasks.idempotency import KEY_LIFETIME_SECONDS

logger = logging.getLogger("todo_server.purge")

BATCH_SIZE = 500

#: Any fixed 64-bit number, distinct from the migration runner's.
PURGE_LOCK_KEY = 7_310_585_176_420_210_202

TRY_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(%s) AS locked"

# Deleted tasks and idempotency keys are behind row-level security: these are
# SECURITY DEFINER functions (sql/0009) that work across users, as the owner.
PURGE_TASKS_SQL = "SELECT todo_purge_deleted_tasks(%(before)s, %(batch)s) AS purged"

PURGE_IDEMPOTENCY_KEYS_SQL = "SELECT todo_purge_idempotency_keys(%(before)s, %(batch)s) AS purged"

#: The shortest retention the database allows any caller (the owner's to change).
RETENTION_FLOOR_SQL = """
SELECT coalesce(
    (SELECT extract(epoch FROM deleted_task_retention) FROM purge_policy), 30 * 86400
)::float8 / 86400 AS days
"""

PURGE_LOGIN_FAILURES_SQL = """
WITH gone AS (
    DELETE FROM login_failures
    WHERE id IN (
        SELECT id FROM login_failures
        WHERE failed_at < least(%(before)s, now() - make_interval(secs => %(window)s))
        LIMIT %(batch)s
    )
    RETURNING 1
)
SELECT count(*)::int AS purged FROM gone
"""


@dataclass
class Purged:
    """How many rows one purge removed, by kind; None when another replica was purging."""

    tasks: int = 0
    idempotency_keys: int = 0
    login_failures: int = 0
    skipped: bool = False

    @property
    def total(self) -> int:
        return self.tasks + self.idempotency_keys + self.login_failures


async def purge(
    conn: DictConnection,
    *,
    retention_days: int,
    now: datetime | None = None,
    batch: int = BATCH_SIZE,
    max_batches: int | None = None,
) -> Purged:
    """Purge everything due at ``now``, one batch per transaction, until nothing is left.

    ``conn`` must be in autocommit mode. Stops early, with ``skipped`` set,
    when another process holds the purge lock.
    """
    now = now or datetime.now(UTC)
    work = [
        ("tasks", PURGE_TASKS_SQL, now - timedelta(days=retention_days)),
        (
            "idempotency_keys",
            PURGE_IDEMPOTENCY_KEYS_SQL,
            now - timedelta(seconds=KEY_LIFETIME_SECONDS),
        ),
        ("login_failures", PURGE_LOGIN_FAILURES_SQL, now - timedelta(seconds=WINDOW_SECONDS)),
    ]
    result = Purged()
    batches = 0
    for kind, statement, before in work:
        while max_batches is None or batches < max_batches:
            batches += 1
            async with conn.transaction():
                cursor = await conn.execute(TRY_LOCK_SQL, (PURGE_LOCK_KEY,))
                row = await cursor.fetchone()
                if not row or not row["locked"]:
                    result.skipped = True
                    return result
                cursor = await conn.execute(
                    statement, {"before": before, "batch": batch, "window": WINDOW_SECONDS}
                )
                row = await cursor.fetchone()
            purged = row["purged"] if row else 0
            metrics.rows_purged(kind, purged)
            setattr(result, kind, getattr(result, kind) + purged)
            if purged < batch:
                break
    return result


async def retention_floor_days(conn: DictConnection) -> float:
    """The days the database keeps deleted tasks at least, whatever its caller asks."""
    cursor = await conn.execute(RETENTION_FLOOR_SQL)
    row = await cursor.fetchone()
    return float(row["days"]) if row else 30.0


async def purge_periodically(pool: Pool, *, interval: float, retention_days: int) -> None:
    """The service's timer: purge every ``interval`` seconds until cancelled.

    A failed round (database away, busy) is logged and tried again next time.
    At most 20 batches a round, so one round never holds a connection long.
    The first round that reaches the database warns when ``TASK_RETENTION_DAYS``
    is shorter than the database allows.
    """
    checked = False
    while True:
        await asyncio.sleep(interval)
        try:
            async with pool.connection() as conn:
                if not checked:
                    floor = await retention_floor_days(conn)
                    checked = True
                    if retention_days < floor:
                        logger.warning(
                            "TASK_RETENTION_DAYS is %d but the database keeps deleted tasks at"
                            " least %g days (its purge_policy, docs/deploy.md: Purging)",
                            retention_days,
                            floor,
                        )
                result = await purge(conn, retention_days=retention_days, max_batches=20)
        except (psycopg.Error, PoolTimeout) as exc:
            logger.warning("purge failed (%s); trying again in %ss", type(exc).__name__, interval)
            continue
        if result.total:
            logger.info(
                "purged %d deleted tasks, %d idempotency keys, %d throttling rows",
                result.tasks,
                result.idempotency_keys,
                result.login_failures,
            )
