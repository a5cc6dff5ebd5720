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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.requests import Request

from todo_server.db import Pool
from todo_server.errors import RateLimited
from todo_server.user_connection import UserConnection, acting_as

RETRY_AFTER_SECONDS = 1

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

    @asynccontextmanager
    async def slot(self, user_id: str) -> AsyncIterator[None]:
        """Hold one of ``user_id``'s slots for the block; 429 when none frees in time."""
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
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                    ) from None
            else:
                await semaphore.acquire()
            try:
                yield
            finally:
                semaphore.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._users[user_id]

    def busy_users(self) -> int:
        """How many users hold or wait for a slot now (for tests and diagnostics)."""
        return len(self._users)


@asynccontextmanager
async def connection_for(request: Request, user_id: str) -> AsyncIterator[UserConnection]:
    """A pooled connection, taken within the user's share of the pool, acting as the user.

    Waiting for the user's slot and then for a connection share one budget,
    ``slots.wait`` (DB_POOL_TIMEOUT): a request never waits twice as long
    when both are contended, as during an outage behind PgBouncer.
    """
    slots: UserSlots = request.state.user_slots
    pool: Pool = request.state.pool
    deadline = time.monotonic() + slots.wait
    async with slots.slot(user_id):
        remaining = max(deadline - time.monotonic(), MIN_CONNECTION_WAIT_SECONDS)
        async with pool.connection(timeout=remaining) as conn, acting_as(conn, user_id):
            yield conn
