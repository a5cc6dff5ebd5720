"""The metrics: each family moves when its event really happens, labels stay bounded,
and the exposition parses as Prometheus (and OpenMetrics) would read it.

The families live in one registry per process, so each test compares a scrape
taken before its event with one taken after.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.support.database import settings_env
from tests.support.signing import bearer, frontend_token, hs256
from tests.support.task_users import User
from tests.support.timekeeping import wait_until
from tests.test_purge import deleted_days_ago, now, purge_at
from todo_server import metrics, package_version
from todo_server.app import create_app
from todo_server.logs import LogWriter, TextFormatter
from todo_server.storage.db import retry_conflicts

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str) -> Samples:
    """Every sample of a scrape's text, by name and labels, read with Prometheus' parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(accept: str | None = None) -> Samples:
    """Every sample of one scrape of this process."""
    body, content_type = metrics.exposition(accept)
    assert content_type.startswith("text/plain")
    return samples_of(body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_requests_are_counted_by_route_template_method_and_status(client, ada):
    task = ada.create()
    before = scrape()
    assert ada.request("GET", f"/{task['id']}").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    assert client.request("BREW", "/api/tasks").status_code == 405
    after = scrape()

    route = "/api/tasks/{task_id}"
    requests = "todo_server_http_requests_total"
    assert moved(before, after, requests, route=route, method="GET", status="200") == 1
    assert moved(before, after, requests, route="unmatched", method="GET", status="404") == 1
    assert moved(before, after, requests, route="/api/tasks", method="other", status="405") == 1
    latency = "todo_server_http_request_duration_seconds"
    assert moved(before, after, f"{latency}_count", route=route) == 1
    assert moved(before, after, f"{latency}_sum", route=route) > 0
    assert moved(before, after, f"{latency}_bucket", route=route, le="+Inf") == 1
    # No label anywhere holds an id, a token or a raw path.
    for _, labels in after:
        for _, text in labels:
            assert task["id"] not in text and "no/such" not in text and "ada" not in text


def test_a_flood_of_unknown_paths_adds_no_series(client):
    # The series they all share: one for unknown paths, one for made-up methods.
    assert client.get("/unknown/first").status_code == 404
    assert client.request("XFIRST", "/api/tasks/first").status_code in (401, 405)
    series = set(scrape())
    for n in range(200):
        assert client.get(f"/unknown/{n}/{os.urandom(4).hex()}").status_code == 404
        assert client.request(f"X{n}", f"/api/tasks/{n}").status_code in (401, 405)
    assert set(scrape()) == series


@pytest.mark.slow
def test_in_flight_requests_and_the_pool_are_reported(make_client, database_url):
    client = make_client(DB_STATEMENT_TIMEOUT="10", DB_POOL_MAX="1", DB_POOL_TIMEOUT="10")
    ada, bob = User(client, "ada"), User(client, "bob")
    task = ada.create()
    wait_until(lambda: value(scrape(), "todo_server_db_pool_connections") >= 1, "pool sampled")
    before = scrape()
    with psycopg.connect(database_url) as holder:  # a transaction holding the row lock
        holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task["id"],))
        # Ada's update waits on the row with the pool's one connection; Bob waits for it.
        threads = [
            threading.Thread(
                target=ada.request,
                args=("PATCH", f"/{task['id']}"),
                kwargs={"json": {"title": "x"}},
            ),
            threading.Thread(target=bob.list),
        ]
        threads[0].start()
        wait_until(lambda: value(scrape(), "todo_server_http_requests_in_flight") >= 1, "a request")
        threads[1].start()
        wait_until(lambda: value(scrape(), "todo_server_db_pool_waiting_requests") >= 1, "a wait")
        assert value(scrape(), "todo_server_http_requests_in_flight") >= 2
        assert value(scrape(), "todo_server_db_pool_idle_connections") == 0
        holder.rollback()
        for thread in threads:
            thread.join()
    wait_until(lambda: value(scrape(), "todo_server_http_requests_in_flight") == 0, "no request")
    # The pool counts a wait when the waiting request is served; the sampler copies it.
    wait_until(
        lambda: moved(before, scrape(), "todo_server_db_pool_wait_seconds_total") > 0,
        "the wait counted",
    )
    after = scrape()
    assert value(after, "todo_server_db_pool_connections") == 1
    assert moved(before, after, "todo_server_db_pool_requests_total") >= 2
    assert moved(before, after, "todo_server_db_pool_queued_requests_total") >= 1


