"""/docs and /redoc render in a real headless Chromium, offline, from the service alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

import pytest

from devtools.liveserver import LiveServer
from tests.support.browser import Browser
from tests.support.database import settings_env
from tests.support.signing import frontend_token

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


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_render_the_task_operations(server, page):
    dom, console = render(server.base_url + page)
    for text in (
        "List tasks",
        "Create a task",
        "Set or toggle completion",
        "Restore a deleted task",
        "/api/{user_id}/tasks",
    ):
        assert text in dom, text
    if page == "/docs":
        assert "Authorize" in dom
    assert [line for line in console if "Uncaught" in line] == []
    # Anything from another origin (ReDoc's CDN logo) is stopped by the page's CSP.
    outside = [
        line for line in console if "https://" in line or "http://" in line.split("source:")[0]
    ]
    assert all("Content Security Policy" in line for line in outside), outside


SET_VALUE_JS = """
((selector, value) => {
  const el = document.querySelector(selector);
  const proto = el.tagName === "TEXTAREA"
    ? HTMLTextAreaElement.prototype : HTMLInputElement.prototype;
  Object.getOwnPropertyDescriptor(proto, "value").set.call(el, value);
  el.dispatchEvent(new Event("input", {bubbles: true}));
  el.dispatchEvent(new Event("change", {bubbles: true}));
  return true;
})(%s, %s)
"""


def test_swagger_authorize_and_try_it_out_reach_the_service(server, db):
    """Authorize with a bearer token in the dialog, then Try it out / Execute a create."""
    token = frontend_token("swagger-user", email="swagger@example.com")
    browser = Browser(
        chromium(), [f for f in CHROMIUM_FLAGS if not f.startswith(("--enable-logging", "--v="))]
    )
    op = "#operations-tasks-createTask"

    def click(selector: str) -> None:
        browser.wait_for(f"document.querySelector({json.dumps(selector)}) !== null")
        browser.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def fill(selector: str, value: str) -> None:
        browser.wait_for(f"document.querySelector({json.dumps(selector)}) !== null")
        browser.evaluate(SET_VALUE_JS % (json.dumps(selector), json.dumps(value)))

    try:
        browser.open(server.base_url + "/docs")
        click(".btn.authorize")
        fill(".auth-container input", token)
        click(".auth-container .auth-btn-wrapper .btn.authorize")
        click(".auth-container .auth-btn-wrapper .btn-done")

        click(f"{op} .opblock-summary-control")
        # tryItOutEnabled starts operations in "Try it out" mode; press it only if not.
        button = f"document.querySelector('{op} .try-out__btn')"
        if browser.wait_for(f"{button} && {button}.textContent").strip() == "Try it out":
            click(f"{op} .try-out__btn")
        fill(f"{op} textarea.body-param__text", '{"title": "made in Swagger UI"}')
        click(f"{op} .btn.execute")
        cell = f"document.querySelector('{op} .live-responses-table tbody .response-col_status')"
        status = browser.wait_for(
            f"{cell} && /^[0-9]/.test({cell}.textContent) && {cell}.textContent"
        )
    finally:
        browser.close()

    assert status.strip().startswith("201")
    rows = db.execute("SELECT user_id, title FROM tasks").fetchall()
    assert rows == [("swagger-user", "made in Swagger UI")]
