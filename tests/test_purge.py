"""Purging: deleted tasks after their retention, expired keys, aged throttling rows."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from devtools.postgres import as_role
from tests.support.assertions import assert_error
from tests.support.database import settings_env
from tests.support.task_users import User
from tests.support.timekeeping import wait_until
from todo_server.purge import PURGE_LOCK_KEY, Purged, purge


def now() -> datetime:
    """The purge's ``now`` as the service passes it: the time of the call, not of the import.

    A time taken once at import runs behind while the suite runs; the purge takes the
    earlier of its caller's cutoff and the database's, so rows made since would stay.
    """
    return datetime.now(UTC)


def purge_at(database_url: str, when: datetime, **options) -> Purged:
    """One purge as of ``when``, as the service makes it: the runtime role, a fresh connection."""
    options.setdefault("retention_days", 30)

    async def run() -> Purged:
        async with await psycopg.AsyncConnection.connect(
            as_role(database_url), autocommit=True, row_factory=dict_row
        ) as conn:
            return await purge(conn, now=when, **options)

    return asyncio.run(run())


def deleted_days_ago(db: psycopg.Connection, days: int) -> None:
    """Date every deletion ``days`` back, as the owner may (the runtime role may not)."""
    db.execute(
        "UPDATE tasks SET deleted_at = now() - make_interval(days => %s)"
        " WHERE deleted_at IS NOT NULL",
        (days,),
    )


def test_deleted_tasks_can_be_restored_until_purged_after_retention(ada, db, database_url):
    kept, purged = ada.create(title="kept"), ada.create(title="purged")
    for task in (kept, purged):
        assert ada.request("DELETE", f"/{task['id']}").status_code == 204

    deleted_days_ago(db, 29)
    assert purge_at(database_url, now()).tasks == 0
    assert ada.request("POST", f"/{kept['id']}/restore").status_code == 200

    deleted_days_ago(db, 31)
    assert purge_at(database_url, now()).tasks == 1
    assert_error(ada.request("POST", f"/{purged['id']}/restore"), 404, "not_found")
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1
    assert db.execute("SELECT live_tasks, deleted_tasks FROM users").fetchone() == (1, 0)


def test_expired_idempotency_keys_and_throttling_rows_are_purged(ada, client, db, database_url):
    ada.request("POST", json={"title": "once"}, headers={"Idempotency-Key": "k1"})
    client.post("/auth/login", json={"email": "nobody@example.com", "password": "wrong pass"})
    # A server whose clock runs a day ahead purges nothing early: the database's clock decides.
    assert purge_at(database_url, now() + timedelta(days=1)).total == 0
    db.execute("UPDATE idempotency_keys SET created_at = now() - interval '23 hours'")
    db.execute("UPDATE login_failures SET failed_at = now() - interval '16 minutes'")
    result = purge_at(database_url, now())  # the 15-minute window is over
    assert (result.idempotency_keys, result.login_failures) == (0, 2)  # email and address rows
    db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    assert purge_at(database_url, now()).idempotency_keys == 1
    assert db.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM login_failures").fetchone()[0] == 0


def test_deleted_tasks_count_toward_a_cap_of_their_own(make_client, db, database_url):
    ada = User(make_client(MAX_TASKS_PER_USER="1", MAX_DELETED_TASKS_PER_USER="2"), "ada")
    for _ in range(2):
        task = ada.create()
        assert ada.request("DELETE", f"/{task['id']}").status_code == 204
    task = ada.create()
    r = ada.request("DELETE", f"/{task['id']}")
    body = assert_error(r, 422, "validation_error")
    assert body["message"].startswith("Too many deleted tasks kept for restore: at most 2")
    assert ada.request("GET", f"/{task['id']}").status_code == 200  # nothing changed
    # Once the oldest are purged, deleting works again.
    db.execute(
        "UPDATE tasks SET deleted_at = deleted_at - interval '31 days' WHERE deleted_at IS NOT NULL"
    )
    assert purge_at(database_url, now()).tasks == 2
    assert ada.request("DELETE", f"/{task['id']}").status_code == 204


def test_purge_goes_in_small_batches_and_one_process_at_a_time(ada, db, database_url):
    for _ in range(5):
        task = ada.create()
        ada.request("DELETE", f"/{task['id']}")
    deleted_days_ago(db, 31)
    later = now()
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (PURGE_LOCK_KEY,))
        skipped = purge_at(database_url, later, batch=2)
        other.execute("SELECT pg_advisory_unlock(%s)", (PURGE_LOCK_KEY,))
    assert skipped.skipped and skipped.total == 0
    assert purge_at(database_url, later, batch=2, max_batches=2).tasks == 4
    assert purge_at(database_url, later, batch=2).tasks == 1
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


def test_the_service_purges_on_its_own_timer(make_client, db):
    ada = User(make_client(PURGE_INTERVAL="0.2"), "ada")
    task = ada.create()
    ada.request("DELETE", f"/{task['id']}")
    # The task was deleted 31 days ago, as far as the data says.
    db.execute("UPDATE tasks SET deleted_at = now() - interval '31 days'")
    wait_until(
        lambda: db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0,
        "the service's own purge",
    )
    assert db.execute("SELECT deleted_tasks FROM users").fetchone()[0] == 0


def test_todo_server_purge_command(ada, db, database_url):
    task = ada.create()
    ada.request("DELETE", f"/{task['id']}")
    db.execute("UPDATE tasks SET deleted_at = now() - interval '31 days'")
    env = {**os.environ, **settings_env(database_url)}
    done = subprocess.run(
        [sys.executable, "-m", "todo_server", "purge"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "purged 1 deleted tasks, 0 idempotency keys, 0 throttling rows"
    )


def test_a_sync_token_from_before_a_purge_is_refused_with_410(ada, db, database_url):
    kept, gone = ada.create(title="kept"), ada.create(title="gone")
    token = ada.list(updated_since="2000-01-01T00:00:00Z")["sync_token"]
    ada.request("DELETE", f"/{gone['id']}")
    deleted_days_ago(db, 31)
    purge_at(database_url, now())
    r = ada.request("GET", params={"sync_token": token})
    assert_error(r, 410, "sync_token_expired")
    fresh = ada.list(updated_since="2000-01-01T00:00:00Z")
    assert [t["id"] for t in fresh["tasks"]] == [kept["id"]]
    assert ada.list(sync_token=fresh["sync_token"])["tasks"] == []


# --- the purge functions, called by the runtime role with any arguments -------------


def test_the_runtime_role_cannot_purge_deleted_tasks_before_their_retention(
    ada, bob, db, database_url
):
    for user in (ada, bob):
        task = user.create()
        assert user.request("DELETE", f"/{task['id']}").status_code == 204
    horizons = db.execute("SELECT id, purged_xid FROM users ORDER BY id").fetchall()
    with psycopg.connect(as_role(database_url), autocommit=True) as runtime:
        purged = runtime.execute(
            "SELECT todo_purge_deleted_tasks(now() + interval '1 day', 100000)"
        ).fetchone()
        assert purged == (0,)
        far = runtime.execute("SELECT todo_purge_deleted_tasks('infinity', 100000)").fetchone()
        assert far == (0,)
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (2,)
    assert db.execute("SELECT id, purged_xid FROM users ORDER BY id").fetchall() == horizons
    # Past the retention, by the database's clock, the same call purges.
    db.execute("UPDATE tasks SET deleted_at = now() - interval '31 days' WHERE user_id = 'ada'")
    with psycopg.connect(as_role(database_url), autocommit=True) as runtime:
        purged = runtime.execute(
            "SELECT todo_purge_deleted_tasks(now() + interval '1 day', 100000)"
        ).fetchone()
    assert purged == (1,)
    assert db.execute("SELECT user_id FROM tasks").fetchall() == [("bob",)]


def test_a_caller_may_keep_deleted_tasks_longer_but_never_shorter(ada, db, database_url):
    task = ada.create()
    ada.request("DELETE", f"/{task['id']}")
    db.execute("UPDATE tasks SET deleted_at = now() - interval '40 days'")
    # A retention of 60 days asked for: kept.
    assert purge_at(database_url, now(), retention_days=60).tasks == 0
    # The owner's floor lowered to 7 days: a 10-day retention purges what is 10 days old.
    db.execute("UPDATE tasks SET deleted_at = now() - interval '11 days'")
    assert purge_at(database_url, now(), retention_days=10).tasks == 0  # the 30-day floor
    db.execute("INSERT INTO purge_policy (deleted_task_retention) VALUES (interval '7 days')")
    assert purge_at(database_url, now(), retention_days=10).tasks == 1


def test_the_runtime_role_cannot_purge_live_idempotency_keys(ada, db, database_url):
    ada.request("POST", json={"title": "once"}, headers={"Idempotency-Key": "k1"})
    with psycopg.connect(as_role(database_url), autocommit=True) as runtime:
        purged = runtime.execute(
            "SELECT todo_purge_idempotency_keys(now() + interval '1 day', 100000)"
        ).fetchone()
    assert purged == (0,)
    assert db.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (1,)
    r = ada.request("POST", json={"title": "once"}, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 201
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)  # the retry was answered


def test_the_service_warns_when_its_retention_is_below_the_databases(make_client, db, caplog):
    with caplog.at_level(logging.WARNING, logger="todo_server.purge"):
        ada = User(make_client(PURGE_INTERVAL="0.1", TASK_RETENTION_DAYS="7"), "ada")
        wait_until(lambda: "TASK_RETENTION_DAYS is 7" in caplog.text, "the warning")
    assert "at least 30 days" in caplog.text
    task = ada.create()
    ada.request("DELETE", f"/{task['id']}")
    db.execute("UPDATE tasks SET deleted_at = now() - interval '8 days'")
    time.sleep(0.3)  # a few rounds: the 30-day floor keeps it
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