@pytest.mark.slow
def test_database_errors_are_counted_by_class(make_client, database_url):
    client = make_client(DB_STATEMENT_TIMEOUT="0.5")
    ada = User(client, "ada")
    task = ada.create()
    before = scrape()
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task["id"],))
        assert ada.request("PATCH", f"/{task['id']}", json={"title": "x"}).status_code == 503
        holder.rollback()
    down = make_client(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", DB_POOL_TIMEOUT="0.5")
    assert down.get("/api/tasks", headers=bearer(frontend_token("ada"))).status_code == 503
    after = scrape()
    errors = "todo_server_db_errors_total"
    assert moved(before, after, errors, **{"class": "timeout"}) == 1
    assert moved(before, after, errors, **{"class": "unavailable"}) == 1


RAISE_DEADLOCK_SQL = (
    "DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = 'deadlock_detected'; END $$"
)


def test_conflicts_retried_and_given_up_and_lost_prepared_statements_are_counted(make_settings):
    async def always_deadlocked(request) -> JSONResponse:
        async with request.state.pool.connection() as conn:

            async def work() -> None:
                await conn.execute(RAISE_DEADLOCK_SQL)

            await retry_conflicts(conn, work, "test work")
        return JSONResponse({})

    async def prepared_statement_gone(request) -> JSONResponse:
        async with request.state.pool.connection() as conn:
            await conn.execute("DEALLOCATE never_prepared")
        return JSONResponse({})

    app = create_app(make_settings())
    app.router.routes.append(Route("/deadlocked", always_deadlocked))
    app.router.routes.append(Route("/prepared", prepared_statement_gone))
    before = scrape()
    with TestClient(app) as client:
        assert client.get("/deadlocked").json()["code"] == "service_unavailable"
        assert client.get("/prepared").status_code == 503
    after = scrape()
    errors = "todo_server_db_errors_total"
    assert moved(before, after, errors, **{"class": "conflict"}) == 1
    assert moved(before, after, errors, **{"class": "prepared_statement_lost"}) == 1
    assert moved(before, after, "todo_server_db_conflict_retries_total") == 2  # 3 tries in all


def test_refusals_are_counted_by_reason_and_token_source(client):
    before = scrape()
    assert client.get("/api/tasks").status_code == 401
    expired = hs256({"sub": "ada", "exp": int(time.time()) - 3600})
    assert client.get("/api/tasks", headers=bearer(expired)).status_code == 401
    assert client.get("/api/tasks", headers=bearer("a.b.c")).status_code == 401
    after = scrape()
    refusals = "todo_server_auth_refusals_total"
    assert moved(before, after, refusals, reason="no_bearer", source="none") == 1
    assert moved(before, after, refusals, reason="expired", source="jwt") == 1
    assert moved(before, after, refusals, reason="not_a_jwt", source="jwt") == 1


def test_a_refused_session_token_is_counted_as_its_source(make_client):
    client = make_client(BETTER_AUTH_DATABASE_URL="same")
    before = scrape()
    assert client.get("/api/tasks", headers=bearer("no such session!")).status_code == 401
    refusals = "todo_server_auth_refusals_total"
    assert moved(before, scrape(), refusals, reason="not_a_jwt", source="session") == 1


def test_every_refusal_reason_the_docs_list_has_its_label():
    documented = (Path(__file__).parents[1] / "docs" / "authentication.md").read_text()
    for phrase in metrics.REFUSAL_REASONS:
        assert f"`{phrase}`" in documented, phrase


def test_jwks_fetches_are_counted_by_outcome(make_client, jwks):
    before = scrape()
    make_client(JWT_JWKS_URL=jwks.url)
    wait_until(lambda: jwks.fetches >= 1, "a JWKS fetch")
    wait_until(
        lambda: moved(before, scrape(), "todo_server_jwks_fetches_total", outcome="ok") >= 1,
        "the fetch counted",
    )
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    make_client(JWT_JWKS_URL=f"http://127.0.0.1:{port}/api/auth/jwks")
    wait_until(
        lambda: moved(before, scrape(), "todo_server_jwks_fetches_total", outcome="failed") >= 1,
        "the failed fetch counted",
    )


def test_throttled_logins_and_registrations_are_counted(make_client):
    client = make_client(REGISTRATIONS_PER_IP="1", LOGIN_MAX_FAILURES="1")
    account = {"email": "ada@example.com", "password": "correct horse battery"}
    before = scrape()
    assert client.post("/auth/register", json=account).status_code == 201
    assert client.post("/auth/register", json={**account, "email": "b@x.co"}).status_code == 429
    wrong = {**account, "password": "wrong password here"}
    assert client.post("/auth/login", json=wrong).status_code == 401
    assert client.post("/auth/login", json=wrong).status_code == 429
    after = scrape()
    assert moved(before, after, "todo_server_throttled_total", action="registration") == 1
    assert moved(before, after, "todo_server_throttled_total", action="login") == 1


def test_purged_rows_are_counted_by_kind(ada, db, database_url):
    for _ in range(2):
        assert ada.request("DELETE", f"/{ada.create()['id']}").status_code == 204
    deleted_days_ago(db, 31)
    before = scrape()
    assert purge_at(database_url, now()).tasks == 2
    after = scrape()
    assert moved(before, after, "todo_server_purged_rows_total", kind="tasks") == 2


def test_dropped_log_lines_are_counted():
    writer = LogWriter(sys.stderr, TextFormatter(), max_waiting=1)  # not started: nothing drains
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "line", None, None)
    before = scrape()
    for _ in range(3):
        writer.put(record)
    assert moved(before, scrape(), "todo_server_log_lines_dropped_total") == 2


