"""Exceptions to responses: every error a handler raises, answered with the one error body.

``ServiceMiddleware`` (``web.middleware``) asks ``exception_handler_for`` which
handler answers an exception that escaped the router:

- an ``errors.ApiError`` is its own status, code, message and headers;
- Starlette's ``HTTPException`` (an unknown route or method) becomes the
  ``ApiError`` of its status;
- database errors are told apart by what happened (``_handle_database_error``):
  a statement or lock timeout is 503 ``database_timeout``; a deadlock or
  serialization failure that survived ``storage.db.retry_conflicts`` and every
  other database failure (pool exhausted, connection lost) is 503
  ``service_unavailable``; all with Retry-After, each with its own log line;
- a prepared statement lost behind a transaction-pooling PgBouncer is a
  misconfiguration, logged as one and answered 503.

Anything else is caught by ``ServiceMiddleware`` itself, logged with the
request id and answered 500 ``internal_error`` with a generic message: no
stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import psycopg.errors
import psycopg_pool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from todo_server import metrics
from todo_server.errors import (
    ApiError,
    BadRequest,
    Conflict,
    DatabaseTimeout,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    error_body,
)

logger = logging.getLogger("todo_server.errors")

_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PreconditionFailed,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        RateLimited,
        ServiceUnavailable,
    )
}


def request_id_of(scope_state: Any) -> str | None:
    """The request id ``ServiceMiddleware`` stored, if any."""
    if isinstance(scope_state, dict):
        return scope_state.get("request_id")
    return None


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The one error body, as a response."""
    return Response(
        error_body(code, message, details=details, request_id=request_id),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def api_error_response(exc: ApiError, request_id: str | None) -> Response:
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        details=exc.details,
        request_id=request_id,
        headers=exc.headers,
    )


async def _handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return api_error_response(exc, request_id_of(request.scope.get("state")))


async def _handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route or method) in our format."""
    assert isinstance(exc, HTTPException)
    cls = _BY_STATUS.get(exc.status_code)
    if cls is None:
        return error_response(
            exc.status_code,
            "error",
            str(exc.detail),
            request_id=request_id_of(request.scope.get("state")),
            headers=dict(exc.headers or {}),
        )
    return api_error_response(
        cls(headers=dict(exc.headers or {})), request_id_of(request.scope.get("state"))
    )


TIMEOUTS = (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)
CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
BUSY_MESSAGE = "The database is busy with conflicting changes; try again shortly"


def _where(request: Request) -> str:
    """``METHOD /route/{template}``: what was being done, without the client's values."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', '(no route)')}"


async def _handle_database_error(request: Request, exc: Exception) -> Response:
    """A database error that escaped the handler, told apart by what happened.

    Statement timeouts and deadlocks are ``psycopg.OperationalError`` too, but
    they happen while the database is perfectly reachable: they are not
    "database unavailable", and their log lines say what did happen.
    """
    request_id = request_id_of(request.scope.get("state"))
    if isinstance(exc, TIMEOUTS):
        diag = exc.diag  # PostgreSQL's reason and context: names and tuple ids, no values
        context = f" ({diag.context.strip()})" if diag.context else ""
        logger.warning(
            "database statement timed out on %s: %s%s",
            _where(request),
            diag.message_primary or type(exc).__name__,
            context,
        )
        metrics.database_error("timeout")
        return api_error_response(DatabaseTimeout(), request_id)
    if isinstance(exc, CONFLICTS):
        logger.warning("database conflict on %s: %s", _where(request), type(exc).__name__)
        metrics.database_error("conflict")
        return api_error_response(ServiceUnavailable(BUSY_MESSAGE), request_id)
    logger.warning("database unavailable: %s", type(exc).__name__)
    metrics.database_error("unavailable")
    return api_error_response(ServiceUnavailable(), request_id)


#: What psycopg's prepared statements meet behind a transaction-pooling PgBouncer:
#: the next transaction runs on another server connection, where the statement
#: was never prepared (or already was).
PREPARED_STATEMENTS_LOST = (
    psycopg.errors.InvalidSqlStatementName,
    psycopg.errors.DuplicatePreparedStatement,
)


async def _handle_prepared_statements_lost(request: Request, exc: Exception) -> Response:
    """A misconfiguration, not a bug: say so loudly in the log, answer 503, not 500."""
    logger.error(
        "prepared statement lost on %s (%s): is this a transaction-pooling PgBouncer?"
        " Set DB_PGBOUNCER=transaction",
        _where(request),
        type(exc).__name__,
    )
    metrics.database_error("prepared_statement_lost")
    return api_error_response(ServiceUnavailable(), request_id_of(request.scope.get("state")))


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

EXCEPTION_HANDLERS: dict[type[Exception], ExceptionHandler] = {
    ApiError: _handle_api_error,
    HTTPException: _handle_http_exception,
    psycopg.OperationalError: _handle_database_error,
    psycopg_pool.PoolTimeout: _handle_database_error,
    psycopg.errors.InvalidSqlStatementName: _handle_prepared_statements_lost,
    psycopg.errors.DuplicatePreparedStatement: _handle_prepared_statements_lost,
}


def exception_handler_for(exc: Exception) -> ExceptionHandler | None:
    """The handler for ``exc``'s most specific class in ``EXCEPTION_HANDLERS``, if any."""
    for cls in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(cls)
        if handler is not None:
            return handler
    return None
