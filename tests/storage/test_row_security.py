"""Statements run as a user: one pipeline of set_config and the statement (storage/row_security.py).

The service's task statements all go through this path, so the API tests
cover it broadly; these pin what the path itself promises: the setting holds
for the statement and ends with its transaction, parameters and rows mean what
they mean through psycopg, errors are psycopg's, a request cancelled mid-way
never hands a half-read connection back, and nothing is prepared behind a
transaction pooler.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from devtools.postgres import as_role
from todo_server.storage.db import create_pool
from todo_server.storage.row_security import UserConnection, acting_as
from todo_server.storage.user_slots import UserSlots, connection_for

SETTING_SQL = "SELECT current_setting('app.user_id', true) AS who"


@pytest.fixture
def two_users(ada, bob):
    ada.create(title="ada's")
    bob.create(title="bob's")
    return ada.id, bob.id


@pytest.fixture
def run(database_url: str) -> Callable[..., Any]:
    """Run ``work(conn)`` on a fresh UserConnection as the runtime role, as the service's pool."""

    def runner(
        work: Callable[[UserConnection], Awaitable[Any]], prepare_threshold: int | None = 0
    ) -> Any:
        async def main() -> Any:
            conn = await UserConnection.connect(
                as_role(database_url), autocommit=True, row_factory=dict_row, prepare_threshold=None
            )
            conn.user_prepare_threshold = prepare_threshold
            try:
                return await work(conn)
            finally:
                await conn.close()

        return asyncio.run(main())

    return runner


def test_a_statement_sees_only_its_user_and_the_setting_ends_with_it(run, two_users):
    ada, _ = two_users

    async def work(conn: UserConnection) -> list[Any]:
        seen = []
        async with acting_as(conn, ada):
            cur = await conn.execute("SELECT user_id FROM tasks")  # no predicate at all
            seen.append([row["user_id"] for row in await cur.fetchall()])
            seen.append(await (await conn.execute(SETTING_SQL)).fetchone())
        cur = await conn.execute(SETTING_SQL)  # the same session, the next transaction
        seen.append((await cur.fetchone())["who"] or "")
        seen.append(await (await conn.execute("SELECT count(*) AS n FROM tasks")).fetchone())
        return seen

    assert run(work) == [[ada], {"who": ada}, "", {"n": 0}]


def test_in_an_explicit_transaction_every_statement_is_the_user_s(run, two_users):
    ada, bob = two_users

    async def work(conn: UserConnection) -> list[Any]:
        async with conn.transaction():
            async with acting_as(conn, bob):
                first = await (await conn.execute("SELECT user_id FROM tasks")).fetchall()
                await conn.execute("UPDATE tasks SET title = 'renamed'")
                second = await (await conn.execute("SELECT title FROM tasks")).fetchall()
            status = conn.info.transaction_status
        after = await (await conn.execute(SETTING_SQL)).fetchone()
        return [first, second, status, after["who"] or ""]

    assert run(work) == [
        [{"user_id": bob}],
        [{"title": "renamed"}],
        TransactionStatus.INTRANS,
        "",
    ]


QUERY = """
SELECT %(word)s::text AS a, %(word)s::text AS again, 7 %% 3 AS remainder,
       %(n)s::bigint AS n, %(none)s::text AS none, %(tags)s::text[] AS tags,
       %(at)s::timestamptz AS at, %(flag)s::boolean AS flag
FROM generate_series(1, 2)
"""
PARAMS = {
    "word": "it's %s",
    "n": 2**40,
    "none": None,
    "tags": ["a", "b c"],
    "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    "flag": True,
}


@pytest.mark.parametrize("prepare_threshold", [0, None])
def test_parameters_and_rows_mean_what_they_mean_through_psycopg(run, prepare_threshold):
    async def work(conn: UserConnection) -> tuple[Any, Any, Any]:
        expected = await (await conn.execute(QUERY, PARAMS)).fetchall()
        async with acting_as(conn, "someone"):
            named = [await (await conn.execute(QUERY, PARAMS)).fetchall() for _ in range(3)]
            positional = await (
                await conn.execute("SELECT %s::int AS x, %s::text AS y", (1, "two"))
            ).fetchone()
        return expected, named, positional

    expected, named, positional = run(work, prepare_threshold)
    assert len(expected) == 2 and expected[0]["again"] == "it's %s"
    assert named == [expected] * 3
    assert positional == {"x": 1, "y": "two"}


def test_rowcount_and_an_empty_answer(run, two_users):
    ada, _ = two_users

    async def work(conn: UserConnection) -> tuple[int, Any, Any]:
        async with acting_as(conn, ada):
            cur = await conn.execute("UPDATE tasks SET title = title")
            none = await (await conn.execute("SELECT 1 FROM tasks WHERE false")).fetchone()
            return cur.rowcount, none, await cur.fetchone()

    assert run(work) == (1, None, None)


