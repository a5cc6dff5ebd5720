"""Time in tests: a clock the test moves, and waits that end when a condition holds.

A fixed ``sleep`` either wastes time or, on a busy machine, is too short; a
condition polled until a deadline is as fast as the machine and fails loudly
(with what it waited for) instead of testing the wrong moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

T = TypeVar("T")


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(
    condition: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.01
) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail after
    ``timeout`` seconds saying ``what`` never happened. The timeout is generous: it is
    only reached when the test fails."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"gave up after {timeout} s waiting for {what}"
        time.sleep(interval)
    return result


def lock_waiters(database_url: str, query_fragment: str = "") -> int:
    """Backends of this database waiting on a lock, in a statement containing the fragment."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{query_fragment}%",),
        ).fetchone()
    return row[0] if row else 0
