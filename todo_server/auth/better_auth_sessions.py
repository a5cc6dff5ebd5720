"""Better Auth's opaque session tokens, looked up in Better Auth's own database.

Without its JWT plugin, a Better Auth frontend holds only a session token: 32
random characters, a row of its ``session`` table, sent to the browser in the
``better-auth.session_token`` cookie as ``token.signature`` (better-call's
``signCookieValue``: HMAC-SHA256 of the token with the secret, standard base64
with padding, the whole value URL-encoded). Either form is accepted as a bearer;
a signature, when present, must match ``BETTER_AUTH_SECRET``.

A token is looked up with one equality query on the token column (Better Auth
creates a unique index on it), through a small pool of this module's own, read
only: by calling ``todo_session_user(token)``, a SECURITY DEFINER function in
Better Auth's database (``BETTER_AUTH_SESSION_LOOKUP=function``, the documented
set-up: the role can verify a token it holds and read no session), or by reading
the tables (``table``). A session found is remembered for at most ``cache_ttl`` seconds and never
past its expiry, so a session Better Auth deleted (sign-out, revocation) stops
opening the API within that time. Unknown and expired tokens are never
remembered. When the database cannot answer, the request gets 503, not 401: the
token may be good.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from todo_server.auth.identity import (
    MAX_EXPIRY,
    AuthUser,
    InvalidToken,
    SessionStoreUnavailable,
    checked_subject,
    optional_text,
)
from todo_server.config import SessionStoreSettings
from todo_server.storage.db import RECONNECT_TIMEOUT_SECONDS, DictConnection, check_if_idle

logger = logging.getLogger("todo_server.sessions")

#: One indexed query per uncached token is cheap, and the cache spares most: a few connections do.
POOL_MIN = 1
POOL_MAX = 4
#: Sessions remembered at once per process; the oldest goes first when full.
CACHE_SIZE = 10_000
#: Longer bearers are refused before any parsing (a signed cookie value is about 80).
MAX_PRESENTED_LENGTH = 1024
#: Better Auth's tokens are 32 letters and digits; ``-`` and ``_`` leave room for
#: custom generators. Anything else never reaches the database.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,255}")
#: 32 bytes of HMAC-SHA256 in base64 (Better Auth's alphabet and padding, or base64url).
SIGNATURE_PATTERN = re.compile(r"[A-Za-z0-9+/_-]{43}=?")

# The expiry is compared as epoch seconds, never as a timestamp against now():
# extract(epoch) of a timestamptz is the instant, and of a timestamp without time
# zone (Better Auth 1.3.x made expiresAt so, and writes the UTC wall clock into it)
# the wall clock read as UTC, so neither depends on the database's TimeZone.
SESSION_LOOKUP_SQL = sql.SQL(
    """
SELECT s.{user_id}::text AS user_id,
       u.{email}::text AS email,
       u.{name}::text AS name,
       extract(epoch FROM s.{expires_at})::float8 AS expires_at,
       (extract(epoch FROM s.{expires_at}) - extract(epoch FROM statement_timestamp()))::float8
           AS expires_in