def test_errors_are_psycopg_s_and_the_connection_goes_on(run, two_users):
    ada, _ = two_users

    async def work(conn: UserConnection) -> list[Any]:
        outcomes: list[Any] = []
        async with acting_as(conn, ada):
            for statement in (
                "SELECT 1 / 0",
                "SELECT 'x'::uuid",
                "INSERT INTO users (id, email) VALUES (%(id)s, 'x@example.com')",
                "SELEKT 1",
            ):
                try:
                    await conn.execute(statement, {"id": "other"})
                except psycopg.Error as exc:
                    outcomes.append(type(exc))
                outcomes.append(conn.info.transaction_status)
            outcomes.append(await (await conn.execute("SELECT 41 + 1 AS n")).fetchone())
        return outcomes

    idle = TransactionStatus.IDLE
    assert run(work) == [
        psycopg.errors.DivisionByZero,
        idle,
        psycopg.errors.InvalidTextRepresentation,
        idle,
        psycopg.errors.InsufficientPrivilege,  # another user's row: the policy's check
        idle,
        psycopg.errors.SyntaxError,
        idle,
        {"n": 42},
    ]


def test_a_cancelled_statement_never_leaves_a_half_read_connection(run):
    async def work(conn: UserConnection) -> tuple[bool, bool]:
        async with acting_as(conn, "someone"):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(conn.execute("SELECT pg_sleep(5)"), 0.2)
        # Either psycopg's cancel drained it and the connection works on, or
        # the connection was closed so the pool throws it away: never stuck.
        if conn.closed or conn.broken:
            return True, True
        answer = await (await conn.execute("SELECT 1 AS one")).fetchone()
        return answer == {"one": 1}, conn.info.transaction_status == TransactionStatus.IDLE

    assert run(work) == (True, True)


def test_statements_are_prepared_once_but_never_behind_a_transaction_pooler(run):
    prepared_sql = "SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'todo%%'"

    async def work(conn: UserConnection) -> int:
        async with acting_as(conn, "someone"):
            for _ in range(3):
                await conn.execute("SELECT %(x)s::int AS x", {"x": 1})
        return (await (await conn.execute(prepared_sql)).fetchone())["n"]

    assert run(work, 0) == 2  # set_config and the statement
    assert run(work, None) == 0


def test_prepared_statements_survive_a_rolled_back_transaction(make_settings, two_users):
    """psycopg drops every prepared statement after a rollback if it prepared any itself."""
    ada, _ = two_users
    settings = make_settings(DB_PREPARE_THRESHOLD="0")

    async def main() -> list[Any]:
        pool = create_pool(settings.database)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                async with acting_as(conn, ada):
                    await conn.execute("SELECT count(*) AS n FROM tasks")
                with contextlib.suppress(ZeroDivisionError):
                    async with conn.transaction():
                        await conn.execute("SELECT 1")  # the pool's own statements
                        await conn.execute("SELECT 1")
                        1 / 0  # noqa: B018
                async with acting_as(conn, ada):
                    cur = await conn.execute("SELECT count(*) AS n FROM tasks")
                    return [await cur.fetchone()]
        finally:
            await pool.close()

    assert asyncio.run(main()) == [{"n": 1}]


@pytest.mark.slow
@pytest.mark.timing
def test_waiting_for_a_slot_and_then_a_connection_share_one_budget(make_settings):
    """A request that waited for its user's slot waits only the rest for a connection."""
    settings = make_settings(DB_POOL_MAX="1", DB_POOL_MIN="1")

    async def main() -> tuple[type[BaseException] | None, float]:
        pool = create_pool(settings.database)
        await pool.open(wait=True)
        slots = UserSlots(per_user=1, wait=1.0)

        held = asyncio.Event(), asyncio.Event()

        async def hold_the_slot() -> None:
            async with slots.slot("ada"):
                held[0].set()
                await asyncio.sleep(0.6)

        async def hold_the_pool() -> None:
            async with pool.connection():
                held[1].set()
                await asyncio.sleep(1.5)

        holders = [asyncio.create_task(hold_the_slot()), asyncio.create_task(hold_the_pool())]
        await asyncio.gather(held[0].wait(), held[1].wait())
        start = time.monotonic()
        outcome: type[BaseException] | None = None
        try:
            async with connection_for(slots, pool, "ada"):
                pass
        except PoolTimeout as exc:
            outcome = type(exc)
        elapsed = time.monotonic() - start
        await asyncio.gather(*holders)
        await pool.close()
        return outcome, elapsed

    outcome, elapsed = asyncio.run(main())
    # Real waits are the behaviour here: 0.6 s for the slot leaves 0.4 s of the 1 s budget
    # for a connection. Two budgets (0.6 + 1 s) would outlast the pool's holder (1.5 s) and
    # get the connection, so the outcome is what tells them apart; the time only confirms
    # the budget was used to the end (a sleep never ends early, so no margin is needed).
    assert outcome is PoolTimeout
    assert elapsed >= 0.95, elapsed
