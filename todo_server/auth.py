"""Authentication middleware: a verified bearer token, or a 401 before any handler runs.

Modelled on Starlette's ``AuthenticationMiddleware`` but pure ASGI and strict:
non-HTTP scopes pass through; public paths pass through; everything else needs
``Authorization: Bearer <token>``: a JWT, or a Better Auth session token when
its database is configured. On success the user is written to
``scope["state"]["user"]``, which handlers read as ``request.state.user``;
handlers never parse tokens themselves.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from todo_server.errors import ServiceUnavailable, Unauthorized, api_error_response
from todo_server.sessions import SessionStoreUnavailable
from todo_server.tokens import InvalidToken, JwksUnavailable, TokenVerifier

logger = logging.getLogger("todo_server.auth")

#: Paths anyone may call. Everything else needs a token.
PUBLIC_PATHS = frozenset({"/health", "/auth/register", "/auth/login", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs", "/redoc")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or any(
        path == prefix or path.startswith(prefix + "/") for prefix in PUBLIC_PREFIXES
    )


class AuthMiddleware:
    """Puts the token's user on ``request.state.user`` or answers 401."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
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
            error = Unauthorized(
                exc.public, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
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
