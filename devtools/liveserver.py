"""A real server process on a free port: ``todo-server serve`` by default, for end-to-end
tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent

#: The service, as ``todo-server serve`` runs it, from this checkout's interpreter.
SERVE = (sys.executable, "-m", "todo_server", "serve")

#: Straight to 127.0.0.1, whatever proxy the environment names.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_until_closed(sock: socket.socket, within: float = 10) -> bytes:
    """Every byte a server sends on ``sock`` until it closes (or resets, or ``within`` passes)."""
    sock.settimeout(within)
    raw = b""
    try:
        while chunk := sock.recv(65536):
            raw += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return raw


def answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` at all (any status counts)."""
    try:
        _direct.open(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True  # e.g. /health's 503 while the database is down: it is serving
    except OSError:
        return False
    return True


class LiveServer:
    """``command`` (the service by default) with the given environment, on ``port``.

    ``PORT`` and ``HOST`` are set in its environment; a command that takes its port as an
    argument gets ``port`` passed in by the caller. Its output goes to ``log_path``, or to
    a temporary file; ``stop()`` returns it. With ``process_group``, the server runs in a
    session of its own and ``stop()`` signals all of it (a uvicorn supervisor and its workers).
    """

    def __init__(
        self,
        env: dict[str, str],
        command: Sequence[str] = SERVE,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        process_group: bool = False,
        name: str = "server",
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = list(command)
        self.name = name
        self.log_path = log_path
        self.process_group = process_group
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **env,
        }
        self.process: subprocess.Popen[str] | None = None
        self.output = ""
        self.log: IO[str] | None = None

    def start(self, timeout: float = 20.0) -> LiveServer:
        """Start it and wait until ``/health`` answers."""
        # A file, not a pipe: an undrained pipe fills up and blocks the server's logging.
        if self.log_path is None:
            self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        else:
            self.log = open(self.log_path, "w+")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=self.process_group,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.stop()}")
            if answers(self.base_url + "/health"):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer:\n{self.stop()}")

    def stop(self) -> str:
        """Stop the server; returns everything it printed."""
        if self.process is not None:
            if self.process.poll() is None:
                self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
            self.process = None
        if self.log is not None:
            self.log.seek(0)
            self.output = self.log.read()
            self.log.close()
            self.log = None
        return self.output

    def _signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        if self.process_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
