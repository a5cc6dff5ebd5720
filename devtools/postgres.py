"""Private PostgreSQL servers for development: the tests', the benchmark's and ``./run.sh``'s.

Two kinds. ``PostgresCluster`` is a throw-away server for the tests and the
benchmark, started in about a tenth of a second: ``initdb`` runs once into a
cached template data directory (under ``.data/``); each start copies it to tmpfs
and runs ``postgres`` directly, listening only on a Unix socket. ``LocalCluster``
is the one ``./run.sh`` serves with when ``DATABASE_URL`` is not set: durable,
kept in ``.data/postgres`` between runs, started and stopped with ``pg_ctl``.

PostgreSQL refuses to run as root, so as root both run as the ``postgres``
system user.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
TEMPLATE_CACHE = DATA / "test-template"

#: Durability off: tests need speed, not crash safety.
FAST_SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "autovacuum": "off",
    "max_connections": "200",
}

#: What production runs with (fsync, synchronous_commit and full_page_writes at
#: their defaults, on), for benchmarks.
DURABLE_SETTINGS = {
    "listen_addresses": "",
    "shared_buffers": "256MB",
    "max_connections": "200",
}


def find_bindir() -> Path:
    """The directory holding ``postgres`` and ``initdb``: pg_config's, or Debian's newest."""
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(out) / "postgres").exists():
            return Path(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found; install them (./run.sh does) "
            "or set TEST_DATABASE_URL"
        )
    return candidates[-1].parent


def server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, but there is no 'postgres' user to run the server"
        ) from None


def chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    """Give ``path`` and everything under it to ``user``."""
    os.chown(path, user.pw_uid, user.pw_gid)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def run_as(user: pwd.struct_passwd | None) -> dict[str, object]:
    """``subprocess`` arguments that run a child as ``user`` (nothing when None)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def initdb(bindir: Path, data: Path, user: pwd.struct_passwd | None, *, sync: bool) -> None:
    """A new cluster in ``data``: superuser ``postgres``, trusted local connections, UTF-8."""
    args = [
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C.UTF-8",
        "--no-instructions",
    ]
    if not sync:
        args.append("--no-sync")
    subprocess.run(args, check=True, capture_output=True, **run_as(user))  # type: ignore[call-overload]


def scratch_root() -> Path:
    """tmpfs when it is writable, else the system temp directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def ensure_template(bindir: Path) -> Path:
    """A freshly initdb'd data directory, made once and reused by every session."""
    version = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    cache = TEMPLATE_CACHE / version
    if (cache / "PG_VERSION").exists():
        return cache
    user = server_user()
    work = Path(tempfile.mkdtemp(prefix="todo-initdb-", dir=scratch_root()))
    data = work / "data"
    try:
        if user is not None:
            os.chown(work, user.pw_uid, user.pw_gid)
        initdb(bindir, data, user, sync=False)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + f".partial-{os.getpid()}")
        shutil.copytree(data, partial, symlinks=True)
        try:
            os.replace(partial, cache)
        except OSError:  # another session made it first
            shutil.rmtree(partial, ignore_errors=True)
            if not (cache / "PG_VERSION").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cache


def wait_until_it_answers(
    name: str,
    process: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    log_tail: Callable[[], str],
) -> None:
    """Poll ``url`` every 5 ms until it accepts a connection; say why when it never does."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at start-up:\n{log_tail()}")
        try:
            with psycopg.connect(url, connect_timeout=1, prepare_threshold=None):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer:\n{log_tail()}") from None
            time.sleep(0.005)


class PostgresCluster:
    """One private server on a Unix socket in a temporary directory."""

    def __init__(self, bindir: Path | None = None, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.settings = FAST_SETTINGS if settings is None else settings
        self.user = server_user()
        self.directory = Path(tempfile.mkdtemp(prefix="todo-pg-", dir=scratch_root()))
        self.data = self.directory / "data"
        self.socket_dir = self.directory
        self.log_path = self.directory / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        shutil.copytree(ensure_template(self.bindir), self.data, symlinks=True)
        os.chmod(self.data, 0o700)
        if self.user is not None:
            chown_tree(self.directory, self.user)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers."""
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir)]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **run_as(self.user),  # type: ignore[arg-type]
            )
        wait_until_it_answers("postgres", self.process, self.url(), timeout, self.log_tail)

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, disconnect clients, exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


RUNTIME_ROLE = "todo_app"

#: What the role set-up of docs/deploy.md gives the runtime role (checked by the service).
RUNTIME_ROLE_SETUP = [
    f"CREATE ROLE {RUNTIME_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS",
    f"ALTER ROLE {RUNTIME_ROLE} SET statement_timeout = '5s'",
    f"ALTER ROLE {RUNTIME_ROLE} SET lock_timeout = '5s'",
    f"ALTER ROLE {RUNTIME_ROLE} SET idle_in_transaction_session_timeout = '60s'",
]


