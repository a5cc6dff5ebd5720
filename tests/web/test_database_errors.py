"""Database errors told apart: timeouts, deadlocks (retried), and an unreachable database.

Statement timeouts and deadlocks are ``psycopg.OperationalError`` subclasses that
happen while the database is fine, so they are not answered as "database
unavailable" (``web.error_responses``). The deadlocks and lock waits here are
real, between the app and a second connection that holds row locks; nothing is
mocked.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.support.signing import bearer, frontend_token
from tests.support.task_users import User
from tests.support.timekeeping import wait_until
from todo_server.app import create_app
from todo_server.storage import db as todo_db

RAISE_DEADLOCK_SQL = (
    "DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = 'deadlock_detected'; END $$"
)


def wait_for_lock_wait(monitor: psycopg.Connection, fragment: str) -> None:
    """Until some backend other than ours waits on a lock in a statement containing ``fragment``."""
    wait_until(
        lambda: monitor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{fragment}%",),
        ).fetchone()[0],
        f"a wait on a lock in {fragment!r}",
    )


def messages(caplog, logger: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger]


def test_write_waiting_on_a_row_lock_past_the_statement_timeout_is_503_database_timeout(
    make_client, database_url, caplog
):
    client = make_client(DB_STATEMENT_TIMEOUT="0.5")
    ada = User(client, "ada")
    task = ada.create()
    with psycopg.connect(database_url) as holder:  # a transaction holding the row lock
        holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task["id"],))
        with caplog.at_level(logging.INFO):
            r = ada.request("PATCH", f"/{task['id']}", json={"title": "new"})
        health = client.get("/health")
        holder.rollback()

    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json() == {
        "code": "database_timeout",
        "message": "The database did not answer in time; try again shortly",
        "details": None,
        "request_id": r.headers["x-request-id"],
        "detail": "The database did not answer in time; try again shortly",
    }
    # The database is fine, and says so.
    assert health.status_code == 200
    assert health.json()["database"] == "ok"
    [logged] = messages(caplog, "todo_server.errors")
    assert re.fullmatch(
        r"database statement timed out on PATCH /api/tasks/\{task_id\}: canceling statement"
        r" due to statement timeout"
        r' \(while (updating|locking) tuple \(\d+,\d+\) in relation "tasks"\)',
        logged,
    ), logged
    assert not any("unavailable" in m for m in messages(caplog, "todo_server.errors"))
    # Nothing was changed, and once the lock is gone the same request works.
    assert ada.request("GET", f"/{task['id']}").json() == task
    assert ada.request("PATCH", f"/{task['id']}", json={"title": "new"}).json()["title"] == "new"


def deleted_task(ada: User) -> dict:
    task = ada.create()
    assert ada.request("DELETE", f"/{task['id']}").status_code == 204
    return task


# What the app is asked to do (each first writes a row of ``table``, then waits on
# the user's row, which a second connection holds), and the status it must answer.
# The second connection closes the cycle with LOCK TABLE, a table-level lock:
# PostgreSQL grants it in queue order when the app's attempt is rolled back, so
# the retry queues behind it instead of racing it (a row-level wait can lose that
# race and deadlock again).
DEADLOCKS = {
    "restore, a transaction": (
        lambda ada: ("POST", f"/{deleted_task(ada)['id']}/restore", {}),
        "tasks",
        200,
    ),
    "delete, one statement": (lambda ada: ("DELETE", f"/{ada.create()['id']}", {}), "tasks", 204),
    "create with Idempotency-Key, a transaction": (
        lambda ada: ("POST", "", {"json": {"title": "t"}, "headers": {"Idempotency-Key": "k1"}}),
        "idempotency_keys",
        201,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", DEADLOCKS)
def test_a_deadlock_is_retried_inside_the_service(make_client, database_url, db, caplog, case):
    prepare, table, status = DEADLOCKS[case]
    ada = User(make_client(), "ada")
    ada.create(title="makes the user row")
    method, suffix, kwargs = prepare(ada)

    with (
        psycopg.connect(database_url) as holder,
        ThreadPoolExecutor(1) as pool,
        caplog.at_level(logging.INFO),
    ):
        # The app's backend must be the one to find the deadlock (after the default
        # deadlock_timeout of 1 s), never this connection.
        holder.execute("SET LOCAL deadlock_timeout = '60s'")
        holder.execute("SELECT 1 FROM users WHERE id = 'ada' FOR UPDATE")
        response = pool.submit(ada.request, method, suffix, **kwargs)
        wait_for_lock_wait(db, "live_tasks")  # the app holds a row of `table`, waits on ada's
        # Closes the cycle; returns once the app's backend has found the deadlock and given way.
        holder.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(table)))
        holder.rollback()  # let the retry through
        r = response.result(timeout=60)

    assert r.status_code == status, r.text
    retried = [m for m in messages(caplog, "todo_server.db") if "DeadlockDetected" in m]
    assert len(retried) == 1 and retried[0].endswith("DeadlockDetected; trying again (2 of 3)")
    assert messages(caplog, "todo_server.errors") == []


def test_retry_gives_up_after_three_deadlocks(database_url, caplog):
    async def run() -> int:
        attempts = 0
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:

            async def deadlocked() -> None:
                nonlocal attempts
                attempts += 1
                async with conn.transaction():
                    await conn.execute(RAISE_DEADLOCK_SQL)

            with pytest.raises(pg_errors.DeadlockDetected):
                await todo_db.retry_conflicts(conn, deadlocked, "test work")
        return attempts

    with caplog.at_level(logging.INFO, logger="todo_server.db"):
        assert asyncio.run(run()) == 3
    assert messages(caplog, "todo_server.db") == [
        "test work: DeadlockDetected; trying again (2 of 3)",
        "test work: DeadlockDetected; trying again (3 of 3)",
        "test work: DeadlockDetected 3 times; giving up",
    ]


def test_work_inside_an_outer_transaction_is_never_retried(database_url):
    async def run() -> int:
        attempts = 0
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:

            async def deadlocked() -> None:
                nonlocal attempts
                attempts += 1
                await conn.execute(RAISE_DEADLOCK_SQL)

            with pytest.raises(pg_errors.DeadlockDetected):
                async with conn.transaction():
                    await conn.execute("SELECT 1")  # work done earlier in the transaction
                    await todo_db.retry_conflicts(conn, deadlocked, "test work")
        return attempts

    assert asyncio.run(run()) == 1


@pytest.mark.parametrize(
    ("statement", "code", "message"),
    [
        (RAISE_DEADLOCK_SQL, "service_unavailable", "busy with conflicting changes"),
        ("SELECT pg_sleep(5)", "database_timeout", "did not answer in time"),
    ],
)
def test_database_errors_that_escape_a_handler_are_503_with_their_own_code(
    make_settings, db, caplog, statement, code, message
):
    async def run_statement(request) -> JSONResponse:
        async with request.state.pool.connection() as conn:
            await conn.execute(statement)
        return JSONResponse({})

    app = create_app(make_settings(DB_STATEMENT_TIMEOUT="0.2"))
    app.router.routes.append(Route("/statement", run_statement))
    with TestClient(app) as client, caplog.at_level(logging.WARNING):
        r = client.get("/statement", headers=bearer(frontend_token("ada")))
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["code"] == code
    assert message in r.json()["message"]
    [logged] = messages(caplog, "todo_server.errors")
    assert logged.startswith("database ") and "GET /statement" in logged
    assert "unavailable" not in logged


def test_an_unreachable_database_is_still_service_unavailable(
    make_client: Callable[..., TestClient], caplog
):
    client = make_client(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", DB_POOL_TIMEOUT="0.5")
    with caplog.at_level(logging.WARNING):
        r = client.get("/api/tasks", headers=bearer(frontend_token("ada")))
    assert r.status_code == 503
    assert r.json()["code"] == "service_unavailable"
    assert "database unavailable: PoolTimeout" in messages(caplog, "todo_server.errors")


def test_a_tiny_statement_timeout_is_rounded_up_not_down_to_no_limit():
    assert todo_db.statement_timeout_setting(0.0001) == "1ms"
    assert todo_db.statement_timeout_setting(0.5) == "500ms"
    assert todo_db.statement_timeout_setting(0) == "0ms"  # 0 = no limit, as documented
