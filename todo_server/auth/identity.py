"""Who is asking: the user a bearer names, and the ways of failing to tell.

A bearer is a JWT (``auth/tokens.py``) or a Better Auth session token
(``auth/better_auth_sessions.py``); both end in an ``AuthUser`` built from
checked text, or in one of the exceptions here, which ``auth/guard.py`` turns
into a response: ``InvalidToken`` is 401, the two ``...Unavailable`` are 503
(the token may be good; what would check it is not there yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from todo_server.text_rules import is_identity_text

MAX_SUBJECT_LENGTH = 255
#: 9999-12-31T23:59:59Z. A later ``exp`` is no expiry anyone meant (``10**400``
#: would reach a float conversion and answer 500), so the token is refused.
MAX_EXPIRY = 253402300799


@dataclass(frozen=True)
class AuthUser:
    """The authenticated caller, as ``request.state.user``."""

    id: str
    email: str | None
    name: str | None
    claims: dict[str, Any] = field(repr=False, compare=False)


class InvalidToken(Exception):
    """The token was refused.

    ``reason`` is for the log and may name details; ``why`` is for the client,
    in ``WWW-Authenticate``'s ``error_description`` and the error message: a
    short fixed phrase that never echoes the token, its claims or key material,
    so a misconfigured issuer or an expired token can be told apart from a
    forgery without the response teaching an attacker anything.
    """

    def __init__(self, reason: str, why: str = "invalid", public: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.why = why
        self.public = public or (
            "Token has expired" if why == "expired" else f"Invalid token: {why}"
        )

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value (RFC 6750, section 3)."""
        return f'Bearer error="invalid_token", error_description="{self.why}"'


class JwksUnavailable(Exception):
    """The JWKS has never been fetched successfully; tokens cannot be checked yet."""


class SessionStoreUnavailable(Exception):
    """Better Auth's database did not answer; the request gets 503, the token may be good."""


def checked_subject(subject: Any) -> str:
    """A user id fit to own tasks: non-empty storable text of at most 255 characters."""
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidToken("empty sub", "bad subject")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise InvalidToken("sub over 255 characters", "bad subject")
    if not is_identity_text(subject):
        raise InvalidToken("sub with control characters or invalid Unicode", "bad subject")
    return subject


def optional_text(value: Any, limit: int) -> str | None:
    """A profile claim worth keeping, or None; odd claims are dropped, not fatal."""
    if not isinstance(value, str) or not value or not is_identity_text(value):
        return None
    return value[:limit]
