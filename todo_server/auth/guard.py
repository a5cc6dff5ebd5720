"""Authentication: a verified bearer token before any handler runs, declared per route.

Every route is an ``ApiRoute``; it needs ``Authorization: Bearer <token>`` (a
JWT, or a Better Auth session token when its database is configured) unless
it is declared ``public=True`` where it is declared. Routing comes first, so
an unknown path is 404 and a wrong method 405 whether or not a token came:
authentication belongs to the routes that exist. On success the user is
written to ``scope["state"]["user"]``, which handlers read as
``request.state.user``; handlers never parse tokens themselves.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from todo_server import metrics
from todo_server.auth.identity import (
    AuthUser,
    InvalidToken,
    JwksUnavailable,
    SessionStoreUnavailable,
)
from todo_server.auth.tokens import TokenVerifier
from todo_server.errors import ServiceUnavailable, Unauthorized

logger = logging.getLogger("todo_server.auth")

#: What a route calls with its request: every handler of the API is one.
Handler = Callable[[Request], Awaitable[Response]]


async def authenticate(scope: Scope, verifier: TokenVerifier) -> AuthUser:
    """The user the request's bearer token names; ``Unauthorized`` or 503 otherwise."""
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
        metrics.auth_refused(metrics.NO_BEARER, "none")
        raise Unauthorized(
            "Authentication required: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return await verifier.verify(token)
    except InvalidToken as exc:
        logger.warning("authentication failed: %s", exc.reason)
        metrics.auth_refused(exc.why, token_source(token, verifier))
        raise Unauthorized(exc.public, headers={"WWW-Authenticate": exc.challenge}) from None
    except JwksUnavailable:
        logger.error("cannot verify token: the JWKS could not be fetched")
        raise ServiceUnavailable("Token keys are unavailable; try again shortly") from None
    except SessionStoreUnavailable:
        raise ServiceUnavailable(
            "Sessions cannot be checked right now; try again shortly"
        ) from None


def token_source(token: str, verifier: TokenVerifier) -> str:
    """``session`` for what the verifier takes as a Better Auth session token, else ``jwt``."""
    return "session" if verifier.sessions is not None and token.count(".") != 2 else "jwt"


class ApiRoute(Route):
    """A Starlette route whose handler runs for an authenticated user, unless ``public``.

    It also calls the handler directly rather than through Starlette's
    ``request_response``, whose per-request exception wrapper would repeat
    what ``web.middleware.ServiceMiddleware`` does once for every request.
    The verifier is the application's, from the lifespan state.
    """

    def __init__(
        self, path: str, endpoint: Handler, *, methods: Sequence[str], public: bool = False
    ) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{path}: handlers are coroutines")
        super().__init__(path, endpoint, methods=list(methods))
        self.public = public

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive, send)
            if not public:
                state = scope["state"]
                state["user"] = await authenticate(scope, state["verifier"])
            response = await endpoint(request)
            await response(scope, receive, send)

        self.app = serve
