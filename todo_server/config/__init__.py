"""Settings, read once from the environment and validated at start-up.

This is the only module that reads ``os.environ``. Every setting is declared once,
in ``SETTINGS``: its name, default, parser and one line of help. Loading reads the
defaults and parsers from there; the README's configuration table and
``.env.example`` are generated from it (``python -m todo_server.config --write``),
and the tests fail when either is stale.

A missing or malformed value raises ``ConfigError`` naming the variable, so the
command line can stop with one clear line instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from todo_server.web.http_protocol import ConnectionLimits

#: Secrets that ``run.sh`` generates for local use start with this prefix, so
#: production can recognise and refuse them.
GENERATED_SECRET_PREFIX = "generated-local-only-"

ENVIRONMENTS = ("development", "staging", "production")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: standard: the contract (list envelope, 204 on DELETE); compatible: what
#: existing frontends expect (list as a bare array, DELETE answers the task).
API_DIALECTS = ("standard", "compatible")

#: HS256 is verified with BETTER_AUTH_SECRET; the others only with keys from the JWKS.
SHARED_SECRET_ALGORITHMS = ("HS256",)
#: Secrets copied from examples (ours, Better Auth's docs, common tutorials).
KNOWN_PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me-to-a-long-random-secret-of-32-characters-or-more",
        "better-auth-secret-12345678901234567890",
        "your-secret-key-here-at-least-32-characters",
        "your-super-secret-key-change-this-in-production",
        "supersecretkeysupersecretkeysupersecretkey",
        "a-string-secret-at-least-256-bits-long",
    }
)
JWKS_ALGORITHMS = (
    "EdDSA",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)

#: Role names the migrations may grant to without quoting troubles.
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: A looked-up session may be remembered at most this long (README: opaque session tokens).
MAX_SESSION_CACHE_TTL = 60.0


@dataclass(frozen=True)
class Setting:
    """One environment variable, declared once: loading, README and .env.example read it."""

    name: str
    #: The value used when unset, as an operator would write it; None when the setting is
    #: required or its default depends on other settings (``shown_default`` then says how).
    default: str | None
    #: ``(variable, stripped text) -> value``; raises ConfigError naming the variable.
    parse: Callable[[str, str], Any]
    #: One line for people: the README table's "meaning" (Markdown).
    help: str
    #: The README's default column, when it is not just ``default``.
    shown_default: str | None = None
    #: What .env.example shows, commented out, for a setting without a plain default.
    example: str | None = None

    def read(self, env: Mapping[str, str]) -> Any:
        """The parsed value; unset, the parsed default, or None without one."""
        text = _get(env, self.name)
        if text is None:
            text = self.default
        return None if text is None else self.parse(self.name, text)


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The stripped value, or None when unset or blank."""
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


# Parsers: each takes the variable's name (for the error) and its stripped text.


def _text(name: str, text: str) -> str:
    return text


