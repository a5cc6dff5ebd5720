"""Issuing and verifying the JWTs that carry a user to this API.

Three sources are accepted:

1. tokens this service issues at ``/auth/login`` and ``/auth/register``
   (HS256 with a key derived from ``BETTER_AUTH_SECRET`` for that purpose only,
   marked by ``kid`` and ``token_use``);
2. tokens a frontend mints itself with the shared secret (HS256), when
   ``JWT_FRONTEND_HS256`` is on (by default only without a JWKS);
3. Better Auth JWT-plugin tokens, checked against the frontend's JWKS
   (EdDSA by default; RS/PS/ES also possible).

A bearer that is not a JWT can still be a Better Auth session token; those are
looked up in Better Auth's database (``auth/better_auth_sessions.py``) when one
is configured. Both end in an ``AuthUser`` or a refusal from ``auth/identity.py``.

The algorithm allow-list comes from configuration, never from the token. The
key is chosen by the algorithm's family: HS256 only ever meets the shared
secret, and asymmetric algorithms only ever meet a JWKS key whose own algorithm
must match, so a public key can never be replayed as an HMAC secret.

Each family has its own required ``iss``/``aud`` (``JWT_HS256_*`` for 1 and 2,
which cannot be told apart; ``JWT_JWKS_*`` for 3), so one deployment can serve a
JWT-plugin frontend whose tokens carry them and a minting frontend whose do not.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from todo_server.auth.better_auth_sessions import SessionStore
from todo_server.auth.identity import (
    MAX_EXPIRY,
    AuthUser,
    InvalidToken,
    checked_subject,
    optional_text,
)
from todo_server.auth.jwks import JwksCache
from todo_server.config import Settings

MAX_TOKEN_BYTES = 8 * 1024
#: Verified tokens remembered until they expire; the oldest goes first when full.
CACHE_SIZE = 4096
LEEWAY_SECONDS = 30

#: The ``kid`` and ``token_use`` that mark a token as issued by this service.
OWN_KEY_ID = "todo-server-1"
OWN_TOKEN_USE = "todo-server-access"
#: Claims only Better Auth's own HS256 tokens carry (its cookie-cache JWT holds
#: ``session`` and ``user``; e-mail verification tokens ``updateTo`` and
#: ``userId``): refused as access tokens even with a ``sub`` added.
BETTER_AUTH_INTERNAL_CLAIMS = frozenset({"session", "user", "updateTo", "userId", "requestType"})


def own_signing_key(secret: str) -> bytes:
    """The key this service signs its access tokens with, derived from BETTER_AUTH_SECRET.

    Better Auth signs other HS256 tokens with the secret itself (its cookie
    cache, e-mail verification): a key of our own means none of those, and no
    token a frontend mints, can ever pass for one of ours. HKDF (RFC 5869) with
    SHA-256, no salt, and this purpose as its info.
    """
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"todo-server access token v1")
    return hkdf.derive(secret.encode())


def issue_token(settings: Settings, user_id: str, email: str | None, name: str | None) -> str:
    """An HS256 access token for a local account, signed with ``own_signing_key``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "email": email,
        "name": name,
        "iat": now,
        "exp": now + settings.access_token_ttl,
        "token_use": OWN_TOKEN_USE,
    }
    if settings.hs256_issuer:
        claims["iss"] = settings.hs256_issuer
    if settings.hs256_audience:
        claims["aud"] = settings.hs256_audience
    return jwt.encode(
        claims,
        own_signing_key(settings.secret),
        algorithm="HS256",
        headers={"kid": OWN_KEY_ID},
    )


