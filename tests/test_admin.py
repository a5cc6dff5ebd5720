"""The admin server: /live and /ready on ADMIN_PORT, beside the API and never on its port;
``todo-server ready``."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time

import httpx2
import psycopg
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from devtools.liveserver import ROOT, LiveServer, free_port
from tests.support.database import MIGRATION_DEFAULTS, settings_env
from tests.support.signing import JwksServer
from tests.support.timekeeping import wait_until
from todo_server.admin import admin_server, create_admin_app, serve_beside
from todo_server.config import ConfigError, load_admin_address, load_settings
from todo_server.storage import migrate

ALL_FILES = ", ".join(m.path.name for m in migrate.discover())


def admin_client(env: dict[str, str]) -> TestClient:
    return TestClient(create_admin_app(load_settings(env)), raise_server_exceptions=False)


def unreachable_url() -> str:
    """A postgresql:// URL where nothing listens."""
    return f"postgresql://todo@127.0.0.1:{free_port()}/todo"


def ready_until(url: str, status: int, within: float) -> httpx2.Response:
    """Poll ``url`` (a /ready) until it answers ``status``."""
    deadline = time.monotonic() + within
    while True:
        r = httpx2.get(url, timeout=10)
        if r.status_code == status:
            return r
        assert time.monotonic() < deadline, f"{url} still {r.status_code}: {r.text}"
        time.sleep(0.1)


def run_ready(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "todo_server", "ready", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


# The settings.


def test_admin_port_is_off_by_default_and_listens_on_loopback():
    assert load_admin_address({}) == ("127.0.0.1", None)
    assert load_admin_address({"ADMIN_PORT": "off"}) == ("127.0.0.1", None)
    assert load_admin_address({"ADMIN_PORT": "9001", "ADMIN_HOST": "0.0.0.0"}) == ("0.0.0.0", 9001)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ADMIN_PORT": "8000"}, "ADMIN_PORT: must differ from PORT (8000)"),
        ({"ADMIN_PORT": "9001", "PORT": "9001"}, "ADMIN_PORT: must differ from PORT (9001)"),
        ({"ADMIN_PORT": "metrics"}, "ADMIN_PORT: must be a whole number, got 'metrics'"),
        ({"ADMIN_PORT": "70000"}, "ADMIN_PORT: must be at most 65535, got 70000"),
    ],
)
def test_a_bad_admin_port_is_refused_naming_it(database_url, env, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(settings_env(database_url, **env))
    assert str(caught.value) == message
    with pytest.raises(ConfigError):
        load_admin_address(env)


# The endpoints, on the admin app itself.


def test_live_and_ready_when_all_is_well(database_url):
    with admin_client(settings_env(database_url)) as client:
        r = client.get("/live")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        r = client.get("/ready")
        assert (r.status_code, r.json()) == (200, {"status": "ready"})


def test_ready_says_the_database_is_unavailable_while_live_answers():
    env = settings_env(unreachable_url(), DB_POOL_TIMEOUT="0.5")
    with admin_client(env) as client:
        assert client.get("/live").status_code == 200
        r = client.get("/ready")
        assert r.status_code == 503
        assert r.json() == {
            "status": "not_ready",
            "reasons": ["database: unavailable (PoolTimeout)"],
        }
        assert r.headers["retry-after"] == "2"


def test_ready_names_pending_migrations(pg_server):
    url = pg_server.create_database("todo_admin_pending")
    with admin_client(settings_env(url)) as client:
        r = client.get("/ready")
        assert r.status_code == 503
        assert r.json() == {
            "status": "not_ready",
            "reasons": [f"migrations: pending: {ALL_FILES}; run `todo-server migrate`"],
        }
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.apply(conn, **MIGRATION_DEFAULTS)
        # Current now: ready, without a restart.
        assert client.get("/ready").json() == {"status": "ready"}


def test_ready_names_an_applied_file_that_changed(pg_server):
    url = pg_server.create_database("todo_admin_drift")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply(conn, **MIGRATION_DEFAULTS)
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    first = migrate.discover()[0].path.name
    with admin_client(settings_env(url)) as client:
        r = client.get("/ready")
    assert r.status_code == 503
    assert r.json()["reasons"] == [
        f"migrations: {first}: changed after it was applied; "
        "applied files must not change, add a new migration instead"
    ]


def test_ready_waits_for_the_jwks_to_have_keys(database_url, jwks):
    # Nothing listens at this JWKS URL: the API would refuse every frontend token.
    absent = f"http://127.0.0.1:{free_port()}/api/auth/jwks"
    with admin_client(settings_env(database_url, JWT_JWKS_URL=absent)) as client:
        r = client.get("/ready")
        assert r.status_code == 503
        assert r.json() == {
            "status": "not_ready",
            "reasons": ["jwks: no usable keys from JWT_JWKS_URL (yet)"],
        }
    with admin_client(settings_env(database_url, JWT_JWKS_URL=jwks.url)) as client:
        deadline = time.monotonic() + 5
        while (r := client.get("/ready")).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.json() == {"status": "ready"}
    assert jwks.fetches >= 1


def test_a_jwks_without_usable_keys_is_not_ready(database_url):
    empty = JwksServer([])
    try:
        with admin_client(settings_env(database_url, JWT_JWKS_URL=empty.url)) as client:
            deadline = time.monotonic() + 5
            while empty.fetches == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = client.get("/ready")
    finally:
        empty.close()
    assert r.status_code == 503
    assert r.json()["reasons"] == ["jwks: no usable keys from JWT_JWKS_URL (yet)"]


def test_the_admin_app_serves_only_its_probes(database_url):
    with admin_client(settings_env(database_url)) as client:
        assert client.get("/health").status_code == 404
        assert client.get("/api/tasks").status_code == 404
        assert client.post("/ready").status_code == 405


# `todo-server ready`.


def test_ready_command_fails_while_the_admin_port_is_off():
    result = run_ready(env={})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "todo-server: not ready: ADMIN_PORT is off; set it to serve /ready"
    ]