def ensure_runtime_role(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (RUNTIME_ROLE,))
        if exists.fetchone() is None:
            for statement in RUNTIME_ROLE_SETUP:
                conn.execute(statement)


def as_role(url: str, role: str = RUNTIME_ROLE) -> str:
    """``url`` with ``role`` as its user (trust authentication on the test server)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


# --- ./run.sh's private cluster ---------------------------------------------------


def say(message: str) -> None:
    """A progress line on stderr, as ./run.sh prints its own."""
    print(f"run.sh: {message}", file=sys.stderr, flush=True)


class SetupError(Exception):
    """Set-up cannot go on; the message says what to do."""


def socket_dir_for(root: Path = ROOT) -> Path:
    """``.data/socket``, or a short path in /tmp: Unix socket paths are limited to ~100 bytes."""
    socket_dir = root / ".data" / "socket"
    if len(str(socket_dir)) > 90:
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
        socket_dir = Path("/tmp") / f"todo-server-{digest}"
    return socket_dir


def make_reachable(directory: Path, user: pwd.struct_passwd) -> None:
    """Let ``user`` walk down to ``directory`` (chmod o+x on what stops it)."""
    for step in [directory, *directory.parents]:
        if step == Path("/"):
            break
        walk = subprocess.run(["test", "-x", str(step)], **run_as(user))  # type: ignore[call-overload]
        if walk.returncode != 0:
            say(f"letting the postgres user pass through {step} (chmod o+x)")
            step.chmod(step.stat().st_mode | 0o001)


class LocalCluster:
    """The private PostgreSQL ``./run.sh`` serves with: kept in ``.data/postgres``, durable,
    reachable only through a Unix socket, with the database ``todo`` and both roles of
    production (docs/deploy.md: Roles): ``postgres`` owns the schema and migrates, the service
    connects as ``todo_app``."""

    DBNAME = "todo"

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.data = root / ".data" / "postgres"
        self.socket_dir = socket_dir_for(root)
        self.user = server_user()

    def admin_url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}"

    def urls(self) -> tuple[str, str]:
        """``DATABASE_URL`` (the runtime role) and ``MIGRATION_DATABASE_URL`` (the owner)."""
        return as_role(self.admin_url(self.DBNAME)), self.admin_url(self.DBNAME)

    def _pg_ctl(self, bindir: Path, *args: str, quiet: bool = False) -> int:
        # Not a pipe: the server that pg_ctl leaves running must not hold our output open.
        return subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(self.data), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if quiet else None,
            **run_as(self.user),  # type: ignore[arg-type]
        ).returncode

    def start(self) -> bool:
        """Create the cluster when missing, start it unless it runs; True when started here."""
        bindir = find_bindir()
        self.data.parent.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.chmod(0o700)
        if self.user is not None:
            os.chown(self.socket_dir, self.user.pw_uid, self.user.pw_gid)
            make_reachable(self.data.parent, self.user)
            make_reachable(self.socket_dir.parent, self.user)
        if not (self.data / "PG_VERSION").exists():
            say(f"creating a private PostgreSQL cluster in {self.data}")
            self.data.mkdir(parents=True, exist_ok=True)
            if self.user is not None:
                os.chown(self.data, self.user.pw_uid, self.user.pw_gid)
            initdb(bindir, self.data, self.user, sync=True)
        started = False
        if self._pg_ctl(bindir, "status", quiet=True) == 0:
            say(f"reusing the private PostgreSQL already running in {self.data}")
        else:
            say(f"starting the private PostgreSQL (socket in {self.socket_dir})")
            options = f"-c listen_addresses='' -k {self.socket_dir} -c unix_socket_permissions=0700"
            log = self.data / "server.log"
            if self._pg_ctl(bindir, "-l", str(log), "-w", "-t", "60", "-o", options, "start"):
                raise SetupError(f"PostgreSQL did not start; see {log}")
            started = True
        try:
            self._ensure_database()
            ensure_runtime_role(self.admin_url())
        except BaseException:
            if started:  # the caller learns nothing it could stop
                self.stop()
            raise
        return started

    def _ensure_database(self) -> None:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.DBNAME,))
            if found.fetchone() is None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                        sql.Identifier(self.DBNAME)
                    )
                )

    def stop(self) -> None:
        """Fast shutdown, waiting until it is down; quiet when it is not running."""
        self._pg_ctl(find_bindir(), "-m", "fast", "-w", "stop", quiet=True)
