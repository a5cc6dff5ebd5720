"""The application: every route in one list, the one middleware layer, the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from todo_server import docs, metrics
from todo_server.auth import accounts
from todo_server.auth.better_auth_sessions import SessionStore
from todo_server.auth.guard import ApiRoute
from todo_server.auth.jwks import JwksCache
from todo_server.auth.login_throttle import LoginThrottle
from todo_server.auth.tokens import TokenVerifier
from todo_server.config import Settings, load_settings
from todo_server.errors import RETRY_AFTER_SECONDS
from todo_server.logs import configure_logging, flush_logs
from todo_server.purge import purge_periodically
from todo_server.storage import migrate
from todo_server.storage.db import Pool, create_pool, probe, sample_pool
from todo_server.storage.schema_check import SchemaGate
from todo_server.storage.user_slots import UserSlots
from todo_server.tasks import endpoints
from todo_server.tasks.page_tokens import CursorCodec
from todo_server.web.cors import JsonErrorCORSMiddleware
from todo_server.web.middleware import ServiceMiddleware

logger = logging.getLogger("todo_server.app")

CORS_ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "Idempotency-Key",
    "X-Request-ID",
    "traceparent",
    "tracestate",
)
CORS_EXPOSED_HEADERS = (
    "ETag",
    "Location",
    "X-Request-ID",
    "Retry-After",
    "Link",
    "X-Count",
    "traceparent",
)
CORS_ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class ServiceState(TypedDict):
    """What the lifespan hands every request, read by handlers as ``request.state.<key>``.

    Per request, ``web.middleware.ServiceMiddleware`` adds ``request_id`` and
    ``auth.guard`` adds ``user`` on the routes that authenticate.
    """

    pool: Pool
    settings: Settings
    login_throttle: LoginThrottle
    user_slots: UserSlots
    cursors: CursorCodec
    jwks: JwksCache | None
    verifier: TokenVerifier


def run_until_closed(resources: AsyncExitStack, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` as a task that ``resources`` cancels, and waits for, when it closes."""
    task = asyncio.create_task(work)

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    resources.push_async_callback(cancel)


async def health(request: Request) -> JSONResponse:
    """Liveness, database reachability and the JWKS's state; no authentication.

    Only the database decides the status: without the JWKS the service still
    serves local accounts, shared-secret tokens and session tokens, and
    restarting it would not bring the frontend's keys back.
    """
    settings: Settings = request.state.settings
    database_ok = await probe(request.state.pool, settings.database.pool_timeout)
    body = {
        "status": "ok" if database_ok else "degraded",
        "timestamp": datetime.now(UTC).isoformat(),
        "database": "ok" if database_ok else "unavailable",
        "jwks": jwks_health(request.state.jwks),
    }
    if database_ok:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def jwks_health(jwks: JwksCache | None) -> dict[str, Any]:
    """The JWKS part of /health: its state and the age of its last successful fetch."""
    if jwks is None:
        return {"state": "not_configured", "age_seconds": None}
    state, age = jwks.state()
    return {"state": state, "age_seconds": None if age is None else round(age, 1)}


class Service(Starlette):
    """Starlette's application (routing, lifespan) behind our one middleware layer.

    Starlette would wrap the router in its own error and exception middleware;
    ``ServiceMiddleware`` does both jobs, in the API's error format, once.
    """

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        lifespan: Callable[[Starlette], AbstractAsyncContextManager[ServiceState]],
        layer: Callable[[ASGIApp], ASGIApp],
    ) -> None:
        super().__init__(routes=routes, lifespan=lifespan)
        self.layer = layer
        # /api/tasks/ is a path no route serves: 404 in the error format, not a 307
        # with an empty body to a URL built from the client's Host header.
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        return self.layer(self.router)