class TokenVerifier:
    """Checks a bearer token against the configured sources and returns its user."""

    def __init__(
        self,
        settings: Settings,
        jwks: JwksCache | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        self.settings = settings
        self.algorithms = settings.jwt_algorithms
        self.jwks = jwks
        if jwks is None and settings.jwks_url:
            self.jwks = JwksCache(
                settings.jwks_url,
                settings.jwks_refresh_interval,
                algorithms=settings.jwt_algorithms,
            )
        self.sessions = sessions
        self.own_key = own_signing_key(settings.secret)
        # token -> (user, remembered until, kid of the JWKS key that verified it)
        self._cache: dict[str, tuple[AuthUser, int, str | None]] = {}
        if self.jwks is not None:
            self.jwks.on_withdrawn(self.forget_kids)

    async def verify(self, token: str) -> AuthUser:
        """The token's user; raises ``InvalidToken`` (or ``JwksUnavailable``,
        ``SessionStoreUnavailable``).

        A JWT has exactly two dots; Better Auth's session tokens have none, and
        their signed cookie form one, so anything else goes to the session
        store when there is one (``auth/better_auth_sessions.py``).

        A token verified once is remembered until it expires (with the same
        leeway), keyed by its exact text: clients send the same token with
        every request, and checking its signature is the costliest step of
        authentication. Refused tokens are never remembered.
        Tokens verified with a JWKS key are forgotten when the JWKS withdraws
        that key, and checked afresh once the keys are due for a refresh.
        The cache is a dict rather than ``functools.lru_cache``: each entry
        has its own expiry, and entries are dropped by the key that verified them.
        """
        if self.sessions is not None and token.count(".") != 2:
            return await self.sessions.user_for(token)
        cached = self._cache.get(token)
        if cached is not None:
            user, expires_at, kid = cached
            fresh = kid is None or self.jwks is None or not self.jwks.stale()
            if fresh and time.time() <= expires_at:
                return user
            self._cache.pop(token, None)
        user, kid = await self._verify(token)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)), None)
        expires_at = int(user.claims["exp"]) + LEEWAY_SECONDS
        self._cache[token] = (user, expires_at, kid)
        return user

    def forget_kids(self, kids: frozenset[str]) -> None:
        """Drop remembered tokens verified with these (withdrawn) JWKS keys."""
        for token in [t for t, (_, _, kid) in self._cache.items() if kid in kids]:
            del self._cache[token]

    async def _verify(self, token: str) -> tuple[AuthUser, str | None]:
        """The token's user, and the kid of the JWKS key that verified it (None for HS256)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("token over 8 KiB", "too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"not a JWT: {exc}", "not a JWT") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise InvalidToken(f"algorithm {algorithm!r} not allowed", "algorithm not allowed")

        key: Any
        required = ["exp", "sub"]
        own = False
        jwks_kid: str | None = None
        if algorithm == "HS256":
            # The kid chooses the key, and each key has one purpose: ours, or the
            # frontend's (the secret itself), which only a frontend mode accepts.
            own = header.get("kid") == OWN_KEY_ID
            if own:
                key = self.own_key
                required.append("token_use")
            elif self.settings.frontend_hs256:
                key = self.settings.secret
            else:
                raise InvalidToken(
                    "an HS256 token not issued here (JWT_FRONTEND_HS256 is off)",
                    "HS256 tokens from the frontend are not accepted",
                )
            issuer, audience = self.settings.hs256_issuer, self.settings.hs256_audience
        else:
            kid = header.get("kid")
            if not isinstance(kid, str) or self.jwks is None:
                raise InvalidToken("asymmetric token without a kid", "unknown key")
            key = await self.jwks.key_for(kid)
            if key is None:
                raise InvalidToken(f"unknown kid {kid[:64]!r}", "unknown key")
            jwks_kid = kid
            required.append("iat")
            issuer, audience = self.settings.jwks_issuer, self.settings.jwks_audience

        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                leeway=LEEWAY_SECONDS,
                issuer=issuer,
                audience=audience,
                options={
                    "require": required,
                    "verify_aud": audience is not None,
                    "verify_iss": issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired", "expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}", refusal(exc)) from None

        if int(claims["exp"]) > MAX_EXPIRY:  # PyJWT checked that int() takes it
            raise InvalidToken("exp after year 9999", "bad expiry")
        if own and claims["token_use"] != OWN_TOKEN_USE:
            raise InvalidToken("our key, but not an access token", "not an access token")
        if not own and algorithm == "HS256" and BETTER_AUTH_INTERNAL_CLAIMS & claims.keys():
            raise InvalidToken(
                "one of Better Auth's own tokens (cookie cache or verification)",
                "not an access token",
            )
        user = AuthUser(
            id=checked_subject(claims.get("sub")),
            email=optional_text(claims.get("email"), 254),
            name=optional_text(claims.get("name"), 100),
            claims=claims,
        )
        return user, jwks_kid


def refusal(exc: jwt.PyJWTError) -> str:
    """The client's short reason for what PyJWT refused (never its message: it may quote claims)."""
    for kind, why in (
        (jwt.ExpiredSignatureError, "expired"),
        (jwt.InvalidSignatureError, "bad signature"),
        (jwt.InvalidIssuerError, "wrong issuer"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.MissingRequiredClaimError, "missing claim"),
        (jwt.exceptions.InvalidSubjectError, "bad subject"),
        (jwt.ImmatureSignatureError, "not yet valid"),
        (jwt.InvalidAlgorithmError, "algorithm not allowed"),
        (jwt.DecodeError, "not a JWT"),
    ):
        if isinstance(exc, kind):
            return why
    return "bad claim"  # iat or jti of the wrong type, and whatever PyJWT adds later
