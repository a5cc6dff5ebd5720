"""The ``todo-server`` command: ``serve``, ``migrate [status]``, ``purge``, ``version``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import psycopg

from todo_server import migrate
from todo_server.config import ConfigError, load_database_settings, load_settings


def _version() -> str:
    try:
        return package_version("todo-server")
    except PackageNotFoundError:
        return "unknown"


def serve() -> int:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    from todo_server.app import create_app, refuse_pending_migrations
    from todo_server.logs import configure_logging, exit_cleanly_on_signals

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    exit_cleanly_on_signals()
    # The lifespan checks again; checking here first turns the refusal into one
    # line and exit status 1 instead of uvicorn's start-up traceback.
    asyncio.run(refuse_pending_migrations(settings, migrate.DEFAULT_DIRECTORY))
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # X-Forwarded-For is client input unless a proxy we trust set it; uvicorn
        # would otherwise believe it from 127.0.0.1.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or None,
        "lifespan": "on",
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
    else:
        # Each worker process builds its own app (and pool) from the environment.
        uvicorn.run(
            "todo_server.app:create_app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,
        )
    return 0


def run_migrate(action: str) -> int:
    """Apply pending migrations, or list every file with its state."""
    database = load_database_settings()
    with psycopg.connect(database.url, autocommit=True, connect_timeout=10) as conn:
        if action == "status":
            for line in migrate.status(conn):
                state = f"applied {line.applied_at.isoformat()}" if line.applied_at else "pending"
                print(f"{line.migration.path.name}  {state}")
            return 0
        applied = migrate.apply(conn)
    for migration in applied:
        print(f"applied {migration.path.name}")
    if not applied:
        print("nothing to apply; the database is up to date")
    return 0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="todo-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the API")
    migrate_parser = commands.add_parser("migrate", help="apply pending migrations")
    migrate_parser.add_argument(
        "action", nargs="?", choices=["up", "status"], default="up", help="default: up"
    )
    commands.add_parser("purge", help="purge deleted tasks past retention and expired keys now")
    commands.add_parser("version", help="print the version")
    args = parser.parse_args(argv)

    try:
        if args.command == "version":
            print(_version())
            return 0
        if args.command == "migrate":
            return run_migrate(args.action)
        if args.command == "purge":
            return run_purge()
        return serve()
    except ConfigError as exc:
        print(f"todo-server: configuration error: {exc}", file=sys.stderr)
        return 2
    except migrate.MigrationError as exc:
        print(f"todo-server: migration error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"todo-server: cannot reach the database: {exc}".strip(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