def create_app(
    settings: Settings, *, migrations_dir: Path = migrate.DEFAULT_DIRECTORY
) -> Starlette:
    """Build the ASGI application for ``settings``."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[ServiceState]:
        for note in settings.notes:  # what loading the settings decided, for the operator
            logger.warning("settings: %s", note)
        checked = await refuse_pending_migrations(settings, migrations_dir)
        gate = SchemaGate(migrations_dir, current=checked)
        # Everything opened below is closed by the stack, in reverse order, at
        # shutdown or when a later step of start-up fails.
        async with AsyncExitStack() as resources:
            # A worker process may be ended by its signal right after shutdown;
            # write out what is queued first (the stack's last step).
            resources.callback(flush_logs)
            resources.callback(metrics.process_stopping)
            if sessions is not None:
                await sessions.open()
                resources.push_async_callback(sessions.close)
            pool = create_pool(settings.database, on_connect=gate.check)
            await pool.open(wait=False)
            resources.push_async_callback(pool.close)
            run_until_closed(resources, sample_pool(pool))
            if settings.purge_interval > 0:
                run_until_closed(
                    resources,
                    purge_periodically(
                        pool,
                        interval=settings.purge_interval,
                        retention_days=settings.task_retention_days,
                    ),
                )
            if verifier.jwks is not None:
                # Fetch the frontend's keys now rather than on the first token, and
                # keep retrying while the frontend is not up yet.
                run_until_closed(resources, verifier.jwks.keep_fresh())
            yield {
                "pool": pool,
                "settings": settings,
                "login_throttle": login_throttle,
                "user_slots": UserSlots(
                    settings.database.pool_max_per_user, settings.database.pool_timeout
                ),
                "cursors": CursorCodec(settings.secret),
                "jwks": verifier.jwks,
                "verifier": verifier,
            }

    sessions = (
        SessionStore(settings.session_store, settings.secret)
        if settings.session_store is not None
        else None
    )
    verifier = TokenVerifier(settings, sessions=sessions)
    login_throttle = LoginThrottle(
        max_per_email=settings.login_max_failures,
        max_per_ip=settings.login_max_failures_per_ip,
        max_registrations_per_ip=settings.registrations_per_ip,
    )
    # Matched in order: the task routes, which carry nearly all traffic, come
    # first (no two routes share a path, so order changes nothing else).
    routes = [
        *endpoints.task_routes(),
        ApiRoute("/health", health, methods=["GET"], public=True),
        ApiRoute("/auth/register", accounts.register, methods=["POST"], public=True),
        ApiRoute("/auth/login", accounts.login, methods=["POST"], public=True),
        # The names some frontends call them by.
        ApiRoute("/auth/signup", accounts.register, methods=["POST"], public=True),
        ApiRoute("/auth/signin", accounts.login, methods=["POST"], public=True),
        ApiRoute("/auth/me", accounts.me, methods=["GET"]),
        *docs.docs_routes(settings.compatible),
    ]
    cors = partial(
        JsonErrorCORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=CORS_ALLOWED_METHODS,
        allow_headers=CORS_ALLOWED_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_credentials=True,
    )
    metrics.build_info(settings.api_dialect)
    return Service(routes, lifespan, partial(ServiceMiddleware, cors=cors))


def create_app_from_environment() -> Starlette:
    """The app for one worker process of ``serve`` with WORKERS > 1."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


async def refuse_pending_migrations(settings: Settings, migrations_dir: Path) -> bool:
    """Stop start-up while migrations are pending; start anyway when the database is down.

    A server that cannot reach its database still starts, answers 503 and
    recovers when the database comes back; a server whose schema is behind its
    code must not serve at all. Returns whether the check could run: when it
    could not, the first connection makes it (``storage.schema_check.SchemaGate``).
    """
    try:
        waiting = await asyncio.to_thread(
            migrate.pending_on,
            settings.database.url,
            settings.database.pool_timeout,
            migrations_dir,
        )
    except psycopg.OperationalError as exc:
        logger.warning(
            "database %s unreachable at start-up (%s); serving 503 until it answers",
            settings.database.display_url,
            type(exc).__name__,
        )
        return False
    if waiting:
        names = ", ".join(migration.path.name for migration in waiting)
        raise migrate.MigrationError(
            f"migrations pending: {names}; run `todo-server migrate` (or ./run.sh migrate) first"
        )
    return True
