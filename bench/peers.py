"""The peers: the service and the apps it is measured beside, each a server process.

- the service, ``python -m todo_server serve`` in production configuration;
- the bare ceiling (bench/bare_app.py): Starlette with a fixed body, under the
  same uvicorn options;
- the floor (bench/floor_app.py): the thinnest list endpoint on our own
  dependencies;
- the seed stack (bench/seed_app.py): FastAPI + SQLModel + psycopg2, in its own
  virtualenv under .data/, installed only when a run asks for it.

Every peer runs on a free local port and is started at once; the harness stops
them all, whatever happens.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.load import SECRET, wrk
from bench.report import log
from devtools.liveserver import ROOT, LiveServer, free_port
from devtools.postgres import as_role

SEED_REQUIREMENTS = ROOT / "bench" / "seed-requirements.txt"
SEED_VENV = ROOT / ".data" / "bench-seed-venv"


class Server(LiveServer):
    """A server process (the service or a peer app) on a free port, started at once."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        port = free_port()
        if "uvicorn" in args:
            args = [*args, "--port", str(port)]
        super().__init__(env, args, port=port, log_path=log_path, process_group=True, name=name)
        self.url = self.base_url
        self.start(timeout=60)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the workers, or the server itself."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        # uvicorn's supervisor starts workers and a resource tracker; workers serve.
        workers = [pid for pid in pids if "multiprocessing.resource_tracker" not in _cmdline(pid)]
        return workers or [self.process.pid]

    def peak_rss_mb(self) -> list[float]:
        return [_peak_rss_kb(pid) / 1024 for pid in self.worker_pids()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")


def uvicorn_command(python: str | Path, app: str, workers: int, *extra: str) -> list[str]:
    """A peer app under uvicorn as the harness runs them all: local, quiet, no access log."""
    return [
        str(python),
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
        *extra,
    ]


# --- the service and our own peers ----------------------------------------------------


def service_env(database_url: str, workers: int) -> dict[str, str]:
    """The service's environment: production configuration, the harness's secret."""
    return {
        "PATH": _path(),
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "ENVIRONMENT": "production",
        "ALLOWED_ORIGINS": "https://app.example.com",
        "HOST": "127.0.0.1",
        "WORKERS": str(workers),
        "LOG_LEVEL": "info",
        "MAX_TASKS_PER_USER": "100000",
    }


def start_service(url: str, workers: int, log_path: Path) -> Server:
    """The service, connecting as the runtime role as it does in production."""
    return Server(
        "service",
        [sys.executable, "-m", "todo_server", "serve"],
        service_env(as_role(url), workers),
        log_path,
    )


def start_bare(workers: int, log_path: Path) -> Server:
    """The bare Starlette ceiling."""
    command = uvicorn_command(sys.executable, "bench.bare_app:app", workers, "--no-server-header")
    return Server("bare", command, {"PATH": _path()}, log_path)


def start_floor(url: str, workers: int, log_path: Path) -> Server:
    """The floor list endpoint, on the loop and HTTP parser the service uses."""
    return Server(
        "floor",
        uvicorn_command(
            sys.executable,
            "bench.floor_app:app",
            workers,
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ),
        {"PATH": _path(), "DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET},
        log_path,
    )


# --- the seed stack -------------------------------------------------------------------


def ensure_seed_venv() -> Path:
    """The seed stack's own virtualenv, installed again only when its requirements change.

    Returns its python. A stamp file holds the requirements' digest and the Python
    version; a lock keeps two harness runs from installing into it at once.
    """
    digest = hashlib.sha256(SEED_REQUIREMENTS.read_bytes()).hexdigest()
    want = f"{digest} {platform.python_version()}"
    python = SEED_VENV / "bin" / "python"
    stamp = SEED_VENV / ".installed"
    SEED_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(SEED_VENV.parent / "bench-seed-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == want and python.exists():
            return python
        log(f"installing the seed stack into {SEED_VENV} (first run, or its requirements changed)")
        stamp.unlink(missing_ok=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(SEED_VENV)], check=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + ["-r", str(SEED_REQUIREMENTS)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"installing the seed stack failed:\n{result.stderr[-3000:]}")
        stamp.write_text(want + "\n")
    return python


def start_seed(python: Path, database_url: str, workers: int, log_path: Path) -> Server:
    """The seed stack under uvicorn with the bare app's options, in its own virtualenv.

    It connects as the harness's superuser, which row-level security does not
    bind (the seed filters by user in its WHERE), and verifies the harness's
    tokens with the same shared secret the service is given. A short graceful
    shutdown: a stalled seed (see restart_if_stalled) would otherwise hold its
    stop for the whole of the stop timeout.
    """
    return Server(
        "seed",
        uvicorn_command(
            python,
            "bench.seed_app:app",
            workers,
            "--no-server-header",
            "--timeout-graceful-shutdown",
            "2",
        ),
        {
            "PATH": _path(),
            "DATABASE_URL": database_url.replace("postgresql://", "postgresql+psycopg2://", 1),
            "SECRET_KEY": SECRET,
        },
        log_path,
    )


def restart_if_stalled(
    seed: Server,
    result: dict[str, Any],
    python: Path,
    database_url: str,
    workers: int,
    data: Path,
    log_path: Path,
) -> Server:
    """A fresh seed stack after a run it did not keep up with; else the same one.

    Under enough connections per worker the seed can stall: every thread of
    FastAPI's thread pool waits for a pool connection, while the pool's
    connections belong to requests whose response validation and session close
    wait for one of those threads; nothing moves until SQLAlchemy's pool timeout
    (the known issue of sync ``yield`` session dependencies, fastapi/fastapi#3205
    and #12066). The backlog would carry the stall into the seed's next run, so it
    starts again, warmed up like the first one.
    """
    if result["requests"] and not result["errors"]:
        return seed
    log("the seed stack stalled; starting it again for its next run")
    seed.stop()
    fresh = start_seed(python, database_url, workers, log_path)
    wrk(fresh.url, "seed", 16, 1, data)
    return fresh
