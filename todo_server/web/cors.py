"""CORS: Starlette's policy, granting nothing to a request it does not allow.

Starlette's ``CORSMiddleware`` gets two things wrong for this service:

- it answers a preflight it refuses with 400 ``text/plain`` ("Disallowed CORS
  origin") that still carries ``Access-Control-Allow-Methods``, ``-Headers``,
  ``-Credentials`` and ``-Max-Age`` (and ``-Allow-Origin`` when only the method
  or a header was refused). Here the refusal is 403 ``forbidden`` in the usual
  JSON body, ``details`` naming each refused part, and no ``Access-Control-*``
  header at all: only ``Vary``, so a cache keeps it apart from an allowed
  answer. 403 rather than 400: the request is well formed; the policy forbids
  it. A browser never shows a preflight's body to the page, so nothing is lost
  by not letting the page read it; the body is for the network tab.
- it adds ``Access-Control-Allow-Credentials`` and ``-Expose-Headers`` to every
  answer that came with an ``Origin``, allowed or not. Here a request from an
  origin that is not allowed gets only ``Vary: Origin``.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from todo_server.errors import Forbidden
from todo_server.web.error_responses import api_error_response

REFUSED_PARTS = {
    "origin": ("Origin", "is not an allowed origin"),
    "method": ("Access-Control-Request-Method", "is not an allowed method"),
    "headers": ("Access-Control-Request-Headers", "names a header that is not allowed"),
    "private-network": ("Access-Control-Request-Private-Network", "is not allowed"),
}


class JsonErrorCORSMiddleware(CORSMiddleware):
    """``CORSMiddleware`` whose refusals grant nothing and use the JSON error format."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await super().__call__(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "origin" not in headers or "access-control-request-method" not in headers:
            await super().__call__(scope, receive, send)
            return
        response = self.preflight_response(request_headers=headers)
        if response.status_code >= 400:
            response = self.refusal(bytes(response.body).decode(), response.headers["vary"], scope)
        await response(scope, receive, send)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        """A response's start: CORS headers for an allowed origin, only ``Vary`` otherwise."""
        origin = request_headers.get("origin")
        if (
            message["type"] != "http.response.start"
            or origin is None
            or self.is_allowed_origin(origin)
        ):
            await super().send(message, send, request_headers)
            return
        headers = MutableHeaders(scope=message)
        headers.add_vary_header("Origin")
        await send(message)

    @staticmethod
    def refusal(text: str, vary: str, scope: Scope) -> Response:
        """The refused preflight as a 403 with its ``Vary`` and no ``Access-Control-*``."""
        # Starlette says which checks failed as "Disallowed CORS origin, method".
        failed = text.removeprefix("Disallowed CORS ").split(", ")
        details = [
            {"field": field, "message": message}
            for part, (field, message) in REFUSED_PARTS.items()
            if part in failed
        ]
        error = Forbidden("CORS preflight refused", details=details or None, headers={"Vary": vary})
        return api_error_response(error, scope.get("state", {}).get("request_id"))
