"""The one ASGI layer between uvicorn and the router.

Every request passes through ``ServiceMiddleware`` once. It does, in order:
give the request an id (and take the trace id of a valid W3C ``traceparent``),
refuse a declared body that is too large, let CORS answer or decorate when an
``Origin`` came, route, turn errors raised on the way into the one error
format, add the security headers (and ``traceparent``), and write the access
log line. Each of those jobs is a function of the module that owns it (ids
here, CORS in ``web.cors``, the error mapping in ``web.error_responses``, the
log line in ``logs``, authentication in ``auth.guard`` on the routes that need
it); this class only puts them in order.

One layer rather than a stack (Starlette's error and exception middleware,
then one each for request context, CORS, authentication and body size):
each layer would be another coroutine, another ``send`` wrapper and another
header scan on every request.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import time
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from todo_server import metrics
from todo_server.errors import PayloadTooLarge
from todo_server.logs import access_logger, log_access, request_id_var, trace_id_var
from todo_server.web.error_responses import error_response, exception_handler_for

error_logger = logging.getLogger("todo_server.errors")

MAX_REQUEST_ID_LENGTH = 128
MAX_LOGGED_PATH = 100  # characters of a client's path a log line keeps
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
CACHEABLE_PATHS = frozenset({"/openapi.json", "/docs", "/redoc"})
CACHEABLE_PREFIX = "/docs/static/"


def security_headers(path: str) -> tuple[tuple[bytes, bytes], ...]:
    """The caching and sniffing headers for a response to ``path``."""
    if path in TOKEN_PATHS:
        return TOKEN_HEADERS
    if path in CACHEABLE_PATHS or path.startswith(CACHEABLE_PREFIX):
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


#: A W3C Trace Context ``traceparent``: version, trace id, parent id, flags, all lowercase hex.
#: Compiled once; ``match`` (not ``fullmatch``) because a future version may add fields.
TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACEPARENT_LENGTH = 55  # version 00, exactly
ZERO_TRACE_ID = b"0" * 32
ZERO_PARENT_ID = b"0" * 16


def parse_traceparent(value: bytes) -> tuple[str, bytes] | None:
    """The trace id and flags of a valid ``traceparent``, else None.

    Version 00 must be exactly its four fields. A later version (not ``ff``,
    which is invalid) is read by version 00's rules when it starts with those
    fields, followed by the end or a ``-``; what follows is not ours to read.
    An all-zero trace or parent id is invalid. Anything else (uppercase hex,
    wrong lengths, spaces, control characters) is not a traceparent, and is
    ignored as if absent.
    """
    value = value.strip(b" \t")
    match = TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == b"00":
        if len(value) != TRACEPARENT_LENGTH:
            return None
    elif version == b"ff" or value[TRACEPARENT_LENGTH : TRACEPARENT_LENGTH + 1] not in (b"", b"-"):
        return None
    if trace_id == ZERO_TRACE_ID or parent_id == ZERO_PARENT_ID:
        return None
    return trace_id.decode("ascii"), flags


def traceparent_header(trace_id: str, flags: bytes) -> tuple[bytes, bytes]:
    """The response's ``traceparent``: the caller's trace and sampled flag, a new span of ours.

    Always version 00, the version this service speaks. The span id is random
    but need not be secret (it names a span, it grants nothing), so it comes
    from ``random`` as OpenTelemetry's own id generator's do: a system call for
    ``os.urandom`` would cost more than the rest of the header.
    """
    span_id = random.getrandbits(64)
    while not span_id:  # an all-zero id is invalid; one in 2**64
        span_id = random.getrandbits(64)
    # Version 00 defines one flag, sampled (the lowest bit); the others are sent as zero.
    sampled = int(flags, 16) & 1
    return (b"traceparent", b"00-%s-%016x-%02x" % (trace_id.encode("ascii"), span_id, sampled))


def declared_length(value: bytes) -> int:
    """A Content-Length header's value, or -1 when it is not plain ASCII digits.

    ``bytes.isdigit`` is ASCII-only; ``int()`` would also take "١٠" or "1_0".
    """
    return int(value) if value.isdigit() and len(value) < 20 else -1


def path_template(scope: Scope) -> str:
    """The matched route's path with parameters named, e.g. ``/api/tasks/{task_id}``.

    One handler serves several prefixes, so the template is rebuilt from the
    path parameters rather than read off the route. Unmatched paths are cut
    short: they are client input.
    """
    path: str = scope.get("path", "")
    params = scope.get("path_params")
    if not params:
        return path if "endpoint" in scope else path[:MAX_LOGGED_PATH]
    names = {str(value): name for name, value in params.items()}
    template = "/".join(
        f"{{{names[segment]}}}" if segment in names else segment for segment in path.split("/")
    )
    # A parameter may hold slashes (a docs asset's path): still client input.
    return template[:MAX_LOGGED_PATH]


class ServiceMiddleware:
    """Request ids, body size, CORS, errors in the one format, security headers, access log.

    ``app`` is the router; ``cors`` wraps an ASGI app in the CORS policy
    (``web.cors.JsonErrorCORSMiddleware`` with the settings), used only for
    requests that carry ``Origin``: around the handler, and around the
    last-resort 500 so a browser can read even that one.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        cors: Callable[[ASGIApp], ASGIApp] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.cors = cors
        self.with_cors: ASGIApp = cors(self.handle) if cors is not None else self.handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (and websockets, which no route serves)
            await self.app(scope, receive, send)
            return

        request_id = None
        origin = False
        traceparent: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if request_id is None:
                    request_id = sane_request_id(value)
            elif name == b"origin":
                origin = True
            elif name == b"traceparent":
                # Two are one comma-joined value (RFC 9110 5.3), never a valid one.
                traceparent = value if traceparent is None else b""
        if request_id is None:
            request_id = secrets.token_hex(16)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        ids: tuple[tuple[bytes, bytes], ...] = ((b"x-request-id", request_id.encode("ascii")),)
        trace = parse_traceparent(traceparent) if traceparent else None
        trace_id = trace_token = None
        if trace is not None:
            trace_id = trace[0]
            trace_token = trace_id_var.set(trace_id)
            ids = (*ids, traceparent_header(*trace))
        extra = security_headers(scope["path"])
        status = 500
        started = False
        metrics.request_started()
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                # An error is never stored, even on a path whose answers may be.
                added = PRIVATE_HEADERS if status >= 400 and extra is PUBLIC_HEADERS else extra
                message["headers"] = [*message.get("headers", ()), *ids, *added]
            await send(message)

        try:
            if origin:
                await self.with_cors(scope, receive, send_with_id)
            else:
                await self.handle(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left, or web.http_protocol ended a stalled body: nobody to answer.
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
                response: ASGIApp = error_response(
                    500, "internal_error", "Internal server error", request_id=request_id
                )
                if origin and self.cors is not None:
                    response = self.cors(response)
                await response(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            # The route's own path is its template: every prefix has a route of its own.
            metrics.request_done(
                None if route is None else route.path, scope["method"], status, seconds
            )
            user = state.get("user")
            log_access(
                request_id,
                scope["method"],
                path_template(scope),
                status,
                round(seconds * 1000, 2),
                getattr(user, "id", None),
                trace_id,
            )
            request_id_var.reset(token)
            if trace_token is not None:
                trace_id_var.reset(trace_token)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route the request; an error raised on the way becomes its error response."""
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, self.limit_body(scope, receive), sender)
        except Exception as exc:
            handler = exception_handler_for(exc)
            if handler is None or started:
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, sender)

    def limit_body(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` that refuses a body over the limit, declared or sent, with 413.

        A declared length over the limit is refused before routing, so no token
        is verified and no handler runs for a body that will be refused anyway.
        """
        max_bytes = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if declared_length(value) > max_bytes:
                    raise PayloadTooLarge(f"Request body must be at most {max_bytes} bytes")
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLarge(f"Request body must be at most {max_bytes} bytes")
            return message

        return limited_receive
