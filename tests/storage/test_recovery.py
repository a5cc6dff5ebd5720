"""A real PostgreSQL stopped and started again under a running app.

The service must answer 503 (never 500, never hang past DB_POOL_TIMEOUT) while
the database is away, and recover by itself when it is back.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.assertions import assert_503
from tests.support.database import MIGRATION_DEFAULTS, settings_env
from tests.support.signing import bearer, frontend_token
from todo_server.app import create_app
from todo_server.config import load_settings
from todo_server.storage import migrate

AUTH = bearer(frontend_token("recovery-user"))


def health_until(client: TestClient, status: int, within: float) -> float:
    """Poll /health until it answers ``status``; returns the seconds that took."""
    start = time.monotonic()
    while True:
        r = client.get("/health")
        if r.status_code == status:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"/health still {r.status_code}: {r.text}"
        time.sleep(0.05)


def assert_degraded(client: TestClient, pool_timeout: float) -> None:
    start = time.monotonic()
    r = client.get("/health")
    elapsed = time.monotonic() - start
    assert r.status_code == 503
    body = r.json()
    assert body == {
        "status": "degraded",
        "timestamp": body["timestamp"],
        "database": "unavailable",
        "jwks": {"state": "not_configured", "age_seconds": None},
    }
    assert r.headers["retry-after"] == "2"
    # Bounded by DB_POOL_TIMEOUT, with room for a busy machine; an unbounded wait would
    # be psycopg's own 30 s.
    assert elapsed < pool_timeout + 2.0, elapsed


@pytest.mark.slow
@pytest.mark.timing
def test_database_stopped_and_restarted_under_a_running_app(cluster):
    settings = load_settings(settings_env(cluster.url(), DB_POOL_TIMEOUT="0.5"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/health").status_code == 200
        task = client.post("/api/tasks", json={"title": "before"}, headers=AUTH).json()
        cluster.stop()
        assert_degraded(client, 0.5)
        assert_503(client.get("/api/tasks", headers=AUTH))
        assert_503(client.post("/api/tasks", json={"title": "during"}, headers=AUTH))
        assert_503(client.patch(f"/api/tasks/{task['id']}/complete", headers=AUTH))
        assert_503(client.get("/auth/me", headers=AUTH))
        # Staying down a while must not stop the pool from trying again later: the wait
        # is the behaviour under test.
        time.sleep(2)
        assert_degraded(client, 0.5)
        cluster.start()
        health_until(client, 200, within=10)
        assert client.get("/health").json()["database"] == "ok"
        assert client.get("/api/tasks", headers=AUTH).json()["tasks"] == [task]


@pytest.mark.slow
@pytest.mark.timing
def test_app_starts_while_database_is_down_and_recovers(cluster):
    cluster.stop()
    settings = load_settings(settings_env(cluster.url(), DB_POOL_TIMEOUT="0.5"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert_degraded(client, 0.5)
        cluster.start()
        health_until(client, 200, within=10)


@pytest.mark.slow
def test_a_server_started_while_the_database_was_down_waits_for_migrations(pg_server):
    from tests.support.database import with_dbname

    name = "todo_late_schema"
    url = with_dbname(pg_server.admin_url, name)
    settings = load_settings(settings_env(url, DB_POOL_TIMEOUT="1"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        # The database does not exist yet: the server started, unable to check.
        assert client.get("/api/tasks", headers=AUTH).status_code == 503
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        pg_server.created.append(name)
        # Reachable now, but with every migration pending: still 503, never a 500.
        for _ in range(3):
            r = client.get("/api/tasks", headers=AUTH)
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "service_unavailable"
        assert client.get("/health").json()["database"] == "unavailable"
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.apply(conn, **MIGRATION_DEFAULTS)
        health_until(client, 200, within=15)
        r = client.post("/api/tasks", headers=AUTH, json={"title": "after migrate"})
        assert r.status_code == 201, r.text