def _whole(minimum: int, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise ConfigError(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(name, f"must be at most {maximum}, got {value}")
        return value

    return parse


def _seconds(*, allow_zero: bool, maximum: float | None = None) -> Callable[[str, str], float]:
    def parse(name: str, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(name, f"must be a number of seconds, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise ConfigError(name, f"must be a finite, non-negative number, got {text!r}")
        if value == 0 and not allow_zero:
            raise ConfigError(name, "must be greater than 0")
        if maximum is not None and value > maximum:
            raise ConfigError(name, f"must be at most {maximum:g}, got {text!r}")
        return value

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        value = text.lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


def _switch(name: str, text: str) -> bool:
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise ConfigError(name, f"must be on or off, got {text!r}")


def _prepare_threshold(name: str, text: str) -> int | None:
    return None if text.lower() == "none" else _whole(0)(name, text)


def _role_name(name: str, text: str) -> str:
    if not ROLE_NAME.fullmatch(text):
        raise ConfigError(name, "must be a plain role name: lowercase letters, digits and _")
    return text


def _origins(name: str, text: str) -> tuple[str, ...]:
    origins = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(name, f"{origin!r} is not an origin like https://app.example.com")
    return origins


def _trusted_proxies(name: str, text: str) -> tuple[str, ...]:
    """Addresses or networks of proxies trusted to report the client's address."""
    proxies = tuple(part.strip() for part in text.split(",") if part.strip())
    for proxy in proxies:
        if proxy == "*":
            continue
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(name, f"{proxy!r} is not an IP address or network (or *)") from None
    return proxies


def _identifier(name: str, text: str) -> str:
    """One SQL identifier as Better Auth's adapters spell it (quoted where it is used)."""
    if not text or len(text.encode()) > 63 or any(ord(c) < 0x20 or c == "." for c in text):
        raise ConfigError(name, f"{text!r} is not a table or column name")
    return text


def _table(name: str, text: str) -> tuple[str, ...]:
    parts = text.split(".")
    if len(parts) > 2:
        raise ConfigError(name, "must be a table name or schema.table")
    return tuple(_identifier(name, part) for part in parts)


def _columns(name: str, text: str) -> tuple[str, str, str]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3:
        raise ConfigError(name, f"must name three columns, like {SETTINGS_BY_NAME[name].default}")
    first, second, third = (_identifier(name, part) for part in parts)
    return first, second, third


#: Every setting, in the README's order. The README's configuration table and
#: .env.example are generated from this (``python -m todo_server.config --write``).
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        None,
        _text,
        "PostgreSQL URL, `postgresql://user:pass@host:port/db`",
        shown_default="(required; `./run.sh` supplies a local one)",
        example="postgresql://todo:change-me@localhost:5432/todo",
    ),
    Setting(
        "MIGRATION_DATABASE_URL",
        None,
        _text,
        (
            "URL `todo-server migrate` uses instead of `DATABASE_URL`: the schema owner's "
            "credentials"
        ),
        shown_default="(`DATABASE_URL`)",
        example="postgresql://owner:secret@localhost:5432/todo",
    ),
    Setting(
        "DB_RUNTIME_ROLE",
        "todo_app",
        _role_name,
        (
            "The role the service connects as (`DATABASE_URL`'s user); `migrate` grants it what "
            "it needs (see Deploy: Roles)"
        ),
    ),
    Setting(
        "MIGRATION_LOCK_TIMEOUT",
        "60",
        _seconds(allow_zero=False),
        (
            "Seconds `migrate` waits for another run's lock before giving up (exit 1, naming the "
            "holder)"
        ),
    ),
    Setting(
        "BETTER_AUTH_SECRET",
        None,
        _text,
        "Shared HS256 secret, at least 32 characters. Production refuses a generated one.",
        shown_default="(required; `./run.sh` generates one in `.data/secret`)",
    ),
    Setting(
        "ALLOWED_ORIGINS",
        "http://localhost:3000",
        _origins,
        "Comma-separated CORS origins. Production refuses `*`.",
    ),
    Setting(
        "ENVIRONMENT",
        "development",
        _one_of(ENVIRONMENTS),
        "`development`, `staging` or `production`",
    ),
    Setting("HOST", "127.0.0.1", _text, "Address to listen on"),
    Setting("PORT", "8000", _whole(1, 65535), "Port to listen on"),
    Setting(
        "WORKERS",
        "1",
        _whole(1, 64),
        "Server processes (uvicorn workers), about one per core; each has its own pool",
    ),
    Setting(
        "MAX_REQUEST_HEAD_BYTES",
        "16384",
        _whole(1024, 1024 * 1024),
        (
            "Most bytes of request line and headers; more get 431 and the connection is closed, "
            "before the bytes are buffered"
        ),
    ),
    Setting(
        "HEAD_TIMEOUT",
        "10",
        _seconds(allow_zero=False, maximum=3600),
        (
            "Seconds a client may take to send a request head (from its first byte, or from "
            "connecting); then 408 and close; a connection that sent nothing is just closed"
        ),
    ),
    Setting(
        "BODY_TIMEOUT",
        "30",
        _seconds(allow_zero=False, maximum=3600),
        "Seconds a request body may stall between two chunks; then 408 and close",
    ),
    Setting(
        "MAX_CONNECTIONS",
        "1000",
        _whole(1),
        "Open connections per worker; more get 503 with `Retry-After` and are closed",
    ),
    Setting(
        "SHUTDOWN_TIMEOUT",
        "10",
        _seconds(allow_zero=True, maximum=3600),
        "Seconds in-flight requests get after SIGTERM; then the process exits anyway",
    ),
    Setting("DB_POOL_MIN", "2", _whole(0), "Connections the pool keeps open"),
    Setting(
        "DB_POOL_MAX",
        "10",
        _whole(1),
        (
            "Most connections the pool opens. Keep it small: on 2 cores, 64 connections measured "
            "35-46% slower than 16."
        ),
    ),
    Setting(
        "DB_POOL_TIMEOUT",
        "5",
        _seconds(allow_zero=False),
        "Seconds to wait for a connection; longer becomes 503 with `Retry-After`",
    ),
    Setting(
        "DB_POOL_MAX_WAITING",
        "500",
        _whole(1),
        (
            "Requests that may wait for a connection at once; beyond that, 503 with `Retry-After` "
            "at once instead of queueing"
        ),
    ),
    Setting(
        "DB_POOL_MAX_PER_USER",
        "4",
        _whole(1),
        (
            "Pool connections one user's task requests may hold at once, per process; their "
            "further requests wait up to `DB_POOL_TIMEOUT` for one of their own, then get 429 "
            "with `Retry-After`, so one user can never take the whole pool"
        ),
    ),
    Setting(
        "DB_STATEMENT_TIMEOUT",
        "5",
        _seconds(allow_zero=True, maximum=2147483),
        (
            "Seconds one statement may run (server-side `statement_timeout`; `0` = no limit; at "
            "most 2147483, PostgreSQL's limit); past it: 503 `database_timeout`"
        ),
    ),
    Setting(
        "DB_PGBOUNCER",
        "off",
        _one_of(("off", "transaction")),
        (
            "`transaction` when `DATABASE_URL` points at a PgBouncer in transaction pooling: "
            "prepared statements off, `statement_timeout` and `TimeZone` kept as the role's "
            "defaults (see Deploy)"
        ),
    ),
    Setting(
        "DB_PREPARE_THRESHOLD",
        "5",
        _prepare_threshold,
        (
            "Runs of a statement on one connection before it is prepared server-side; `none` "
            "disables it (PgBouncer in transaction mode)"
        ),
        shown_default="`5`; `none` with `DB_PGBOUNCER=transaction`",
    ),
    Setting(
        "ACCESS_TOKEN_TTL",
        "86400",
        _whole(60, 30 * 86400),
        "Seconds a token from `/auth/login` or `/auth/register` lasts (60 s to 30 days)",
    ),
    Setting(
        "JWT_ISSUER",
        None,
        _text,
        (
            "Default of `JWT_HS256_ISSUER` and `JWT_JWKS_ISSUER`: set alone, every JWT must have "
            "this `iss` (its meaning before the per-source settings; see Authentication: Issuer "
            "and audience)"
        ),
        shown_default="(unset)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_AUDIENCE",
        None,
        _text,
        (
            "Default of `JWT_HS256_AUDIENCE` and `JWT_JWKS_AUDIENCE`: set alone, every JWT must "
            "have this `aud`"
        ),
        shown_default="(unset)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_HS256_ISSUER",
        None,
        _text,
        (
            "When set: shared-secret (HS256) tokens, a frontend's and this service's own, must "
            "have this `iss`, and issued tokens carry it"
        ),
        shown_default="(`JWT_ISSUER`)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_HS256_AUDIENCE",
        None,
        _text,
        "When set: HS256 tokens must have this `aud`, and issued tokens carry it",
        shown_default="(`JWT_AUDIENCE`)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_JWKS_ISSUER",
        None,
        _text,
        (
            "The `iss` tokens verified with the JWKS must have. A URL counts by its origin, as "
            "Better Auth writes it (`https://app.example.com/myapp/` is "
            "`https://app.example.com`; start-up says so when that changed it); `any` turns the "
            "check off (logged). Needs `JWT_JWKS_URL`"
        ),
        shown_default="(`JWT_ISSUER`, else `JWT_JWKS_URL`'s origin)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_JWKS_AUDIENCE",
        None,
        _text,
        "The `aud` of JWKS tokens, likewise",
        shown_default="(`JWT_AUDIENCE`, else `JWT_JWKS_URL`'s origin)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_FRONTEND_HS256",
        None,
        _switch,
        (
            "Whether HS256 tokens a frontend mints with `BETTER_AUTH_SECRET` are accepted. Tokens "
            "this service issues are signed with a key of their own and accepted either way"
        ),
        shown_default="`on` without `JWT_JWKS_URL`, `off` with it",
        example="on",
    ),
    Setting(
        "JWT_JWKS_URL",
        None,
        _text,
        (
            "JWKS of a Better Auth frontend, e.g. `https://app.example.com/api/auth/jwks` (https "
            "in production)"
        ),
        shown_default="(unset)",
        example="https://app.example.com/api/auth/jwks",
    ),
    Setting(
        "JWT_ALGORITHMS",
        None,
        _text,
        (
            "Accepted token algorithms: `HS256` (shared secret) and any of `EdDSA`, `RS256`, "
            "`RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384`, `ES512` (JWKS). "
            "Without `HS256`, local accounts are disabled (403)."
        ),
        shown_default="`HS256`; `EdDSA,HS256` when `JWT_JWKS_URL` is set",
        example="EdDSA,HS256",
    ),
    Setting(
        "JWT_JWKS_REFRESH_INTERVAL",
        "30",
        _seconds(allow_zero=True),
        (
            "After a JWKS fetch that did not list the unknown key id it was made for, seconds "
            "before another unknown id may fetch again (the first unknown id after any other "
            "fetch fetches at once)"
        ),
    ),
    Setting(
        "BETTER_AUTH_DATABASE_URL",
        None,
        _text,
        (
            "Better Auth's database, where opaque session tokens (bearers that are not JWTs) are "
            "looked up: a `postgresql://` URL with read-only credentials, or `same` for "
            "`DATABASE_URL`'s database and role (see Authentication: Better Auth session tokens)"
        ),
        shown_default="(unset: opaque tokens are refused)",
        example="postgresql://todo_sessions:secret@localhost:5432/better_auth",
    ),
    Setting(
        "BETTER_AUTH_SESSION_TABLE",
        "session",
        _table,
        "Better Auth's session table; `schema.table` allowed",
    ),
    Setting(
        "BETTER_AUTH_SESSION_COLUMNS",
        "token,userId,expiresAt",
        _columns,
        (
            "Its token, user id and expiry columns, in that order (e.g. "
            "`token,user_id,expires_at` for a snake_case schema)"
        ),
    ),
    Setting(
        "BETTER_AUTH_USER_TABLE", "user", _table, "Better Auth's user table; `schema.table` allowed"
    ),
    Setting(
        "BETTER_AUTH_USER_COLUMNS",
        "id,email,name",
        _columns,
        "Its id, email and name columns, in that order",
    ),
    Setting(
        "BETTER_AUTH_SESSION_CACHE_TTL",
        "60",
        _seconds(allow_zero=True, maximum=MAX_SESSION_CACHE_TTL),
        (
            "Seconds a session found is remembered per process (0 to 60; never past its expiry): "
            "a signed-out or revoked session keeps working at most this long"
        ),
    ),
    Setting(
        "LOGIN_MAX_FAILURES",
        "10",
        _whole(1),
        "Failed logins per email within 15 minutes before further attempts get 429",
    ),
    Setting(
        "LOGIN_MAX_FAILURES_PER_IP",
        "50",
        _whole(1),
        "Failed logins per client address within 15 minutes before 429",
    ),
    Setting(
        "REGISTRATIONS_PER_IP",
        "10",
        _whole(1),
        "Registrations per client address within 15 minutes before 429",
    ),
    Setting(
        "TRUSTED_PROXIES",
        None,
        _trusted_proxies,
        (
            "Comma-separated proxy addresses or networks (`*` for any) whose "
            "`X-Forwarded-For`/`X-Forwarded-Proto` are believed; unset, the client address is the "
            "connection's peer"
        ),
        shown_default="(none)",
        example="10.0.0.0/8",
    ),
    Setting(
        "MAX_TASKS_PER_USER",
        "10000",
        _whole(1),
        "Most live (not deleted) tasks one user may have; the next create gets 422",
    ),
    Setting(
        "MAX_DELETED_TASKS_PER_USER",
        "10000",
        _whole(1),
        (
            "Most deleted tasks kept for restore per user; the next delete gets 422 until some "
            "are purged"
        ),
    ),
    Setting(
        "TASK_RETENTION_DAYS",
        "30",
        _whole(1, 3650),
        "Days a deleted task can be restored; then it is purged for good",
    ),
    Setting(
        "PURGE_INTERVAL",
        "300",
        _seconds(allow_zero=True),
        (
            "Seconds between the service's purges of deleted tasks past retention, expired "
            "idempotency keys and throttling rows (`0` = never; run `todo-server purge` instead)"
        ),
    ),
    Setting("LOG_LEVEL", "info", _one_of(LOG_LEVELS), "`debug`, `info`, `warning` or `error`"),
    Setting(
        "LOG_FORMAT",
        None,
        _one_of(LOG_FORMATS),
        "`text` or `json` (one JSON object per line)",
        shown_default="`json` in production, else `text`",
        example="text",
    ),
    Setting(
        "API_DIALECT",
        "standard",
        _one_of(API_DIALECTS),
        (
            "`standard` (the contract: lists as `{tasks, count, next_cursor}`, DELETE answers "
            "204) or `compatible` (lists as a bare JSON array with paging in `Link` and `X-Count` "
            "headers, DELETE answers 200 with the task), for existing frontends: see [Using an "
            "existing frontend](#using-an-existing-frontend)"
        ),
    ),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _read(env: Mapping[str, str], name: str) -> Any:
    """The setting's parsed value or declared default (None when it has none)."""
    return SETTINGS_BY_NAME[name].read(env)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class DatabaseSettings:
    """What the pool and the migration runner need; no secret leaks through repr.

    No defaults here: they are declared once, in ``SETTINGS``, and loading supplies them.
    """

    url: str = field(repr=False)
    pool_min: int
    pool_max: int
    pool_timeout: float
    pool_max_waiting: int
    pool_max_per_user: int
    statement_timeout: float
    prepare_threshold: int | None
    pgbouncer: bool  # behind a transaction-pooling PgBouncer

    @property
    def display_url(self) -> str:
        """The URL with any password replaced, safe for logs."""
        return redact_url(self.url)


@dataclass(frozen=True)
class SessionStoreSettings:
    """Where Better Auth keeps its sessions, for opaque bearer tokens; no secret in repr."""

    url: str = field(repr=False)
    session_table: tuple[str, ...] = ("session",)
    token_column: str = "token"
    user_id_column: str = "userId"
    expires_at_column: str = "expiresAt"
    user_table: tuple[str, ...] = ("user",)
    user_key_column: str = "id"
    email_column: str = "email"
    name_column: str = "name"
    cache_ttl: float = MAX_SESSION_CACHE_TTL
    pool_timeout: float = 5.0
    pool_max_waiting: int = 500

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs, validated; the defaults are ``SETTINGS``'s."""

    database: DatabaseSettings
    secret: str = field(repr=False)
    allowed_origins: tuple[str, ...]
    environment: str
    host: str
    port: int
    workers: int
    max_request_head_bytes: int
    head_timeout: float
    body_timeout: float
    max_connections: int
    shutdown_timeout: float
    log_level: str
    log_format: str
    access_token_ttl: int
    # iss/aud per token source; each None means that claim is not checked.
    hs256_issuer: str | None
    hs256_audience: str | None
    jwks_issuer: str | None
    jwks_audience: str | None
    frontend_hs256: bool
    #: What loading decided that an operator should hear about, logged at start-up.
    notes: tuple[str, ...] = field(compare=False)
    jwks_url: str | None
    jwt_algorithms: tuple[str, ...]
    jwks_refresh_interval: float
    #: None: opaque (non-JWT) bearer tokens are refused, as before the setting existed.
    session_store: SessionStoreSettings | None
    login_max_failures: int
    login_max_failures_per_ip: int
    registrations_per_ip: int
    trusted_proxies: tuple[str, ...]
    max_tasks_per_user: int
    max_deleted_tasks_per_user: int
    task_retention_days: int
    purge_interval: float
    api_dialect: str

    @property
    def compatible(self) -> bool:
        """Whether the compatible dialect is on (README: Using an existing frontend)."""
        return self.api_dialect == "compatible"

    @property
    def accepts_shared_secret_tokens(self) -> bool:
        """Whether HS256 tokens (ours and a frontend's) are accepted at all."""
        return "HS256" in self.jwt_algorithms

    @property
    def connection_limits(self) -> ConnectionLimits:
        """What the HTTP protocol enforces (``web.http_protocol``)."""
        from todo_server.web.http_protocol import ConnectionLimits

        return ConnectionLimits(
            max_head_bytes=self.max_request_head_bytes,
            head_timeout=self.head_timeout,
            body_timeout=self.body_timeout,
            max_connections=self.max_connections,
        )

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


#: Connection parameters whose values are secrets.
SECRET_CONNINFO_KEYS = frozenset({"password", "sslpassword"})
REDACTED = "***"


def redact_url(conninfo: str) -> str:
    """The connection string with every secret replaced by ``***``, safe for logs.

    libpq takes a password in the URL's userinfo, as a ``password=`` query
    parameter, or as ``password=`` in a key=value string; the string is parsed
    as libpq parses it (psycopg's ``conninfo_to_dict``), so each form is found.
    URLs keep their shape; anything that does not parse is not shown at all.
    """
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "(unparseable connection string)"
    if not SECRET_CONNINFO_KEYS & params.keys():
        return conninfo
    parts = urlsplit(conninfo)
    if parts.scheme not in ("postgresql", "postgres"):
        return make_conninfo(
            "", **{k: REDACTED if k in SECRET_CONNINFO_KEYS else v for k, v in params.items()}
        )
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{hosts}"
    query = urlencode(
        [
            (key, REDACTED if key in SECRET_CONNINFO_KEYS else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/:*",
    )
    redacted = parts._replace(netloc=netloc, query=query).geturl()
    # What remains must not hold a secret whatever the parsers disagree on.
    left = conninfo_to_dict(redacted)
    if any(left.get(key) not in (None, REDACTED) for key in SECRET_CONNINFO_KEYS):
        return "(connection string hidden)"
    return redacted


def load_database_settings(environ: Mapping[str, str] | None = None) -> DatabaseSettings:
    """Read the database settings; enough for ``migrate``."""
    env = os.environ if environ is None else environ
    url = _get(env, "DATABASE_URL")
    if url is None:
        raise ConfigError("DATABASE_URL", "is required (a postgresql:// URL)")
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError("DATABASE_URL", "must be a postgresql:// URL")
    pool_min = _read(env, "DB_POOL_MIN")
    pool_max = _read(env, "DB_POOL_MAX")
    if pool_max < pool_min:
        raise ConfigError("DB_POOL_MAX", f"must be at least DB_POOL_MIN ({pool_min})")
    threshold_text = _get(env, "DB_PREPARE_THRESHOLD")
    pgbouncer = _read(env, "DB_PGBOUNCER") == "transaction"
    if pgbouncer and threshold_text is not None and threshold_text.lower() != "none":
        # PgBouncer 1.x in transaction mode runs the next transaction on any
        # server connection, where a prepared statement does not exist.
        raise ConfigError(
            "DB_PREPARE_THRESHOLD", "must be none (or unset) with DB_PGBOUNCER=transaction"
        )
    prepare_threshold = None if pgbouncer else _read(env, "DB_PREPARE_THRESHOLD")
    return DatabaseSettings(
        url=url,
        pool_min=pool_min,
        pool_max=pool_max,
        pool_timeout=_read(env, "DB_POOL_TIMEOUT"),
        pool_max_waiting=_read(env, "DB_POOL_MAX_WAITING"),
        pool_max_per_user=_read(env, "DB_POOL_MAX_PER_USER"),
        # PostgreSQL's statement_timeout is an int of milliseconds (hence the setting's
        # maximum): more would fail on every new connection, or overflow converting to ms.
        statement_timeout=_read(env, "DB_STATEMENT_TIMEOUT"),
        prepare_threshold=prepare_threshold,
        pgbouncer=pgbouncer,
    )


@dataclass(frozen=True)
class MigrationSettings:
    """What ``todo-server migrate`` needs; no secret leaks through repr."""

    url: str = field(repr=False)
    lock_timeout: float = 60.0
    runtime_role: str = "todo_app"

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


def load_migration_settings(environ: Mapping[str, str] | None = None) -> MigrationSettings:
    """The schema owner's URL (MIGRATION_DATABASE_URL, else DATABASE_URL) and the lock wait."""
    env = os.environ if environ is None else environ
    name = "MIGRATION_DATABASE_URL" if _get(env, "MIGRATION_DATABASE_URL") else "DATABASE_URL"
    url = _get(env, name)
    if url is None:
        raise ConfigError("DATABASE_URL", "is required (a postgresql:// URL)")
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError(name, "must be a postgresql:// URL")
    return MigrationSettings(
        url=url,
        lock_timeout=_read(env, "MIGRATION_LOCK_TIMEOUT"),
        runtime_role=_read(env, "DB_RUNTIME_ROLE"),
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting the server needs."""
    env = os.environ if environ is None else environ
    database = load_database_settings(env)

    environment = _read(env, "ENVIRONMENT")
    production = environment == "production"

    secret = _get(env, "BETTER_AUTH_SECRET")
    if secret is None:
        raise ConfigError("BETTER_AUTH_SECRET", "is required (at least 32 characters)")
    if len(secret) < 32:
        raise ConfigError("BETTER_AUTH_SECRET", "must be at least 32 characters")
    if production and secret.startswith(GENERATED_SECRET_PREFIX):
        raise ConfigError(
            "BETTER_AUTH_SECRET", "is a generated local secret; production needs its own"
        )

    origins = _read(env, "ALLOWED_ORIGINS")
    if production and "*" in origins:
        raise ConfigError("ALLOWED_ORIGINS", "'*' is refused in production; list the origins")

    jwks_url = _get(env, "JWT_JWKS_URL")
    if jwks_url is not None:
        parts = urlsplit(jwks_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("JWT_JWKS_URL", "must be an http(s) URL")
        if production and parts.scheme != "https":
            raise ConfigError("JWT_JWKS_URL", "must use https in production")

    algorithms = _algorithms(env, jwks_url)
    notes: list[str] = []
    issuers = _issuers_and_audiences(env, jwks_url, algorithms, notes)
    frontend_hs256 = _read(env, "JWT_FRONTEND_HS256")
    if frontend_hs256 is None:
        frontend_hs256 = jwks_url is None
    if frontend_hs256 and "HS256" not in algorithms:
        raise ConfigError("JWT_FRONTEND_HS256", "is on, but JWT_ALGORITHMS leaves out HS256")
    if frontend_hs256 and jwks_url is not None:
        notes.append(
            "JWT_FRONTEND_HS256=on with a JWKS: HS256 tokens signed with BETTER_AUTH_SECRET are"
            " accepted too, which Better Auth's own cookie-cache and verification tokens also are"
            " (those are refused by their claims)"
        )
    if secret.lower() in KNOWN_PLACEHOLDER_SECRETS or len(set(secret)) < 6:
        notes.append(
            "BETTER_AUTH_SECRET looks like a placeholder from an example; anyone who has read"
            " that example can mint tokens: generate one (openssl rand -base64 32)"
        )

    return Settings(
        database=database,
        secret=secret,
        allowed_origins=origins,
        environment=environment,
        host=_read(env, "HOST"),
        port=_read(env, "PORT"),
        workers=_read(env, "WORKERS"),
        max_request_head_bytes=_read(env, "MAX_REQUEST_HEAD_BYTES"),
        head_timeout=_read(env, "HEAD_TIMEOUT"),
        body_timeout=_read(env, "BODY_TIMEOUT"),
        max_connections=_read(env, "MAX_CONNECTIONS"),
        shutdown_timeout=_read(env, "SHUTDOWN_TIMEOUT"),
        log_level=_read(env, "LOG_LEVEL"),
        log_format=_read(env, "LOG_FORMAT") or ("json" if production else "text"),
        access_token_ttl=_read(env, "ACCESS_TOKEN_TTL"),
        **issuers,
        frontend_hs256=frontend_hs256,
        notes=tuple(notes),
        jwks_url=jwks_url,
        jwt_algorithms=algorithms,
        jwks_refresh_interval=_read(env, "JWT_JWKS_REFRESH_INTERVAL"),
        session_store=_session_store(env, database),
        login_max_failures=_read(env, "LOGIN_MAX_FAILURES"),
        login_max_failures_per_ip=_read(env, "LOGIN_MAX_FAILURES_PER_IP"),
        registrations_per_ip=_read(env, "REGISTRATIONS_PER_IP"),
        trusted_proxies=_read(env, "TRUSTED_PROXIES") or (),
        max_tasks_per_user=_read(env, "MAX_TASKS_PER_USER"),
        max_deleted_tasks_per_user=_read(env, "MAX_DELETED_TASKS_PER_USER"),
        task_retention_days=_read(env, "TASK_RETENTION_DAYS"),
        purge_interval=_read(env, "PURGE_INTERVAL"),
        api_dialect=_read(env, "API_DIALECT"),
    )


def _algorithms(env: Mapping[str, str], jwks_url: str | None) -> tuple[str, ...]:
    text = _get(env, "JWT_ALGORITHMS")
    if text is None:
        return ("EdDSA", "HS256") if jwks_url else SHARED_SECRET_ALGORITHMS
    known = {name.lower(): name for name in SHARED_SECRET_ALGORITHMS + JWKS_ALGORITHMS}
    chosen: list[str] = []
    for part in text.split(","):
        name = known.get(part.strip().lower())
        if name is None:
            raise ConfigError(
                "JWT_ALGORITHMS",
                f"{part.strip()!r} is not one of {', '.join(known.values())}",
            )
        if name in JWKS_ALGORITHMS and jwks_url is None:
            raise ConfigError("JWT_ALGORITHMS", f"{name} needs JWT_JWKS_URL to find its keys")
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def _issuers_and_audiences(
    env: Mapping[str, str], jwks_url: str | None, algorithms: tuple[str, ...], notes: list[str]
) -> dict[str, str | None]:
    """The iss/aud each token source must carry.

    JWT_ISSUER and JWT_AUDIENCE were once checked on every token; they are now
    the defaults of both sources, so a deployment that sets only them behaves
    as before, and one that serves two kinds of frontend sets each source's own.

    JWKS tokens come from Better Auth's JWT plugin, which writes
    ``new URL(baseURL).origin`` into both claims: a URL configured for them
    counts by its origin (``https://app.example.com/auth/`` is
    ``https://app.example.com``), and unset they default to the JWKS URL's
    origin, as Better Auth's own do. ``any`` turns the check off.
    """
    issuer, audience = _get(env, "JWT_ISSUER"), _get(env, "JWT_AUDIENCE")
    for name in ("JWT_JWKS_ISSUER", "JWT_JWKS_AUDIENCE"):
        if _get(env, name) is not None and jwks_url is None:
            raise ConfigError(name, "applies to JWKS tokens; set JWT_JWKS_URL too")
    for name in ("JWT_HS256_ISSUER", "JWT_HS256_AUDIENCE"):
        if _get(env, name) is not None and "HS256" not in algorithms:
            raise ConfigError(name, "applies to HS256 tokens, which JWT_ALGORITHMS leaves out")
    jwks: dict[str, str | None] = {"jwks_issuer": None, "jwks_audience": None}
    if jwks_url is not None:
        jwks_origin = url_origin(jwks_url)
        for key, name, fallback in (
            ("jwks_issuer", "JWT_JWKS_ISSUER", issuer),
            ("jwks_audience", "JWT_JWKS_AUDIENCE", audience),
        ):
            given = _get(env, name)
            value = given or fallback
            if value is None:
                jwks[key] = jwks_origin
            elif value.lower() == "any":
                notes.append(f"{name}=any: the {key.split('_')[1]} of JWKS tokens is not checked")
            else:
                origin = url_origin(value)
                if origin is not None and origin != value:
                    source = name if given else name.replace("JWKS_", "")
                    notes.append(
                        f"{source} {value!r} is taken as its origin {origin!r} for JWKS tokens,"
                        " as Better Auth writes it"
                    )
                jwks[key] = origin or value
        if jwks["jwks_issuer"] is not None and jwks["jwks_issuer"] != jwks_origin:
            notes.append(
                f"the JWKS issuer {jwks['jwks_issuer']!r} is not JWT_JWKS_URL's origin"
                f" {jwks_origin!r}: Better Auth writes its base URL's origin; check both"
            )
    return {
        "hs256_issuer": _get(env, "JWT_HS256_ISSUER") or issuer,
        "hs256_audience": _get(env, "JWT_HS256_AUDIENCE") or audience,
        **jwks,
    }


def url_origin(value: str) -> str | None:
    """The origin of an http(s) URL as a browser's ``new URL(value).origin``; None if not one.

    Scheme and host in lower case, the port only when it is not the scheme's default.
    """
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def _session_store(
    env: Mapping[str, str], database: DatabaseSettings
) -> SessionStoreSettings | None:
    """Better Auth's session table, when opaque session tokens are accepted."""
    text = _get(env, "BETTER_AUTH_DATABASE_URL")
    if text is None:
        return None
    if text.lower() == "same":
        url = database.url
    elif urlsplit(text).scheme in ("postgresql", "postgres"):
        url = text
    else:
        raise ConfigError("BETTER_AUTH_DATABASE_URL", "must be a postgresql:// URL or same")
    token, user_id, expires_at = _read(env, "BETTER_AUTH_SESSION_COLUMNS")
    user_key, email, name = _read(env, "BETTER_AUTH_USER_COLUMNS")
    return SessionStoreSettings(
        url=url,
        session_table=_read(env, "BETTER_AUTH_SESSION_TABLE"),
        token_column=token,
        user_id_column=user_id,
        expires_at_column=expires_at,
        user_table=_read(env, "BETTER_AUTH_USER_TABLE"),
        user_key_column=user_key,
        email_column=email,
        name_column=name,
        cache_ttl=_read(env, "BETTER_AUTH_SESSION_CACHE_TTL"),
        pool_timeout=database.pool_timeout,
        pool_max_waiting=database.pool_max_waiting,
    )


# --- The documents derived from SETTINGS -------------------------------------------

README_TABLE_START = (
    "<!-- The settings table is generated from SETTINGS in todo_server/config.py:"
    " edit it there, then run `python -m todo_server.config --write`. -->"
)
README_TABLE_END = "<!-- End of the generated settings table. -->"
ENV_EXAMPLE_HEADER = """\
# Copy to .env for local use; `./run.sh` (serve, setup, migrate) loads it (variables already set
# in the environment win). Plain KEY=VALUE lines. Every setting the server reads is listed here.
# Generated from SETTINGS in todo_server/config.py: edit there, then run
# `python -m todo_server.config --write`.
"""


def shown_default(setting: Setting) -> str:
    """The README's default column for a setting (Markdown)."""
    return setting.shown_default or f"`{setting.default}`"


def readme_table() -> str:
    """The README's configuration table, one row per setting."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {shown_default(s)} | {s.help} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str) -> str:
    """The README text with the table between its markers replaced by ``readme_table()``."""
    start = readme.index(README_TABLE_START) + len(README_TABLE_START)
    end = readme.index(README_TABLE_END, start)
    return f"{readme[:start]}\n\n{readme_table()}\n{readme[end:]}"


def env_example() -> str:
    """The text of .env.example: each setting's help as a comment, then its line.

    A setting with a plain default is written with it, so a copied file changes
    nothing; the others are written commented out, with an example value.
    """
    lines = [ENV_EXAMPLE_HEADER.rstrip("\n")]
    for setting in SETTINGS:
        lines.append("")
        comment = setting.help
        if setting.shown_default is not None:
            comment += f" (default: {setting.shown_default.removeprefix('(').removesuffix(')')})"
        lines += textwrap.wrap(
            _plain(comment),
            width=100,
            initial_indent="# ",
            subsequent_indent="# ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        if setting.default is not None and setting.shown_default is None:
            lines.append(f"{setting.name}={setting.default}")
        else:
            lines.append(f"# {setting.name}={setting.example or setting.default or ''}")
    return "\n".join(lines) + "\n"


def _plain(markdown: str) -> str:
    """Markdown as plain text for a comment: links become their words, code loses its ticks."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown).replace("`", "")


def main(argv: list[str] | None = None) -> int:
    """``python -m todo_server.config``: print or rewrite what is generated from SETTINGS."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m todo_server.config",
        description="The README's settings table and .env.example, generated from SETTINGS.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--readme-table", action="store_true", help="print the README's table")
    what.add_argument("--env-example", action="store_true", help="print .env.example")
    what.add_argument(
        "--write",
        metavar="FOLDER",
        nargs="?",
        const=".",
        help="rewrite FOLDER/README.md's table and FOLDER/.env.example (default: .)",
    )
    args = parser.parse_args(argv)
    if args.readme_table:
        print(readme_table(), end="")
    elif args.env_example:
        print(env_example(), end="")
    else:
        readme = Path(args.write) / "README.md"
        readme.write_text(readme_with_table(readme.read_text()))
        (Path(args.write) / ".env.example").write_text(env_example())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