def test_ready_command_fails_when_nothing_answers():
    port = free_port()
    result = run_ready("--timeout", "2", env={"ADMIN_PORT": str(port)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"todo-server: not ready: http://127.0.0.1:{port}/ready: [Errno 111] Connection refused"
    ]


def test_ready_command_gives_up_after_its_timeout():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        start = time.monotonic()
        result = run_ready("--timeout", "0.5", env={"ADMIN_PORT": str(port)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"todo-server: not ready: http://127.0.0.1:{port}/ready: timed out"
    ]
    assert time.monotonic() - start < 10


def test_ready_command_on_a_bad_setting_exits_1_not_2():
    # Docker reserves a health check's exit status 2.
    result = run_ready(env={"ADMIN_PORT": "metrics"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "todo-server: not ready: configuration error: ADMIN_PORT: must be a whole number,"
        " got 'metrics'"
    ]


# Real servers: `todo-server serve` with the admin port.


def admin_env(database_url: str, **overrides: str) -> tuple[dict[str, str], int]:
    port = free_port()
    return settings_env(database_url, ADMIN_PORT=str(port), **overrides), port


@pytest.mark.slow
def test_serve_starts_the_admin_server_beside_the_api(database_url):
    env, admin_port = admin_env(database_url)
    admin = f"http://127.0.0.1:{admin_port}"
    with LiveServer(env) as server:
        assert httpx2.get(admin + "/live").json() == {"status": "ok"}
        assert httpx2.get(admin + "/ready").json() == {"status": "ready"}
        assert run_ready(env={"ADMIN_PORT": str(admin_port)}).returncode == 0
        # The probes are not on the API port, and the API is not on the admin port.
        for path in ("/live", "/ready", "/metrics"):
            r = httpx2.get(server.base_url + path)
            assert r.status_code == 404, path
            assert r.json()["code"] == "not_found"
        assert httpx2.get(server.base_url + "/health").json()["database"] == "ok"
        assert httpx2.get(admin + "/health").status_code == 404
    assert "Traceback" not in server.output
    # The one SIGTERM stopped both servers.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", admin_port), timeout=2).close()


@pytest.mark.slow
def test_probes_follow_the_database_down_and_back_without_a_restart(cluster):
    env, admin_port = admin_env(cluster.url(), DB_POOL_TIMEOUT="0.5")
    admin = f"http://127.0.0.1:{admin_port}"
    ready_command_env = {"ADMIN_PORT": str(admin_port)}
    with LiveServer(env):
        assert httpx2.get(admin + "/ready").status_code == 200
        cluster.stop()
        r = ready_until(admin + "/ready", 503, within=10)
        assert r.json()["status"] == "not_ready"
        assert r.json()["reasons"][0].startswith("database: unavailable")
        assert httpx2.get(admin + "/live").status_code == 200
        result = run_ready(env=ready_command_env)
        assert result.returncode == 1
        assert result.stderr.startswith(
            f"todo-server: not ready: http://127.0.0.1:{admin_port}/ready answered 503:"
            " database: unavailable"
        )
        cluster.start()
        ready_until(admin + "/ready", 200, within=15)
        assert run_ready(env=ready_command_env).returncode == 0


@pytest.mark.slow
def test_with_two_workers_the_supervisor_serves_the_admin_port(database_url):
    env, admin_port = admin_env(database_url, WORKERS="2")
    admin = f"http://127.0.0.1:{admin_port}"
    with LiveServer(env, process_group=True) as server:
        assert httpx2.get(admin + "/live").status_code == 200
        assert httpx2.get(admin + "/ready").json() == {"status": "ready"}
        assert httpx2.get(server.base_url + "/live").status_code == 404
        assert server.process is not None
        supervisor = server.process.pid
    lines = [line for line in server.output.splitlines() if "Started server process" in line]
    # Three processes started a server: the supervisor (the admin one) and two workers.
    assert len(lines) == 3
    assert any(f"[{supervisor}]" in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_stops_before_the_api_when_the_admin_port_is_taken(database_url, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = settings_env(database_url, ADMIN_PORT=str(port), WORKERS=workers)
        server = LiveServer(env, process_group=True)
        with pytest.raises(RuntimeError, match="exited with 1"):
            server.start()
    assert "address already in use" in server.output
    assert (
        f"the admin server could not start on 127.0.0.1:{port}; the API is not started"
        in server.output
    )
    assert "Traceback" not in server.output


@pytest.mark.slow
def test_with_one_worker_live_fails_while_the_api_event_loop_is_stuck(database_url):
    async def stuck(request: Request) -> PlainTextResponse:
        time.sleep(2)  # blocks the event loop, as a runaway handler would
        return PlainTextResponse("done")

    settings = load_settings(settings_env(database_url, ADMIN_PORT=str(free_port())))
    admin = f"http://127.0.0.1:{settings.admin_port}"
    api_port = free_port()
    api = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/stuck", stuck)]), port=api_port, log_config=None)
    )
    serving = threading.Thread(
        target=asyncio.run, args=(serve_beside(api, admin_server(settings), "admin"),)
    )
    serving.start()
    try:
        deadline = time.monotonic() + 10
        while not api.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx2.get(admin + "/live").status_code == 200
        blocking = threading.Thread(
            target=httpx2.get, args=(f"http://127.0.0.1:{api_port}/stuck",), kwargs={"timeout": 10}
        )
        blocking.start()
        time.sleep(0.3)
        with pytest.raises(httpx2.TimeoutException):
            httpx2.get(admin + "/live", timeout=0.5)
        blocking.join()
        assert httpx2.get(admin + "/live").status_code == 200
    finally:
        api.should_exit = True
        serving.join(timeout=20)
    assert not serving.is_alive()


def scraped(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text scrape, parsed as Prometheus would."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_the_admin_app_serves_metrics_in_either_format(database_url):
    with admin_client(admin_env(database_url)[0]) as client:
        text = client.get("/metrics")
        assert text.status_code == 200
        assert text.headers["content-type"].startswith("text/plain")
        families = {family.name for family in text_string_to_metric_families(text.text)}
        assert {"todo_server_http_requests", "todo_server_auth_refusals"} <= families
        open_metrics = client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert open_metrics.text.endswith("# EOF\n")


@pytest.mark.slow
def test_with_two_workers_one_scrape_of_the_admin_port_sums_both(database_url):
    env, admin_port = admin_env(database_url, WORKERS="2")
    admin = f"http://127.0.0.1:{admin_port}"
    labels = {"route": "unmatched", "method": "GET", "status": "404"}
    with LiveServer(env, process_group=True) as server:
        for _ in range(40):  # a new connection each: both workers answer some
            assert httpx2.get(server.base_url + "/no/such").status_code == 404

        def counted() -> bool:
            text = httpx2.get(admin + "/metrics").text
            return scraped(text, "todo_server_http_requests_total", **labels) == 40

        wait_until(counted, "all 40 requests in one scrape", timeout=10)
    pids = set(re.findall(r"Started server process \[(\d+)\]", server.output))
    # The supervisor, which serves the admin port and no API request, saw all 40.
    assert len(pids) == 3


@pytest.mark.parametrize("timeout", ["abc", "inf", "nan", "0", "-1", "99999"])
def test_ready_command_refuses_a_bad_timeout_with_exit_1(timeout):
    """Docker reserves a health check's exit status 2: a bad flag value is 1 too, no traceback."""
    result = run_ready("--timeout", timeout, env={"ADMIN_PORT": "8001"})
    assert result.returncode == 1
    assert result.stderr == (
        "todo-server: not ready: --timeout must be a number of seconds up to 3600,"
        f" got {timeout!r}\n"
    )