FROM {session_table} AS s
JOIN {user_table} AS u ON u.{user_key} = s.{user_id}
WHERE s.{token} = %(token)s
"""
)


#: The one-token lookup (deploy/better-auth-session-lookup.sql): its role may call
#: it with a token it holds, and cannot read the session table.
SESSION_FUNCTION = "todo_session_user"
SESSION_FUNCTION_SQL = sql.SQL(
    "SELECT f.user_id, f.email, f.name, f.expires_at, f.expires_in FROM {function}(%(token)s) AS f"
)


def session_lookup_sql(settings: SessionStoreSettings) -> sql.Composed:
    """The lookup: a call of the function, in the session table's schema when that is
    named, or the query with the configured table and column names, quoted as identifiers."""
    if settings.lookup == "function":
        schema = settings.session_table[:-1]
        return SESSION_FUNCTION_SQL.format(function=sql.Identifier(*schema, SESSION_FUNCTION))
    return SESSION_LOOKUP_SQL.format(
        session_table=sql.Identifier(*settings.session_table),
        user_table=sql.Identifier(*settings.user_table),
        token=sql.Identifier(settings.token_column),
        user_id=sql.Identifier(settings.user_id_column),
        expires_at=sql.Identifier(settings.expires_at_column),
        user_key=sql.Identifier(settings.user_key_column),
        email=sql.Identifier(settings.email_column),
        name=sql.Identifier(settings.name_column),
    )


#: What to check when a lookup fails for a reason other than the database being away.
LOOKUP_CHECKS = {
    "function": (
        f"that {SESSION_FUNCTION}(text) exists (deploy/better-auth-session-lookup.sql), in"
        " BETTER_AUTH_SESSION_TABLE's schema, and the role's GRANT EXECUTE on it"
    ),
    "table": (
        "BETTER_AUTH_SESSION_TABLE, BETTER_AUTH_SESSION_COLUMNS, BETTER_AUTH_USER_TABLE,"
        " BETTER_AUTH_USER_COLUMNS and the role's GRANT SELECT"
    ),
}


def session_token(presented: str, secret: bytes) -> str:
    """The session token in a bearer: the raw token, or the signed cookie value, checked.

    The cookie value may come as the browser stores it (URL-encoded) or decoded.
    """
    if len(presented) > MAX_PRESENTED_LENGTH:
        raise InvalidToken("session token too long", "too large")
    value = presented
    if "%" in value:
        try:
            value = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise InvalidToken("session token: bad percent-encoding", "not a JWT") from None
    token, dot, signature = value.rpartition(".")
    if not dot:
        token = value
    if not TOKEN_PATTERN.fullmatch(token):
        raise InvalidToken("neither a JWT nor a session token", "not a JWT")
    if dot and not signature_matches(token, signature, secret):
        raise InvalidToken("session token: bad signature", "bad signature")
    return token


def signature_matches(token: str, signature: str, secret: bytes) -> bool:
    """Whether ``signature`` is Better Auth's cookie signature of ``token``."""
    if not SIGNATURE_PATTERN.fullmatch(signature):
        return False
    given = base64.b64decode(signature[:43].replace("-", "+").replace("_", "/") + "=")
    expected = hmac.new(secret, token.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


class SessionStore:
    """Users of Better Auth session tokens: a bounded, short-lived cache over one query.

    The cache is a dict rather than ``functools.lru_cache``: each entry lives
    only until its own time (``cache_ttl``, or the session's expiry if sooner).
    """

    def __init__(
        self,
        settings: SessionStoreSettings,
        secret: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._secret = secret.encode()
        self._clock = clock
        self._sql = session_lookup_sql(settings)
        self._cache: dict[str, tuple[AuthUser, float]] = {}
        self._pool: AsyncConnectionPool[DictConnection] | None = None
        self.lookups = 0

    async def open(self) -> None:
        """Start the pool without waiting, so the service starts while Better Auth's is down."""
        self._pool = AsyncConnectionPool(
            self.settings.url,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=self.settings.pool_timeout,
            max_waiting=self.settings.pool_max_waiting,
            open=False,
            check=check_if_idle,
            # Unprepared: the database may sit behind any pooler, and the cache
            # spares nearly every lookup anyway.
            kwargs={"autocommit": True, "prepare_threshold": None, "row_factory": dict_row},
            reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
            name="better-auth-sessions",
        )
        await self._pool.open(wait=False)
        logger.info(
            "opaque session tokens are looked up in %s (%s)",
            self.settings.display_url,
            f"{SESSION_FUNCTION}()"
            if self.settings.lookup == "function"
            else ".".join(self.settings.session_table),
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def user_for(self, presented: str) -> AuthUser:
        """The user of a live session; raises ``InvalidToken`` or ``SessionStoreUnavailable``."""
        token = session_token(presented, self._secret)
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None:
            user, valid_until = cached
            if now < valid_until:
                return user
            self._cache.pop(token, None)
        row = await self._lookup(token)
        if row is None:
            raise InvalidToken("unknown session token", "unknown session")
        expires_in = row["expires_in"]
        if expires_in is None or expires_in <= 0:
            raise InvalidToken("session expired", "expired", "Session has expired")
        user = AuthUser(
            id=checked_subject(row["user_id"]),
            email=optional_text(row["email"], 254),
            name=optional_text(row["name"], 100),
            # An 'infinity' expiry comes back as inf, which int() refuses.
            claims={"sub": row["user_id"], "exp": int(min(row["expires_at"], MAX_EXPIRY))},
        )
        ttl = min(self.settings.cache_ttl, expires_in)
        if ttl > 0:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[token] = (user, now + ttl)
        return user

    async def _lookup(self, token: str) -> dict[str, Any] | None:
        pool = self._pool
        if pool is None:
            raise SessionStoreUnavailable("the session store is not open")
        self.lookups += 1
        try:
            async with pool.connection() as conn:
                # The pool bounds the wait for a connection; this bounds the answer,
                # should the database hang mid-query.
                async with asyncio.timeout(self.settings.pool_timeout):
                    cursor = await conn.execute(self._sql, {"token": token})
                    return await cursor.fetchone()
        except (PoolTimeout, psycopg.OperationalError, TimeoutError) as exc:
            logger.warning("Better Auth's database did not answer: %s", type(exc).__name__)
            raise SessionStoreUnavailable(type(exc).__name__) from None
        except psycopg.Error as exc:
            # A wrong table or column name, or a missing GRANT: say which, never the token.
            logger.error(
                "looking up a session failed: %s (SQLSTATE %s); check %s"
                " (docs/authentication.md: Better Auth session tokens)",
                type(exc).__name__,
                exc.sqlstate,
                LOOKUP_CHECKS[self.settings.lookup],
            )
            raise SessionStoreUnavailable(type(exc).__name__) from None
