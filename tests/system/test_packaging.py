"""The wheel works wherever it is installed: migrations and docs assets travel with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx2
import pytest

from devtools.liveserver import ROOT, answers, free_port
from tests.support.database import settings_env
from tests.support.signing import bearer, frontend_token
from tests.support.timekeeping import wait_until


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def source_tree(into: Path) -> Path:
    """A copy of the checkout's files as the next commit would hold them, and nothing else.

    setuptools keeps what it built in ``build/lib`` and puts it in every later wheel,
    moved-away modules included; a wheel built from a clean tree shows what the
    project itself ships (and ``./run.sh image`` removes ``build/`` first).
    """
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        source, target = ROOT / name, into / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            target.write_bytes(source.read_bytes())
    return into


def expected_wheel_files() -> set[str]:
    """The package's modules, its docs assets and the migrations (``migrations`` links to sql/)."""
    package = ROOT / "todo_server"
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assets = {
        path.relative_to(ROOT).as_posix()
        for path in (package / "static").rglob("*")
        if path.is_file()
    }
    migrations = {f"todo_server/migrations/{path.name}" for path in (ROOT / "sql").glob("*.sql")}
    return modules | assets | migrations


def test_the_installed_wheel_migrates_and_serves_from_anywhere(tmp_path, pg_server):
    dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        "-w",
        str(dist),
        str(source_tree(tmp_path / "src")),
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("todo_server-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name}
    # Exactly the service: no devtools/, tests/ or bench/, and every module of every layer.
    assert shipped == expected_wheel_files()
    assert run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path).returncode == 0
    installed = run(str(venv / "bin" / "pip"), "install", "-q", str(wheel), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    where = run(
        str(venv / "bin" / "python"),
        "-c",
        "import todo_server; print(todo_server.__file__)",
        cwd=elsewhere,
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # not the checkout

    url = pg_server.create_database("todo_wheel")
    env = {"PATH": os.environ["PATH"], **settings_env(url)}
    cli = str(venv / "bin" / "todo-server")
    status = run(cli, "migrate", "status", "--json", cwd=elsewhere, env=env)
    assert status.returncode == 3, status.stderr
    files = json.loads(status.stdout)["files"]
    assert [f["name"] for f in files] == [p.stem[5:] for p in sorted((ROOT / "sql").glob("*.sql"))]
    assert run(cli, "migrate", cwd=elsewhere, env=env).returncode == 0
    assert run(cli, "migrate", "status", cwd=elsewhere, env=env).returncode == 0

    port = free_port()
    server = subprocess.Popen(
        [cli, "serve"],
        cwd=elsewhere,
        env={**env, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(base + "/health"), "the installed server to answer")
        assert httpx2.get(base + "/health", timeout=5).status_code == 200
        r = httpx2.post(
            base + "/api/tasks", json={"title": "from a wheel"}, headers=bearer(frontend_token("w"))
        )
        assert r.status_code == 201, r.text
        assert httpx2.get(base + "/docs").status_code == 200
        asset = httpx2.get(base + "/docs/static/vendor/swagger-ui/swagger-ui-bundle.js")
        assert asset.status_code == 200 and len(asset.content) > 100_000
    finally:
        server.terminate()
        server.wait(timeout=15)
