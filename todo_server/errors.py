"""The one error format, and the exceptions that produce it.

Every error the API gives has the same body::

    {"code": "not_found", "message": "Task not found", "details": null, "request_id": "...",
     "detail": "Task not found"}

``detail`` repeats ``message`` under FastAPI's name, which many existing
frontends read (``err.detail``) to show the error.

Handlers raise one of these; ``exception_handler_for`` finds the handler that
turns each into its response (the request middleware asks it). The hierarchy::

    ApiError
    ├── BadRequest            400 bad_request
    ├── Unauthorized          401 unauthorized
    ├── Forbidden             403 forbidden
    ├── NotFound              404 not_found
    ├── MethodNotAllowed      405 method_not_allowed
    ├── Conflict              409 conflict
    ├── RequestTimeout        408 request_timeout        (written by web.http_protocol)
    ├── SyncTokenExpired      410 sync_token_expired
    ├── PreconditionFailed    412 precondition_failed
    ├── PayloadTooLarge       413 payload_too_large
    ├── UnsupportedMediaType  415 unsupported_media_type
    ├── ValidationFailed      422 validation_error
    ├── RateLimited           429 rate_limited
    ├── HeadTooLarge          431 request_header_fields_too_large  (web.http_protocol)
    └── ServiceUnavailable    503 service_unavailable
        └── DatabaseTimeout   503 database_timeout

Database errors that escape a handler are answered here too (``_handle_database_error``):
a statement or lock timeout is 503 ``database_timeout``; a deadlock or serialization failure
that survived ``storage.db.retry_conflicts`` and every other database failure (pool exhausted,
connection lost) is 503 ``service_unavailable``; all with Retry-After, each with its own log line.

Anything else that escapes a handler is caught by ``web.middleware.ServiceMiddleware``,
logged with the request id and answered 500 ``internal_error`` with a generic
message: no stack trace ever reaches a client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import psycopg
import psycopg.errors
import psycopg_pool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

logger = logging.getLogger("todo_server.errors")

#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    """An error with a status code, a stable code and a message for people."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.details = details
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code, default_message = 400, "bad_request", "Bad request"


class Unauthorized(ApiError):
    status, code, default_message = 401, "unauthorized", "Authentication required"


class Forbidden(ApiError):
    status, code, default_message = 403, "forbidden", "Forbidden"


class NotFound(ApiError):
    status, code, default_message = 404, "not_found", "Not found"


class MethodNotAllowed(ApiError):
    status, code, default_message = 405, "method_not_allowed", "Method not allowed"


class Conflict(ApiError):
    status, code, default_message = 409, "conflict", "Conflict"


class RequestTimeout(ApiError):
    """A request head or body arrived too slowly (written by ``web.http_protocol``)."""

    status, code, default_message = 408, "request_timeout", "The request took too long to arrive"


class HeadTooLarge(ApiError):
    """A request line and headers over MAX_REQUEST_HEAD_BYTES (written by ``web.http_protocol``)."""

    status, code = 431, "request_header_fields_too_large"
    default_message = "Request line and headers too large"


class SyncTokenExpired(ApiError):
    """Changes since this sync token were purged: the client must sync from scratch."""

    status, code = 410, "sync_token_expired"
    default_message = (
        "Deleted tasks since this sync_token have been purged; sync from scratch"
        " (updated_since=2000-01-01T00:00:00Z) and keep the new token"
    )


class PreconditionFailed(ApiError):
    status, code, default_message = 412, "precondition_failed", "Precondition failed"


class PayloadTooLarge(ApiError):
    status, code, default_message = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"
    default_message = "Content-Type must be application/json"


class ValidationFailed(ApiError):
    status, code, default_message = 422, "validation_error", "Invalid input"

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        """One failing field."""
        return cls(details=[{"field": field, "message": message}])


class RateLimited(ApiError):
    status, code, default_message = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"
    default_message = "Service temporarily unavailable; try again shortly"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class DatabaseTimeout(ServiceUnavailable):
    """A statement ran past DB_STATEMENT_TIMEOUT (or a lock wait past lock_timeout).

    503, not 504: this service is not a gateway, PostgreSQL cancelled and rolled
    back the statement, and a retry after Retry-After is the right reaction. Not
    a 4xx: the client did nothing wrong; the row was locked or the database slow.
    """

    code = "database_timeout"
    default_message = "The database did not answer in time; try again shortly"


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
    """The request id the request-id middleware stored, if any."""
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
    body = {
        "code": code,
        "message": message,
        "details": details,
        "request_id": request_id,
        "detail": message,  # FastAPI's field: what many frontends show
    }
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
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

    Every ``psycopg.OperationalError`` used to be "database unavailable", but
    statement timeouts and deadlocks are subclasses too, and they happen while
    the database is perfectly reachable.
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
        return api_error_response(DatabaseTimeout(), request_id)
    if isinstance(exc, CONFLICTS):
        logger.warning("database conflict on %s: %s", _where(request), type(exc).__name__)
        return api_error_response(ServiceUnavailable(BUSY_MESSAGE), request_id)
    logger.warning("database unavailable: %s", type(exc).__name__)
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
