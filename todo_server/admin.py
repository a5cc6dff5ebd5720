"""The admin server: ``/live``, ``/ready`` and ``/metrics`` on ADMIN_HOST:ADMIN_PORT, never on the
API port.

A second, small Starlette app for orchestrators and monitoring. It holds its own
resources, opened in its own lifespan: a pool of one connection, so a probe never
queues behind API requests for the API's pool (a busy server is not an unready
one), and, when a JWKS URL is set, a JWKS cache of its own, fetching the same
document the API does.

Where it runs (``cli.serve``): with one worker, in the API's process and event
loop, so ``/live`` answers only while the loop that serves the API does; with
several, in uvicorn's supervisor process, the one process that outlives any worker
and sees them all (docs/deploy.md: Probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

import psycopg
import uvicorn
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from todo_server import metrics
from todo_server.auth.jwks import JwksCache
from todo_server.config import Settings
from todo_server.errors import RETRY_AFTER_SECONDS
from todo_server.storage import migrate
from todo_server.storage.db import Pool, create_pool
from todo_server.storage.schema_check import pending_on_connection

logger = logging.getLogger("todo_server.admin")

#: Longest wait for the probe's connection (DB_POOL_TIMEOUT when shorter), and again for
#: its reads: /ready answers within 3 s, inside a probe's or HEALTHCHECK's own timeout.
PROBE_TIMEOUT_SECONDS = 1.5


class AdminState(TypedDict):
    """What the admin lifespan hands its handlers, read as ``request.state.<key>``."""

    pool: Pool
    jwks: JwksCache | None
    timeout: float
    migrations_dir: Path


async def live(request: Request) -> JSONResponse:
    """200 while the event loop answers; nothing else is asked."""
    return JSONResponse({"status": "ok"})


async def scrape(request: Request) -> Response:
    """Every metric family, from every worker, in the format the scraper asks for."""
    body, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})


async def ready(request: Request) -> JSONResponse:
    """200 when the database answers, its schema is current and the JWKS (if any) has keys."""
    reasons = await database_reasons(
        request.state.pool, request.state.timeout, request.state.migrations_dir
    )
    jwks: JwksCache | None = request.state.jwks
    if jwks is not None and not jwks.has_keys():
        reasons.append("jwks: no usable keys from JWT_JWKS_URL (yet)")
    if not reasons:
        return JSONResponse({"status": "ready"})
    return JSONResponse(
        {"status": "not_ready", "reasons": reasons},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def database_reasons(pool: Pool, timeout: float, migrations_dir: Path) -> list[str]:
    """Why the database is not ready: unreachable, or its migrations not current; [] when ready."""
    try:
        # At most ``timeout`` for a connection, as long again for the two reads.
        async with asyncio.timeout(2 * timeout), pool.connection(timeout=timeout) as conn:
            waiting = await pending_on_connection(conn, migrations_dir)
    except (PoolTimeout, TimeoutError, psycopg.OperationalError) as exc:
        return [f"database: unavailable ({type(exc).__name__})"]
    except migrate.DriftError as exc:
        return [f"migrations: {exc}"]
    if waiting:
        names = ", ".join(migration.path.name for migration in waiting)
        return [f"migrations: pending: {names}; run `todo-server migrate`"]
    return []


def create_admin_app(
    settings: Settings, *, migrations_dir: Path = migrate.DEFAULT_DIRECTORY
) -> Starlette:
    """The admin app for ``settings``; ``cli.serve`` runs it on ADMIN_HOST:ADMIN_PORT."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AdminState]:
        async with AsyncExitStack() as resources:
            # One connection is enough for probes; opened lazily, so the admin port
            # comes up (and says why it is not ready) while the database is down.
            pool = create_pool(replace(settings.database, pool_min=0, pool_max=1))
            await pool.open(wait=False)
            resources.push_async_callback(pool.close)
            jwks = None
            if settings.jwks_url is not None:
                jwks = JwksCache(
                    settings.jwks_url,
                    settings.jwks_refresh_interval,
                    algorithms=settings.jwt_algorithms,
                )
                fetching = asyncio.create_task(jwks.keep_fresh())
                resources.push_async_callback(stop, fetching)
            yield {
                "pool": pool,
                "jwks": jwks,
                "timeout": min(settings.database.pool_timeout, PROBE_TIMEOUT_SECONDS),
                "migrations_dir": migrations_dir,
            }

    return Starlette(
        routes=[
            Route("/live", live, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", scrape, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class AdminServer(uvicorn.Server):
    """uvicorn's server, leaving signals to the API's server, which stops this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def admin_server(settings: Settings) -> AdminServer:
    """The admin app on ADMIN_HOST:ADMIN_PORT, with uvicorn's defaults and no access log."""
    assert settings.admin_port is not None
    config = uvicorn.Config(
        create_admin_app(settings),
        host=settings.admin_host,
        port=settings.admin_port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )
    return AdminServer(config)


def serve_with_admin(settings: Settings, options: dict[str, Any]) -> int:
    """``serve`` with the admin server beside the API; see the module docstring for where.

    Returns 1, before the API starts, when the admin server cannot start (its port
    is taken, say: uvicorn logs why).
    """
    from todo_server.app import create_app

    admin = admin_server(settings)
    if settings.workers == 1:
        api = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
        # The event loop uvicorn.run would choose for the API.
        with asyncio.Runner(loop_factory=api.config.get_loop_factory()) as runner:
            return runner.run(serve_beside(api, admin, admin_address(settings)))
    # The workers' metrics meet in one directory, which /metrics here reads.
    with metrics.shared_directory():
        # uvicorn ends a server that cannot start with SystemExit, which ends just this thread.
        thread = threading.Thread(target=admin.run, name="admin-server", daemon=True)
        thread.start()
        while not admin.started:
            if not thread.is_alive():
                return admin_failed(admin_address(settings))
            time.sleep(0.01)
        try:
            # Each worker process builds its own app (and pool) from the environment.
            uvicorn.run(
                "todo_server.app:create_app_from_environment",
                factory=True,
                workers=settings.workers,
                **options,
            )
        finally:
            admin.should_exit = True
            thread.join(timeout=settings.shutdown_timeout + 5)
    return 0


async def serve_beside(api: uvicorn.Server, admin: AdminServer, address: str) -> int:
    """Serve ``admin`` in the API's event loop, from before the API starts until it stops."""
    admin_task = asyncio.create_task(serve_until_it_stops(admin))
    while not admin.started:
        if admin_task.done():
            return admin_failed(address)
        await asyncio.sleep(0.01)
    try:
        await api.serve()
    finally:
        admin.should_exit = True
        await admin_task
    return 0


async def serve_until_it_stops(server: uvicorn.Server) -> None:
    """``server.serve()``, ended by uvicorn's SystemExit when it cannot start (it logged why).

    Left to propagate, that SystemExit would leave the event loop at once, without
    a shutdown.
    """
    with contextlib.suppress(SystemExit):
        await server.serve()


def admin_failed(address: str) -> int:
    logger.error("the admin server could not start on %s; the API is not started", address)
    return 1


def admin_address(settings: Settings) -> str:
    return f"{settings.admin_host}:{settings.admin_port}"
