"""/docs and /redoc render in a real headless Chromium, offline, from the service alone."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest

from tests.conftest import settings_env
from tests.liveserver import LiveServer

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is missing: ./run.sh test installs Debian's chromium package"
    return path


def render(url: str) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the page's console messages."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


@pytest.fixture(scope="module")
def server(database_url):
    with LiveServer(settings_env(database_url)) as live:
        yield live


def test_swagger_ui_renders_the_task_operations(server):
    dom, console = render(server.base_url + "/docs")
    for text in (
        "List tasks",
        "Create a task",
        "Set or toggle completion",
        "Restore a deleted task",
    ):
        assert text in dom, text
    assert "Authorize" in dom
    assert "/api/{user_id}/tasks" in dom
    assert [line for line in console if "Uncaught" in line] == []


def test_redoc_renders_the_task_operations(server):
    dom, console = render(server.base_url + "/redoc")
    for text in (
        "List tasks",
        "Create a task",
        "Set or toggle completion",
        "Restore a deleted task",
    ):
        assert text in dom, text
    assert [line for line in console if "Uncaught" in line] == []
    # Anything from another origin (ReDoc's CDN logo) is stopped by the page's CSP.
    outside = [
        line for line in console if "https://" in line or "http://" in line.split("source:")[0]
    ]
    assert all("Content Security Policy" in line for line in outside), outside
