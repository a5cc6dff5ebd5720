"""The todo-server command: version, migrate, serve."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx2

from tests.conftest import TEST_SECRET, settings_env
from tests.liveserver import ROOT, LiveServer
from todo_server import migrate


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "todo_server", *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version():
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.strip() == "0.1.0"


def test_missing_setting_stops_with_one_line_naming_it():
    result = run_cli("serve", env={"BETTER_AUTH_SECRET": TEST_SECRET})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "todo-server: configuration error: DATABASE_URL: is required (a postgresql:// URL)"
    ]


def test_bad_setting_never_echoes_the_secret(database_url):
    result = run_cli(
        "serve", env={"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": "too-short-secret"}
    )
    assert result.returncode == 2
    assert "BETTER_AUTH_SECRET" in result.stderr
    assert "too-short-secret" not in result.stderr


def test_migrate_applies_then_reports_status(pg_server):
    url = pg_server.create_database("todo_cli")
    env = {"DATABASE_URL": url}
    result = run_cli("migrate", "status", env=env)
    assert result.returncode == 0
    names = [m.path.name for m in migrate.discover()]
    assert result.stdout.splitlines() == [f"{name}  pending" for name in names]

    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"applied {name}" for name in names]

    result = run_cli("migrate", "status", env=env)
    assert all(" applied 20" in line for line in result.stdout.splitlines())
    assert (
        run_cli("migrate", env=env).stdout.strip() == "nothing to apply; the database is up to date"
    )


def test_serve_refuses_to_start_while_migrations_are_pending(pg_server):
    url = pg_server.create_database("todo_pending")
    server = LiveServer(settings_env(url))
    try:
        server.start()
    except RuntimeError as exc:
        message = str(exc)
    else:
        server.stop()
        raise AssertionError("the server started with pending migrations")
    names = ", ".join(m.path.name for m in migrate.discover())
    assert message.splitlines()[-1] == (
        f"todo-server: migration error: migrations pending: {names};"
        " run `todo-server migrate` (or ./run.sh migrate) first"
    )
    assert "Traceback" not in message


def test_serve_end_to_end_with_json_logs(database_url):
    env = settings_env(database_url, LOG_FORMAT="json")
    with LiveServer(env) as server:
        r = httpx2.get(server.base_url + "/health", headers={"X-Request-ID": "e2e-1"})
        assert r.status_code == 200
        assert r.json()["database"] == "ok"
        assert r.headers["x-request-id"] == "e2e-1"
    lines = [json.loads(line) for line in server.output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "todo_server.access"]
    assert {
        "method": "GET",
        "path": "/health",
        "status": 200,
        "request_id": "e2e-1",
        "user_id": None,
    }.items() <= access[-1].items()
    assert isinstance(access[-1]["duration_ms"], float)
    # Stopped with SIGTERM, the server still writes out its last queued lines.
    assert lines[-1]["message"].startswith("Finished server process")
    assert TEST_SECRET not in server.output
