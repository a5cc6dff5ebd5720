"""A cap on how much of the connection pool one user may hold at once.

Without it, one user firing many slow requests (worst-case searches, say) takes
every pooled connection and everyone else waits or gets 503. Each user gets at
most ``per_user`` connections at a time in this process; their next requests
wait for one of their own to finish, up to ``wait`` seconds, then get 429 with
Retry-After. Other users' requests never wait behind them.

The count is per server process (each has its own pool): with WORKERS=2 a
user may hold up to twice ``per_user`` connections in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg.pq import TransactionStatus

from todo_server.errors import RateLimited
from todo_server.storage.db import Pool
from todo_server.storage.row_security import UserConnection

#: Retry-After on the 429 for a user whose every slot stayed busy: by then one of
#: their own requests has usually finished.
USER_BUSY_RETRY_AFTER_SECONDS = 1

#: What is left of the budget for a pooled connection is never less than this:
#: an idle connection is handed over at once, and a request that waited its
#: whole budget for its slot still gets one if the pool has it.
MIN_CONNECTION_WAIT_SECONDS = 0.01


@dataclass(slots=True)
class _UserEntry:
    semaphore: asyncio.Semaphore
    users: int = 0  # requests holding or waiting for the semaphore


class UserSlots:
    """Per-user semaphores, made when a user first needs one and dropped when idle."""

    def __init__(self, per_user: int, wait: float) -> None:
        self.per_user = per_user
        self.wait = wait
        self._users: dict[str, _UserEntry] = {}

    async def acquire(self, user_id: str) -> None:
        """Take one of ``user_id``'s slots; 429 when none frees within ``wait``."""
        entry = self._users.get(user_id)
        if entry is None:
            entry = self._users[user_id] = _UserEntry(asyncio.Semaphore(self.per_user))
        semaphore = entry.semaphore
        entry.users += 1
        try:
            if semaphore.locked():
                try:
                    await asyncio.wait_for(semaphore.acquire(), self.wait)
                except TimeoutError:
                    raise RateLimited(
                        "Too many requests of yours at once; try again shortly",
                        headers={"Retry-After": str(USER_BUSY_RETRY_AFTER_SECONDS)},
                    ) from None
            else:
                await semaphore.acquire()
        except BaseException:
            self._leave(user_id, entry)
            raise

    def release(self, user_id: str) -> None:
        """Give back the slot ``acquire`` took."""
        entry = self._users[user_id]
        entry.semaphore.release()
        self._leave(user_id, entry)

    def _leave(self, user_id: str, entry: _UserEntry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._users[user_id]

    @asynccontextmanager
    async def slot(self, user_id: str) -> AsyncIterator[None]:
        """Hold one of ``user_id``'s slots for the block; 429 when none frees in time."""
        await self.acquire(user_id)
        try:
            yield
        finally:
            self.release(user_id)

    def busy_users(self) -> int:
        """How many users hold or wait for a slot now (for tests and diagnostics)."""
        return len(self._users)


class connection_for:  # noqa: N801 (used as a function: ``async with connection_for(...)``)
    """A pooled connection, taken within the user's share of the pool, acting as the user.

    Waiting for the user's slot and then for a connection share one budget,
    ``slots.wait`` (DB_POOL_TIMEOUT): a request never waits twice as long
    when both are contended, as during an outage behind PgBouncer.

    One class rather than four nested context managers (the slot, the pool's
    ``connection()``, the connection's own block, ``acting_as``): this runs on
    every task request, and each generator-based layer costs time on the way
    in and out. It does their work: on the way out the connection commits
    (or rolls back after an error) if a transaction is open, goes back to the
    pool, and the slot is released.
    """

    __slots__ = ("slots", "pool", "user_id", "conn")

    def __init__(self, slots: UserSlots, pool: Pool, user_id: str) -> None:
        self.slots = slots
        self.pool = pool
        self.user_id = user_id
        self.conn: UserConnection | None = None

    async def __aenter__(self) -> UserConnection:
        slots = self.slots
        deadline = time.monotonic() + slots.wait
        await slots.acquire(self.user_id)
        try:
            remaining = max(deadline - time.monotonic(), MIN_CONNECTION_WAIT_SECONDS)
            conn = await self.pool.getconn(timeout=remaining)
        except BaseException:
            slots.release(self.user_id)
            raise
        assert isinstance(conn, UserConnection)
        conn.acting_user = self.user_id
        self.conn = conn
        return conn

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        conn = self.conn
        assert conn is not None
        try:
            conn.acting_user = None
            try:
                if not conn.closed and conn.pgconn.transaction_status != TransactionStatus.IDLE:
                    if exc_type is None:
                        await conn.commit()
                    else:
                        # The error that ended the block is the one to report, as
                        # psycopg's own block does; the pool discards a broken connection.
                        with contextlib.suppress(Exception):
                            await conn.rollback()
            finally:
                await self.pool.putconn(conn)
        finally:
            self.conn = None
            self.slots.release(self.user_id)
