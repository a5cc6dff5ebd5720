"""Incremental sync: a client that syncs with the tokens it is handed never misses a change."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import psycopg
import pytest

from devtools.liveserver import LiveServer
from tests.support.assertions import assert_error
from tests.support.database import settings_env
from tests.support.signing import bearer, frontend_token
from tests.support.sync_replica import Replica
from tests.support.task_users import User
from tests.support.timekeeping import wait_until


def test_a_write_that_commits_late_is_not_skipped(ada, db, database_url):
    x = ada.create(title="x v1")
    y = ada.create(title="y v1")
    replica = Replica(lambda params: ada.list(**params))
    replica.sync()
    assert replica.tasks == {x["id"]: x, y["id"]: y}

    with psycopg.connect(database_url) as holder:
        # Another session holds X's row lock: the PATCH of X starts, then waits.
        holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (x["id"],))
        patched: dict[str, Any] = {}
        waiting = threading.Thread(
            target=lambda: patched.update(
                ada.request("PATCH", f"/{x['id']}", json={"title": "x v2"}).json()
            )
        )
        waiting.start()
        wait_until(
            lambda: db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone(),
            "the PATCH to wait on the lock",
        )
        # Y changes and commits while X's change is still in flight; the client syncs.
        y2 = ada.request("PATCH", f"/{y['id']}", json={"title": "y v2"}).json()
        replica.sync()
        assert replica.tasks[y["id"]] == y2
    # The lock is released: X's change commits, with an updated_at older than Y's.
    waiting.join()
    assert patched["title"] == "x v2" and patched["updated_at"] < y2["updated_at"]
    replica.sync()
    assert replica.tasks[x["id"]] == patched


def test_sync_token_returns_only_later_changes_and_tombstones(ada):
    kept = ada.create(title="kept")
    gone = ada.create(title="gone")
    first = ada.list(updated_since="2000-01-01T00:00:00Z")
    assert {t["id"] for t in first["tasks"]} == {kept["id"], gone["id"]}
    token = first["sync_token"]
    quiet = ada.list(sync_token=token)
    assert quiet["tasks"] == [] and quiet["count"] == 0 and quiet["next_cursor"] is None

    edited = ada.request("PATCH", f"/{kept['id']}", json={"title": "edited"}).json()
    ada.request("DELETE", f"/{gone['id']}")
    page = ada.list(sync_token=token)
    assert page["tasks"] == [
        edited,
        {"id": gone["id"], "deleted": True, "updated_at": page["tasks"][1]["updated_at"]},
    ]
    assert ada.list(sync_token=page["sync_token"])["tasks"] == []


def test_sync_token_is_signed_and_cannot_be_mixed_with_other_queries(ada, client):
    token = ada.list(updated_since="2000-01-01T00:00:00Z")["sync_token"]
    for bad in ("garbage", token[:-2] + "xx", ada.list(limit=1)["next_cursor"] or "x.y"):
        r = ada.request("GET", params={"sync_token": bad})
        assert assert_error(r, 422, "validation_error")["details"][0]["field"] == "sync_token"
    r = ada.request("GET", params={"sync_token": token, "sort": "title"})
    assert assert_error(r, 422, "validation_error")["details"][0]["field"] == "sync_token"
    r = ada.request("GET", params={"cursor": token})
    assert_error(r, 422, "validation_error")


def test_a_sync_token_shows_nothing_of_another_user(ada, client):
    bob = User(client, "bob")
    token = ada.list(updated_since="2000-01-01T00:00:00Z")["sync_token"]
    bob.create(title="bob's")
    assert bob.list(sync_token=token)["count"] == 1
    assert ada.list(sync_token=token)["tasks"] == []


@pytest.mark.slow
def test_a_syncing_replica_equals_the_server_under_concurrent_writers(database_url, db):
    env = settings_env(database_url, DB_POOL_MAX="20")
    rng = random.Random(20261124)
    with LiveServer(env) as server:
        headers = bearer(frontend_token("sync-user"))
        http = httpx2.Client(base_url=server.base_url, headers=headers, timeout=30)
        ids = [http.post("/api/tasks", json={"title": f"t{n}"}).json()["id"] for n in range(6)]
        replica = Replica(lambda params: http.get("/api/tasks", params=params).json())
        replica.sync()
        stop = threading.Event()

        def writer(seed: int) -> None:
            local = random.Random(seed)
            with httpx2.Client(base_url=server.base_url, headers=headers, timeout=30) as w:
                while not stop.is_set():
                    task_id = local.choice(ids)
                    action = local.random()
                    if action < 0.7:
                        w.patch(f"/api/tasks/{task_id}", json={"title": f"v{local.random()}"})
                    elif action < 0.85:
                        w.delete(f"/api/tasks/{task_id}")
                    else:
                        w.post(f"/api/tasks/{task_id}/restore")

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(writer, rng.random()) for _ in range(8)]
            for _ in range(40):
                replica.sync()
                time.sleep(rng.random() * 0.02)
            stop.set()
            for future in futures:
                future.result()
        replica.sync()
        everything = http.get("/api/tasks", params={"limit": 100}).json()["tasks"]
        assert replica.tasks == {task["id"]: task for task in everything}
        http.close()


@pytest.mark.parametrize(
    ("param", "sort", "value", "last_id"),
    [
        ("cursor", "-created_at", "x:y", "00000000-0000-0000-0000-000000000001"),
        ("cursor", "due_at", None, "zz"),
        ("cursor", "priority", "urgent", "00000000-0000-0000-0000-000000000001"),
        ("cursor", "changes", "1:99999999999999999999", "00000000-0000-0000-0000-000000000001"),
        ("cursor", "changes", "x", "00000000-0000-0000-0000-000000000001"),
        ("sync_token", "sync-token", "-1", ""),
        ("sync_token", "sync-token", "99999999999999999999999", ""),
    ],
)
def test_a_signed_cursor_or_token_with_odd_insides_is_422_not_500(ada, param, sort, value, last_id):
    from tests.support.signing import TEST_SECRET
    from todo_server.tasks.page_tokens import CursorCodec, PageToken

    ada.create()
    text = CursorCodec(TEST_SECRET).encode(PageToken(sort, value, last_id))
    params = {param: text}
    if sort == "changes":
        params["sync_token"] = ada.list(updated_since="2000-01-01T00:00:00Z")["sync_token"]
    elif param == "cursor":
        params["sort"] = sort
    r = ada.request("GET", params=params)
    assert assert_error(r, 422, "validation_error")["details"][0]["field"] == param
