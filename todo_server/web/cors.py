"""CORS: Starlette's middleware, with refused preflights answered in the one error format.

Starlette answers a preflight it refuses with 400 ``text/plain`` ("Disallowed
CORS origin"). Here the same decision is answered 403 ``forbidden`` with the
usual JSON body, and ``details`` naming each refused part. 403 rather than 400:
the request is well formed; the policy forbids it. The browser enforces CORS
either way; the body is for the person reading the network tab.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from todo_server.errors import Forbidden
from todo_server.web.error_responses import api_error_response

REFUSED_PARTS = {
    "origin": ("Origin", "is not an allowed origin"),
    "method": ("Access-Control-Request-Method", "is not an allowed method"),
    "headers": ("Access-Control-Request-Headers", "names a header that is not allowed"),
    "private-network": ("Access-Control-Request-Private-Network", "is not allowed"),
}


class JsonErrorCORSMiddleware(CORSMiddleware):
    """``CORSMiddleware`` whose refused preflights use the JSON error format."""

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
            response = self.refusal(bytes(response.body).decode(), dict(response.headers), scope)
        await response(scope, receive, send)

    @staticmethod
    def refusal(text: str, headers: dict[str, str], scope: Scope) -> Response:
        """The refused preflight as a 403, keeping its Vary and Allow-* headers."""
        # Starlette says which checks failed as "Disallowed CORS origin, method".
        failed = text.removeprefix("Disallowed CORS ").split(", ")
        details = [
            {"field": field, "message": message}
            for part, (field, message) in REFUSED_PARTS.items()
            if part in failed
        ]
        kept = {
            name: value
            for name, value in headers.items()
            if name.lower() not in ("content-length", "content-type")
        }
        error = Forbidden("CORS preflight refused", details=details or None, headers=kept)
        return api_error_response(error, scope.get("state", {}).get("request_id"))
