"""The ``todo-server`` command: ``serve``, ``migrate``, ``purge``, ``doctor``, ``ready``,
``version``."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

import psycopg

from todo_server import package_version
from todo_server.config import (
    ConfigError,
    load_admin_address,
    load_migration_settings,
    load_settings,
)
from todo_server.storage import migrate


def exit_cleanly_on_signals() -> None:
    """Make SIGTERM and SIGINT end the process through SystemExit, so queued logs are written.

    uvicorn handles these signals while it serves, then restores the previous
    handlers and raises the signal again; with the default handler the process
    would die there, before atexit writes what is still queued (the shutdown
    lines). Installed before uvicorn starts, in the main thread.
    """

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, leave)


def serve() -> int:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    from todo_server import metrics
    from todo_server.app import create_app, refuse_pending_migrations
    from todo_server.logs import configure_logging
    from todo_server.web.http_protocol import LimitedHttpToolsProtocol

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    exit_cleanly_on_signals()
    # The lifespan checks again; checking here first turns the refusal into one
    # line and exit status 1 instead of uvicorn's start-up traceback.
    asyncio.run(refuse_pending_migrations(settings, migrate.DEFAULT_DIRECTORY))
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # Head size, head and body timeouts, a connection cap (web.http_protocol).
        "http": LimitedHttpToolsProtocol,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        # X-Forwarded-For is client input unless a proxy we trust set it; uvicorn
        # would otherwise believe it from 127.0.0.1.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or None,
        "lifespan": "on",
    }
    if settings.admin_port is not None:
        from todo_server.admin import serve_with_admin

        return serve_with_admin(settings, options)
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
    else:
        # Each worker process builds its own app (and pool) from the environment.
        with metrics.shared_directory():
            uvicorn.run(
                "todo_server.app:create_app_from_environment",
                factory=True,
                workers=settings.workers,
                **options,
            )
    return 0


#: Exit codes of ``todo-server migrate``, documented for operators in docs/deploy.md.
EXIT_OK = 0
EXIT_FAILED = 1  # the database is unreachable, a file failed, or the lock wait timed out
EXIT_CONFIG = 2  # a setting is missing or malformed
EXIT_PENDING = 3  # status: migrations are pending
EXIT_DRIFT = 4  # status, verify, up: an applied file changed or is gone


def run_migrate(action: str, as_json: bool) -> int:
    """``migrate [up|status|verify|sql]``; see the exit codes above."""
    settings = load_migration_settings()
    with psycopg.connect(settings.url, autocommit=True, connect_timeout=10) as conn:
        if action == "up":
            applied = migrate.apply(
                conn, lock_timeout=settings.lock_timeout, runtime_role=settings.runtime_role
            )
            for migration in applied:
                print(f"applied {migration.path.name}")
            if not applied:
                print("nothing to apply; the database is up to date")
            return EXIT_OK
        files = migrate.inspect(conn)
    drift = [line for line in files if line.state in ("changed", "missing")]
    waiting = [line for line in files if line.state == "pending"]
    if action == "sql":
        if drift:
            return _report_drift(drift)
        by_version = {m.version: m for m in migrate.discover()}
        pending = [by_version[line.version] for line in waiting]
        print(migrate.script(pending, runtime_role=settings.runtime_role), end="")
        return EXIT_OK
    if action == "verify":
        if drift:
            return _report_drift(drift)
        print(f"verified: {len(files) - len(waiting)} applied files match; {len(waiting)} pending")
        return EXIT_OK
    if as_json:
        state = "drift" if drift else "pending" if waiting else "current"
        print(json.dumps({"state": state, "files": [line.as_json() for line in files]}))
    else:
        for line in files:
            when = f" {line.applied_at.isoformat()}" if line.applied_at else ""
            print(f"{line.version:04d}_{line.name}.sql  {line.state}{when}  sha256:{line.checksum}")
    return EXIT_DRIFT if drift else EXIT_PENDING if waiting else EXIT_OK


def _report_drift(drift: list[migrate.FileState]) -> int:
    for line in drift:
        what = "changed after it was applied" if line.state == "changed" else "applied, file gone"
        print(f"todo-server: {line.version:04d}_{line.name}.sql: {what}", file=sys.stderr)
    return EXIT_DRIFT


def run_purge() -> int:
    """Purge what is due now (deleted tasks past retention, expired keys), then exit."""
    from psycopg.rows import dict_row

    from todo_server.purge import purge

    settings = load_settings()

    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(
            settings.database.url, autocommit=True, connect_timeout=10, row_factory=dict_row
        ) as conn:
            result = await purge(conn, retention_days=settings.task_retention_days)
        if result.skipped:
            print("another process is purging now; nothing done here")
        print(
            f"purged {result.tasks} deleted tasks, {result.idempotency_keys} idempotency keys,"
            f" {result.login_failures} throttling rows"
        )
        return 0

    return asyncio.run(run())


def add_doctor(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check the configuration against the database; exit 0 ok, 1 warnings, 2 failures",
    )
    doctor.add_argument("--json", action="store_true", help="the findings as a JSON list")


def run_doctor(as_json: bool) -> int:
    """One line per check (ok, warn or fail) and its fix; see todo_server.doctor."""
    from todo_server import doctor

    return doctor.run(as_json)


def run_ready(timeout_text: str) -> int:
    """Ask the admin server's ``/ready``: 0 when it answers 200, else 1 and why on stderr.

    The image's HEALTHCHECK runs this; Docker reserves exit status 2, so every
    failure, a configuration one included, is 1.
    """
    try:
        timeout = float(timeout_text)
    except ValueError:
        timeout = math.nan
    if not 0 < timeout <= 3600:  # NaN and inf fail too
        return _not_ready(f"--timeout must be a number of seconds up to 3600, got {timeout_text!r}")
    try:
        host, port = load_admin_address()
    except ConfigError as exc:
        return _not_ready(f"configuration error: {exc}")
    if port is None:
        return _not_ready("ADMIN_PORT is off; set it to serve /ready")
    url = f"http://{probe_host(host)}:{port}/ready"
    # Straight to the admin server, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            response.read()
        return 0
    except urllib.error.HTTPError as exc:
        return _not_ready(f"{url} answered {exc.code}: {_reasons(exc.read())}")
    except (OSError, ValueError) as exc:
        return _not_ready(f"{url}: {getattr(exc, 'reason', None) or exc}")


def probe_host(host: str) -> str:
    """Where to reach a server listening on ``host``: loopback for the wildcard addresses."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _reasons(body: bytes) -> str:
    try:
        return "; ".join(json.loads(body)["reasons"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace") or "no body"


def _not_ready(why: str) -> int:
    print(f"todo-server: not ready: {why}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="todo-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the API")
    migrate_parser = commands.add_parser("migrate", help="apply pending migrations")
    migrate_parser.add_argument(
        "action",
        nargs="?",
        choices=["up", "status", "verify", "sql"],
        default="up",
        help="up: apply pending files (default); status: list every file (exit 3 when some"
        " are pending, 4 on drift); verify: check history and checksums; sql: print the"
        " pending files as one script for psql -1",
    )
    migrate_parser.add_argument("--json", action="store_true", help="status as JSON")
    commands.add_parser("purge", help="purge deleted tasks past retention and expired keys now")
    commands.add_parser("version", help="print the version")
    add_doctor(commands)
    ready_parser = commands.add_parser(
        "ready", help="ask the admin server's /ready: exit 0 when ready, else 1"
    )
    ready_parser.add_argument(
        "--timeout", default="5", help="seconds to wait for the answer (default 5)"
    )
    args = parser.parse_args(argv)

    try:
        if args.command == "version":
            print(package_version())
            return 0
        if args.command == "migrate":
            return run_migrate(args.action, args.json)
        if args.command == "purge":
            return run_purge()
        if args.command == "doctor":
            return run_doctor(args.json)
        if args.command == "ready":
            return run_ready(args.timeout)
        return serve()
    except ConfigError as exc:
        print(f"todo-server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except migrate.MigrationError as exc:
        print(f"todo-server: migration error: {exc}", file=sys.stderr)
        return EXIT_DRIFT if isinstance(exc, migrate.DriftError) else EXIT_FAILED
    except psycopg.OperationalError as exc:
        print(f"todo-server: cannot reach the database: {exc}".strip(), file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
