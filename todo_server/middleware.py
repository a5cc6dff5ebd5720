"""Pure ASGI middleware: request ids, security headers, access log, last-resort 500, body limits.

Pure ASGI rather than ``BaseHTTPMiddleware`` so context variables reach the
handlers and the hot path pays for one function call per layer, nothing more.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextvars import ContextVar

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from todo_server.errors import PayloadTooLarge, api_error_response, error_response

access_logger = logging.getLogger("todo_server.access")
error_logger = logging.getLogger("todo_server.errors")

#: The current request's id, read by the log filter so every line carries it.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

MAX_REQUEST_ID_LENGTH = 128
MAX_BODY_BYTES = 64 * 1024

# Added to every response, chosen once per request by path. Task data, tokens
# and errors must never be stored by a browser or shared cache (RFC 6749 5.1
# for token responses, which also asks for Pragma); the public API document and
# docs assets may be cached but are revalidated, so an upgrade shows at once.
# nosniff everywhere: a JSON error echoing input is never run as HTML or script.
NOSNIFF = (b"x-content-type-options", b"nosniff")
PRIVATE_HEADERS = ((b"cache-control", b"no-store"), NOSNIFF)
TOKEN_HEADERS = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"), NOSNIFF)
PUBLIC_HEADERS = ((b"cache-control", b"no-cache"), NOSNIFF)
TOKEN_PATHS = frozenset({"/auth/login", "/auth/register", "/auth/signin", "/auth/signup"})
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs", "/redoc"})
PUBLIC_PREFIX = "/docs/static/"


def security_headers(path: str) -> tuple[tuple[bytes, bytes], ...]:
    """The caching and sniffing headers for a response to ``path``."""
    if path in TOKEN_PATHS:
        return TOKEN_HEADERS
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX):
        return PUBLIC_HEADERS
    return PRIVATE_HEADERS


def sane_request_id(value: bytes) -> str | None:
    """A client's X-Request-ID when it is short and printable ASCII, else None."""
    if not value or len(value) > MAX_REQUEST_ID_LENGTH:
        return None
    if any(byte < 0x20 or byte > 0x7E for byte in value):
        return None
    text = value.decode("ascii").strip()
    return text or None


def path_template(scope: Scope) -> str:
    """The matched route's path with parameters named, e.g. ``/api/tasks/{task_id}``.

    One handler serves several prefixes, so the template is rebuilt from the
    path parameters rather than read off the route. Unmatched paths are cut
    short: they are client input.
    """
    path: str = scope.get("path", "")
    params = scope.get("path_params")
    if not params:
        return path if "endpoint" in scope else path[:100]
    names = {str(value): name for name, value in params.items()}
    return "/".join(
        f"{{{names[segment]}}}" if segment in names else segment for segment in path.split("/")
    )


class RequestContextMiddleware:
    """Gives every request an id and the security headers, logs it, and turns escapes into 500s."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = sane_request_id(value)
                break
        if request_id is None:
            request_id = secrets.token_hex(16)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        header = (b"x-request-id", request_id.encode("ascii"))
        extra = security_headers(scope["path"])
        status = 500
        started = False
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header, *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left, or http_limits ended a stalled body: nobody to answer.
            status = 499
            access_logger.info("client disconnected before the request was read")
        except Exception as exc:
            error_logger.error(
                "unhandled %s on %s %s",
                type(exc).__name__,
                scope.get("method"),
                path_template(scope),
                exc_info=exc,
            )
            if not started:
                response = error_response(
                    500, "internal_error", "Internal server error", request_id=request_id
                )
                await response(scope, receive, send_with_id)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                user = state.get("user")
                user_id = getattr(user, "id", None)
                template = path_template(scope)
                duration_ms = round((time.perf_counter() - start) * 1000, 2)
                access_logger.info(
                    "%s %s %s %.2fms user=%s",
                    scope.get("method"),
                    template,
                    status,
                    duration_ms,
                    user_id,
                    extra={
                        "method": scope.get("method"),
                        "path": template,
                        "status": status,
                        "duration_ms": duration_ms,
                        "user_id": user_id,
                    },
                )
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, before reading them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                # bytes.isdigit is ASCII-only; int() would also take "١٠" or "1_0".
                declared = int(value) if value.isdigit() and len(value) < 20 else -1
                if declared > self.max_bytes:
                    too_large = PayloadTooLarge(
                        f"Request body must be at most {self.max_bytes} bytes"
                    )
                    response = api_error_response(
                        too_large, scope.get("state", {}).get("request_id")
                    )
                    await response(scope, receive, send)
                    return
                break

        received = 0
        max_bytes = self.max_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLarge(f"Request body must be at most {max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)
