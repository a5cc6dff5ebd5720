"""A real PgBouncer (Debian's package) in transaction mode, in front of a private PostgreSQL.

PgBouncer refuses to run as root, so as root it runs as the ``postgres`` user,
like the server. It listens on a free localhost port and trusts its users
(the server behind it is private); ``url(dbname)`` is what a client connects to.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from devtools.liveserver import free_port
from devtools.postgres import (
    chown_tree,
    run_as,
    scratch_root,
    server_user,
    wait_until_it_answers,
)

USERS = ("postgres", "todo_pgbouncer", "todo_app")


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )
    if found is None:
        raise RuntimeError("pgbouncer not found; ./run.sh test installs Debian's package")
    return found


class PgBouncer:
    """One PgBouncer process pooling in transaction mode for every database of ``server_url``."""

    def __init__(self, server_url: str, pool_size: int = 8, query_wait_timeout: int = 5) -> None:
        socket_dir = parse_qs(urlsplit(server_url).query)["host"][0]
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="todo-pgbouncer-", dir=scratch_root()))
        (self.directory / "users.txt").write_text("".join(f'"{user}" ""\n' for user in USERS))
        (self.directory / "pgbouncer.ini").write_text(
            f"""[databases]
* = host={socket_dir} port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.directory}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
; After PostgreSQL comes back, reconnect within a second (the default waits 15 s),
; and fail a query that waits for a server longer than the service's pool timeout.
server_login_retry = 1
query_wait_timeout = {query_wait_timeout}
logfile = {self.directory}/pgbouncer.log
pidfile = {self.directory}/pgbouncer.pid
"""
        )
        self.user = server_user()
        if self.user is not None:
            chown_tree(self.directory, self.user)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout: float = 20.0) -> PgBouncer:
        self.process = subprocess.Popen(
            [find_pgbouncer(), str(self.directory / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **run_as(self.user),  # type: ignore[arg-type]
        )
        wait_until_it_answers(
            "pgbouncer", self.process, self.url("postgres"), timeout, self.log_tail
        )
        return self

    def restart(self) -> None:
        """Stop and start again on the same port (clients' connections break)."""
        self._end_process(signal.SIGTERM)  # immediate shutdown
        self.start()

    def stop(self) -> None:
        self._end_process()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _end_process(self, how: signal.Signals = signal.SIGINT) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(how)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.directory / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