BUILD_INFO = {
    "version": package_version(),
    "python": platform.python_version(),
    "dialect": "standard",
}


def test_build_info_names_the_version_python_and_dialect(make_client):
    make_client(API_DIALECT="compatible")
    info = {**BUILD_INFO, "dialect": "compatible"}
    assert value(scrape(), "todo_server_build_info", **info) == 1


def test_openmetrics_when_the_scrape_asks_for_it(client):
    assert client.get("/health").status_code == 200
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    names = {family.name for family in openmetrics_families(body.decode())}
    assert {"todo_server_http_requests", "todo_server_build_info"} <= names
    _, plain = metrics.exposition(None)
    assert plain.startswith("text/plain")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_workers_are_reported_by_one_scrape(database_url, db, tmp_path, monkeypatch):
    port = free_port()
    env = {
        **os.environ,
        **settings_env(database_url, WORKERS="2", PORT=str(port), LOG_LEVEL="warning"),
        "TMPDIR": str(tmp_path),  # where serve makes its private metrics directory
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "todo_server", "serve"], env=env)
    try:

        def not_found() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/no/such", timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code == 404
            except OSError:
                return False
            return False

        wait_until(not_found, "the server", timeout=30)
        [directory] = tmp_path.glob("todo-server-metrics-*")
        labels = {"route": "unmatched", "method": "GET", "status": "404"}
        # Fresh connections, so both workers answer some.
        for _ in range(59):
            assert not_found()
        wait_until(lambda: len({p.name for p in directory.glob("counter_*.db")}) == 2, "2 files")
        # As the admin server scrapes beside the workers: a process of its own that
        # imported the package before the variable was set.
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        # A request is counted just after its answer is sent: the last one may still be due.
        samples = wait_until(
            lambda: (
                (found := scrape())
                and value(found, "todo_server_http_requests_in_flight") == 0
                and found
            ),
            "every request counted",
        )
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert value(samples, "todo_server_http_requests_total", **labels) == 60
    assert value(samples, "todo_server_build_info", **BUILD_INFO) == 1  # one series, not two
    assert not directory.exists()  # serve removed it


def test_the_shared_directory_is_named_for_the_workers_then_removed(monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/somewhere/else")
    with metrics.shared_directory() as directory:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory
        assert Path(directory).is_dir() and not any(Path(directory).iterdir())
    assert not Path(directory).exists()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == "/somewhere/else"


def test_refusals_before_the_app_are_counted_by_status(database_url):
    """The protocol adapter's 400, 431 and 503 never reach a route; they are counted apart."""
    from devtools.liveserver import LiveServer, free_port

    admin_port = free_port()
    env = settings_env(database_url, ADMIN_PORT=str(admin_port), MAX_CONNECTIONS_PER_CLIENT="2")

    def scraped() -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
            return samples_of(r.read().decode())

    def answer_to(raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(raw)
            return sock.recv(65536)

    name = "todo_server_http_protocol_refusals_total"
    with LiveServer(env) as server:
        before = scraped()
        assert answer_to(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400")
        huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        assert answer_to(huge).startswith(b"HTTP/1.1 431")
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        try:
            assert answer_to(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
        after = scraped()
    assert moved(before, after, name, status="400") == 1
    assert moved(before, after, name, status="431") == 1
    assert moved(before, after, name, status="503") == 1
    # None of them reached a route, so none is in the requests the app answered.
    assert (
        moved(
            before,
            after,
            "todo_server_http_requests_total",
            route="unmatched",
            method="GET",
            status="503",
        )
        == 0
    )
