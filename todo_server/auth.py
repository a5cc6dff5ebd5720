"""Authentication middleware: a verified bearer token, or a 401 before any handler runs.

Modelled on Starlette's ``AuthenticationMiddleware`` but pure ASGI and strict:
non-HTTP scopes pass through; public paths and paths no route serves pass
through (the router answers 404 or 405); every other route needs
``Authorization: Bearer <token>``: a JWT, or a Better Auth session token when
its database is configured. On success the user is written to
``scope["state"]["user"]``, which handlers read as ``request.state.user``;
handlers never parse tokens themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from todo_server.errors import ServiceUnavailable, Unauthorized, api_error_response
from todo_server.sessions import SessionStoreUnavailable
from todo_server.tokens import InvalidToken, JwksUnavailable, TokenVerifier

logger = logging.getLogger("todo_server.auth")

#: Paths anyone may call. Every other route needs a token; a path no route
#: serves is the router's 404 (or 405), token or not.
PUBLIC_PATHS = frozenset(
    {"/health", "/auth/register", "/auth/login", "/auth/signup", "/auth/signin", "/openapi.json"}
)
PUBLIC_PREFIXES = ("/docs", "/redoc")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or any(
        path == prefix or path.startswith(prefix + "/") for prefix in PUBLIC_PREFIXES
    )


class AuthMiddleware:
    """Puts the token's user on ``request.state.user`` or answers 401."""

    def __init__(
        self, app: ASGIApp, verifier: TokenVerifier, routes: Sequence[BaseRoute] = ()
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.routes = routes

    def needs_token(self, scope: Scope) -> bool:
        """A route serves this path and method, and it is not public.

        An unknown path is 404 and a wrong method 405 whether or not a token
        came: authentication belongs to the routes that exist.
        """
        if is_public(scope["path"]):
            return False
        return any(route.matches(scope)[0] == Match.FULL for route in self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.needs_token(scope):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break

        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            reason = "no Authorization header" if authorization is None else "not a Bearer token"
            logger.info("authentication failed: %s", reason)
            error = Unauthorized(
                "Authentication required: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await api_error_response(error, state.get("request_id"))(scope, receive, send)
            return

        try:
            state["user"] = await self.verifier.verify(token)
        except InvalidToken as exc:
            logger.warning("authentication failed: %s", exc.reason)
            error = Unauthorized(exc.public, headers={"WWW-Authenticate": exc.challenge})
            await api_error_response(error, state.get("request_id"))(scope, receive, send)
            return
        except JwksUnavailable:
            logger.error("cannot verify token: the JWKS could not be fetched")
            response = api_error_response(
                ServiceUnavailable("Token keys are unavailable; try again shortly"),
                state.get("request_id"),
            )
            await response(scope, receive, send)
            return
        except SessionStoreUnavailable:
            response = api_error_response(
                ServiceUnavailable("Sessions cannot be checked right now; try again shortly"),
                state.get("request_id"),
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
