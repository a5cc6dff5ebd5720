"""The container image, built as a user builds it and run as ops run it.

Built by ``./run.sh image`` (the base image from Debian's mirrors when absent),
then run read-only, with no capabilities and host networking, against the test
PostgreSQL through the suite's PgBouncer: migrations through the entrypoint,
a task created and listed over HTTP, the HEALTHCHECK, then SIGTERM.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from urllib.parse import urlsplit

import httpx2
import pytest

from devtools.liveserver import ROOT, free_port
from tests.support.pgbouncer import ROLE
from tests.support.signing import TEST_SECRET, bearer, frontend_token

IMAGE = "localhost/todo-server:test"
ENGINE = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "containers.conf")}


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=ENGINE, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_the_image_migrates_serves_and_stops_on_sigterm(bouncer, pg_server):
    started = time.monotonic()
    built = subprocess.run(
        [str(ROOT / "run.sh"), "image", "--tag", IMAGE],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr
    build_seconds = time.monotonic() - started
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"image built in {build_seconds:.0f} s, {size / 1e6:.0f} MB")
    assert size < 200e6

    database = urlsplit(pg_server.create_database("todo_image")).path.lstrip("/")
    port = free_port()
    admin_port = free_port()
    run = [
        "run",
        "--network=host",
        "--read-only",
        "--cap-drop=all",
        # The service as the runtime role, migrations as the schema owner.
        "-e", f"DATABASE_URL={bouncer.url(database, user='todo_app')}",
        "-e", f"MIGRATION_DATABASE_URL={bouncer.url(database, user=ROLE)}",
        "-e", "DB_PGBOUNCER=transaction",
        "-e", f"BETTER_AUTH_SECRET={TEST_SECRET}",
        "-e", "ALLOWED_ORIGINS=https://app.example.com",
        "-e", f"PORT={port}",
        # Host networking: the admin server's port must be free on the host too.
        "-e", f"ADMIN_PORT={admin_port}",
    ]  # fmt: skip

    migrated = podman(*run, "--rm", IMAGE, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines()[0] == "applied 0001_create_users_and_tasks.sql"
    status = podman(*run, "--rm", IMAGE, "migrate", "status", "--json")
    assert (status.returncode, json.loads(status.stdout)["state"]) == (0, "current")

    name = f"todo-test-{port}"
    assert podman(*run, "-d", "--name", name, IMAGE).returncode == 0
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, podman("logs", name).stderr
            time.sleep(0.2)
        auth = bearer(frontend_token("container-user"))
        r = httpx2.post(base + "/api/tasks", json={"title": "in a container"}, headers=auth)
        assert r.status_code == 201, r.text
        listed = httpx2.get(base + "/api/tasks", headers=auth).json()
        assert [t["title"] for t in listed["tasks"]] == ["in a container"]
        # The image's HEALTHCHECK: `todo-server ready`, through the admin server.
        checked = podman("healthcheck", "run", name)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        ready = podman("exec", name, "todo-server", "ready")
        assert (ready.returncode, ready.stderr) == (0, "")
        assert httpx2.get(f"http://127.0.0.1:{admin_port}/ready").json() == {"status": "ready"}
        assert httpx2.get(base + "/ready").status_code == 404
        user = podman("exec", name, "id", "-u").stdout.strip()
        assert user == "10001"  # not root

        stopping = time.monotonic()
        assert podman("stop", "--time", "10", name).returncode == 0  # SIGTERM, then wait
        assert time.monotonic() - stopping < 5
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert exit_code in ("0", "143"), exit_code  # 143: ended by its SIGTERM, cleanly
        assert "Finished server process" in podman("logs", name).stderr
    finally:
        podman("rm", "-f", name)
