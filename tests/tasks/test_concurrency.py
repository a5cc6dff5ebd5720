"""ETag / If-Match, idempotent retries, the per-user quota, and concurrent clients."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import httpx2
import psycopg
import pytest

from devtools.liveserver import LiveServer
from tests.support.assertions import assert_error
from tests.support.database import settings_env
from tests.support.signing import bearer, frontend_token
from tests.support.task_users import User
from tests.support.timekeeping import lock_waiters, wait_until

WRITES = [
    ("PUT", "", {"json": {"title": "changed"}}),
    ("PATCH", "", {"json": {"title": "changed"}}),
    ("PATCH", "/complete", {}),
    ("DELETE", "", {}),
]


@pytest.mark.parametrize(("method", "suffix", "kwargs"), WRITES)
def test_if_match_with_the_current_etag_writes(ada, method, suffix, kwargs):
    task = ada.create()
    etag = ada.request("GET", f"/{task['id']}").headers["etag"]
    r = ada.request(method, f"/{task['id']}{suffix}", headers={"If-Match": etag}, **kwargs)
    assert r.status_code in (200, 204)
    if r.status_code == 200:
        assert r.headers["etag"] == '"2"'


@pytest.mark.parametrize(("method", "suffix", "kwargs"), WRITES)
@pytest.mark.parametrize("if_match", ['"1"', 'W/"2"', '"1", "7"', "garbage", '"99999999999"'])
def test_if_match_without_the_current_etag_is_412_and_changes_nothing(
    ada, method, suffix, kwargs, if_match
):
    task = ada.create()
    current = ada.request("PATCH", f"/{task['id']}", json={"title": "v2"}).json()  # now "2"
    r = ada.request(method, f"/{task['id']}{suffix}", headers={"If-Match": if_match}, **kwargs)
    assert_error(r, 412, "precondition_failed")
    assert ada.request("GET", f"/{task['id']}").json() == current


def test_if_match_list_and_star(ada):
    task = ada.create()
    r = ada.request(
        "PATCH", f"/{task['id']}", json={"title": "a"}, headers={"If-Match": '"9", "1"'}
    )
    assert r.status_code == 200
    r = ada.request("PATCH", f"/{task['id']}", json={"title": "b"}, headers={"If-Match": "*"})
    assert r.status_code == 200
    assert r.headers["etag"] == '"3"'


def test_if_match_on_restore(ada):
    task = ada.create()
    ada.request("DELETE", f"/{task['id']}")
    r = ada.request("POST", f"/{task['id']}/restore", headers={"If-Match": '"1"'})
    assert_error(r, 412, "precondition_failed")
    r = ada.request("POST", f"/{task['id']}/restore", headers={"If-Match": '"2"'})
    assert r.status_code == 200
    assert r.headers["etag"] == '"3"'


def test_if_match_on_a_missing_task_is_404(ada):
    r = ada.request(
        "PATCH",
        "/00000000-0000-4000-8000-000000000000",
        json={"title": "x"},
        headers={"If-Match": '"1"'},
    )
    assert_error(r, 404, "not_found")


def test_without_if_match_last_write_wins(ada):
    task = ada.create()
    ada.request("PATCH", f"/{task['id']}", json={"title": "first"})
    r = ada.request("PATCH", f"/{task['id']}", json={"title": "second"})
    assert r.json()["title"] == "second"


# --- idempotency ------------------------------------------------------------------


def test_retry_with_the_same_key_returns_the_first_response(ada, db):
    headers = {"Idempotency-Key": "retry-1"}
    first = ada.request("POST", json={"title": "once", "tags": ["a"]}, headers=headers)
    again = ada.request("POST", json={"tags": ["a"], "title": "once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["idempotent-replayed"] == "true"
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1


def test_same_key_with_another_body_is_422(ada, db):
    ada.request("POST", json={"title": "once"}, headers={"Idempotency-Key": "k"})
    r = ada.request("POST", json={"title": "different"}, headers={"Idempotency-Key": "k"})
    assert assert_error(r, 422, "validation_error")["details"] == [
        {"field": "Idempotency-Key", "message": "was already used with a different request body"}
    ]
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1


def test_keys_belong_to_one_user(client, ada, db):
    bob = User(client, "bob")
    a = ada.request("POST", json={"title": "x"}, headers={"Idempotency-Key": "shared"})
    b = bob.request("POST", json={"title": "x"}, headers={"Idempotency-Key": "shared"})
    assert a.json()["id"] != b.json()["id"]
    assert b.json()["user_id"] == "bob"


def test_keys_expire_after_24_hours(ada, db):
    first = ada.request("POST", json={"title": "x"}, headers={"Idempotency-Key": "old"}).json()
    db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    again = ada.request("POST", json={"title": "x"}, headers={"Idempotency-Key": "old"})
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]
    assert "idempotent-replayed" not in again.headers


def test_failed_create_does_not_burn_the_key(make_client, db):
    ada = User(make_client(MAX_TASKS_PER_USER="1"), "ada")
    first = ada.create()
    r = ada.request("POST", json={"title": "x"}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 422
    ada.request("DELETE", f"/{first['id']}")
    r = ada.request("POST", json={"title": "x"}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 201


# --- quota --------------------------------------------------------------------------


def test_quota_of_live_tasks(make_client, db):
    ada = User(make_client(MAX_TASKS_PER_USER="3"), "ada")
    tasks = [ada.create(title=f"t{i}") for i in range(3)]
    r = ada.request("POST", json={"title": "one too many"})
    body = assert_error(r, 422, "validation_error")
    assert body["message"] == (
        "Task limit reached: at most 3 tasks per user; delete some before creating more"
    )
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 3
    ada.request("DELETE", f"/{tasks[0]['id']}")
    fourth = ada.create(title="fits again")
    # Restoring would make four live tasks.
    r = ada.request("POST", f"/{tasks[0]['id']}/restore")
    assert_error(r, 422, "validation_error")
    assert_error(ada.request("GET", f"/{tasks[0]['id']}"), 404, "not_found")
    ada.request("DELETE", f"/{fourth['id']}")
    assert ada.request("POST", f"/{tasks[0]['id']}/restore").status_code == 200
    live = db.execute("SELECT live_tasks FROM users WHERE id = 'ada'").fetchone()[0]
    assert live == 3


# --- real server, real concurrency ---------------------------------------------------


@pytest.fixture
def server(database_url, db):
    with LiveServer(settings_env(database_url, DB_POOL_MAX="8", MAX_TASKS_PER_USER="5")) as live:
        yield live


def test_concurrent_requests_with_one_key_make_one_task(server, db):
    headers = {**bearer(frontend_token("ada")), "Idempotency-Key": "race"}
    barrier = threading.Barrier(8)

    def post(_: int) -> httpx2.Response:
        barrier.wait()
        return httpx2.post(f"{server.base_url}/api/tasks", json={"title": "race"}, headers=headers)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    assert [r.status_code for r in responses] == [201] * 8
    assert len({r.json()["id"] for r in responses}) == 1
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1


def test_concurrent_creates_never_overshoot_the_quota(server, db):
    headers = bearer(frontend_token("ada"))
    barrier = threading.Barrier(12)

    def post(i: int) -> int:
        barrier.wait()
        url = f"{server.base_url}/api/tasks"
        return httpx2.post(url, json={"title": f"t{i}"}, headers=headers).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(post, range(12)))
    assert sorted(statuses) == [201] * 5 + [422] * 7
    assert db.execute("SELECT count(*) FROM tasks WHERE user_id = 'ada'").fetchone()[0] == 5


def test_200_concurrent_creates_by_8_users_without_error_or_leak(database_url, db):
    users = [f"user-{n}" for n in range(8)]
    env = settings_env(database_url, DB_POOL_MAX="8")
    limits = httpx2.Limits(max_connections=32)
    with (
        LiveServer(env) as live,
        httpx2.Client(base_url=live.base_url, limits=limits, timeout=30) as http,
        ThreadPoolExecutor(32) as pool,
    ):

        def create(job: tuple[str, int]) -> tuple[str, int, dict]:
            user, i = job
            r = http.post(
                "/api/tasks",
                json={"title": f"{user} task {i}"},
                headers=bearer(frontend_token(user)),
            )
            return user, r.status_code, r.json()

        jobs = [(user, i) for i in range(25) for user in users]
        results = list(pool.map(create, jobs))
        assert [status for _, status, _ in results] == [201] * 200
        for user, _, task in results:
            assert task["user_id"] == user
            assert task["title"].startswith(f"{user} task ")

        for user in users:
            r = http.get("/api/tasks", params={"limit": 200}, headers=bearer(frontend_token(user)))
            tasks = r.json()["tasks"]
            assert len(tasks) == 25
            assert {t["user_id"] for t in tasks} == {user}
            assert sorted(t["title"] for t in tasks) == sorted(
                f"{user} task {i}" for i in range(25)
            )
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 200


def test_beyond_the_waiting_limit_requests_get_a_fast_503(database_url, db):
    """Overload is shed at once with 503 + Retry-After, not queued for seconds."""
    pool_timeout = 10
    env = settings_env(
        database_url,
        DB_POOL_MIN="1",
        DB_POOL_MAX="1",
        DB_POOL_MAX_WAITING="1",
        DB_POOL_TIMEOUT=str(pool_timeout),
    )
    headers = bearer(frontend_token("ada"))
    with LiveServer(env) as live, httpx2.Client(base_url=live.base_url, timeout=30) as http:

        def create(title: str) -> tuple[httpx2.Response, float]:
            start = time.monotonic()
            r = http.post("/api/tasks", json={"title": title}, headers=headers)
            return r, time.monotonic() - start

        assert create("first")[0].status_code == 201
        blocker = psycopg.connect(database_url)
        # Hold Ada's row: the next create takes the only pooled connection and waits on it.
        blocker.execute("SELECT 1 FROM users WHERE id = 'ada' FOR UPDATE")
        with ThreadPoolExecutor(3) as pool:
            holding = pool.submit(create, "held")
            wait_until(lambda: lock_waiters(database_url), "the held create to wait on the lock")
            # Two more at once: whichever comes first takes the one place in the queue for
            # the connection, the other is shed without waiting for it.
            both = [pool.submit(create, title) for title in ("queued 1", "queued 2")]
            done, _ = wait(both, timeout=pool_timeout - 1, return_when=FIRST_COMPLETED)
            blocker.rollback()
            blocker.close()
            assert len(done) == 1, "neither request was shed while the connection was busy"
            shed, elapsed = done.pop().result()
            [queued] = [f.result()[0] for f in both if f.result()[0] is not shed]
            assert holding.result()[0].status_code == 201
    assert_error(shed, 503, "service_unavailable")
    assert shed.headers["retry-after"] == "2"
    assert elapsed < pool_timeout / 2  # not after waiting for a connection
    assert queued.status_code == 201
    titles = {row[0] for row in db.execute("SELECT title FROM tasks")}
    assert titles == {"first", "held", queued.json()["title"]}
