"""The one error body, and the exceptions that produce it.

Every error the API gives has the same body, built by ``error_body``::

    {"code": "not_found", "message": "Task not found", "details": null, "request_id": "...",
     "detail": "Task not found"}

``detail`` repeats ``message`` under FastAPI's name, which many existing
frontends read (``err.detail``) to show the error.

Handlers raise one of these; ``web.error_responses`` turns each into its
response (and answers the database's own errors the same way), and
``web.http_protocol`` writes the refusals made before a request reaches the
application. The hierarchy::

    ApiError                  500 internal_error
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

This module is the bottom layer: it imports neither Starlette nor psycopg, so
every layer above may raise these.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

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


def error_body(
    code: str, message: str, *, details: Any = None, request_id: str | None = None
) -> bytes:
    """The one error body, as the UTF-8 JSON bytes sent."""
    return json.dumps(
        {
            "code": code,
            "message": message,
            "details": details,
            "request_id": request_id,
            "detail": message,  # FastAPI's field: what many frontends show
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
