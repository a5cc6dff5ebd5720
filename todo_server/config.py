"""Settings, read once from the environment and validated at start-up.

This is the only module that reads ``os.environ``. Every setting is listed in
``SETTINGS`` with its default and a one-line description; the README's table and
``.env.example`` are checked against that list by the tests.

A missing or malformed value raises ``ConfigError`` naming the variable, so the
command line can stop with one clear line instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from todo_server.http_limits import ConnectionLimits

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

#: name -> (default shown in the docs, description). Order is the README's order.
SETTINGS: dict[str, tuple[str, str]] = {
    "DATABASE_URL": ("(required)", "PostgreSQL URL, postgresql://user:pass@host:port/db"),
    "MIGRATION_DATABASE_URL": (
        "(DATABASE_URL)",
        "URL `migrate` uses instead of DATABASE_URL: the schema owner's credentials",
    ),
    "MIGRATION_LOCK_TIMEOUT": (
        "60",
        "Seconds `migrate` waits for another run's lock before giving up (exit 1)",
    ),
    "DB_RUNTIME_ROLE": (
        "todo_app",
        "Role the service connects as; migrations grant it what it needs (README: Roles)",
    ),
    "BETTER_AUTH_SECRET": ("(required)", "Shared HS256 secret, at least 32 characters"),
    "ALLOWED_ORIGINS": ("http://localhost:3000", "Comma-separated CORS origins"),
    "ENVIRONMENT": ("development", "development, staging or production"),
    "HOST": ("127.0.0.1", "Address to listen on"),
    "PORT": ("8000", "Port to listen on"),
    "WORKERS": ("1", "Server processes; about one per core"),
    "MAX_REQUEST_HEAD_BYTES": ("16384", "Most bytes of request line and headers; more get 431"),
    "HEAD_TIMEOUT": ("10", "Seconds a client may take to send a request head; then 408"),
    "BODY_TIMEOUT": ("30", "Seconds a request body may stall between two chunks; then 408"),
    "MAX_CONNECTIONS": ("1000", "Open connections per worker; more get 503 and are closed"),
    "SHUTDOWN_TIMEOUT": ("10", "Seconds in-flight requests get after SIGTERM before the exit"),
    "DB_POOL_MIN": ("2", "Connections the pool keeps open"),
    "DB_POOL_MAX": ("10", "Most connections the pool opens"),
    "DB_POOL_TIMEOUT": ("5", "Seconds to wait for a connection before answering 503"),
    "DB_POOL_MAX_WAITING": ("500", "Requests that may wait for a connection; beyond, 503 at once"),
    "DB_POOL_MAX_PER_USER": (
        "4",
        "Pool connections one user may hold at once per process; more wait, then 429",
    ),
    "DB_STATEMENT_TIMEOUT": ("5", "Seconds a statement may run (0 = no limit)"),
    "DB_PGBOUNCER": (
        "off",
        "transaction when DATABASE_URL is a transaction-pooling PgBouncer: no prepared"
        " statements, timeouts kept on the role",
    ),
    "DB_PREPARE_THRESHOLD": ("5", "Executions before a statement is prepared; none = never"),
    "ACCESS_TOKEN_TTL": ("86400", "Seconds a token from /auth/login or /auth/register lasts"),
    "JWT_ISSUER": ("(unset)", "Default of JWT_HS256_ISSUER and JWT_JWKS_ISSUER"),
    "JWT_AUDIENCE": ("(unset)", "Default of JWT_HS256_AUDIENCE and JWT_JWKS_AUDIENCE"),
    "JWT_HS256_ISSUER": (
        "(JWT_ISSUER)",
        "Required iss of shared-secret (HS256) tokens, and iss of issued tokens",
    ),
    "JWT_HS256_AUDIENCE": (
        "(JWT_AUDIENCE)",
        "Required aud of shared-secret (HS256) tokens, and aud of issued tokens",
    ),
    "JWT_JWKS_ISSUER": (
        "(JWT_ISSUER, else JWT_JWKS_URL's origin)",
        "Required iss of JWKS tokens (a URL counts by its origin); any = unchecked",
    ),
    "JWT_JWKS_AUDIENCE": (
        "(JWT_AUDIENCE, else JWT_JWKS_URL's origin)",
        "Required aud of JWKS tokens (a URL counts by its origin); any = unchecked",
    ),
    "JWT_FRONTEND_HS256": (
        "on without JWT_JWKS_URL, off with it",
        "Accept HS256 tokens a frontend mints with BETTER_AUTH_SECRET (on or off)",
    ),
    "JWT_JWKS_URL": ("(unset)", "JWKS of a Better Auth frontend, e.g. https://app/api/auth/jwks"),
    "JWT_ALGORITHMS": ("HS256; EdDSA,HS256 with JWT_JWKS_URL", "Accepted token algorithms"),
    "JWT_JWKS_REFRESH_INTERVAL": (
        "30",
        "Cooldown after a JWKS fetch that did not list the unknown key id it was made for",
    ),
    "BETTER_AUTH_DATABASE_URL": (
        "(unset)",
        "Better Auth's database, where opaque session tokens are looked up; same = DATABASE_URL",
    ),
    "BETTER_AUTH_SESSION_TABLE": ("session", "Better Auth's session table (schema.table allowed)"),
    "BETTER_AUTH_SESSION_COLUMNS": (
        "token,userId,expiresAt",
        "Its token, user id and expiry columns, in that order",
    ),
    "BETTER_AUTH_USER_TABLE": ("user", "Better Auth's user table (schema.table allowed)"),
    "BETTER_AUTH_USER_COLUMNS": ("id,email,name", "Its id, email and name columns, in that order"),
    "BETTER_AUTH_SESSION_CACHE_TTL": (
        "60",
        "Seconds a looked-up session is remembered (0-60); a deleted one works this long at most",
    ),
    "LOGIN_MAX_FAILURES": ("10", "Failed logins per email in 15 minutes before 429"),
    "LOGIN_MAX_FAILURES_PER_IP": (
        "50",
        "Failed logins per client address in 15 minutes before 429",
    ),
    "REGISTRATIONS_PER_IP": ("10", "Registrations per client address in 15 minutes before 429"),
    "TRUSTED_PROXIES": (
        "(none)",
        "Comma-separated proxy addresses whose X-Forwarded-For/-Proto are believed",
    ),
    "MAX_TASKS_PER_USER": ("10000", "Most live (not deleted) tasks one user may have"),
    "MAX_DELETED_TASKS_PER_USER": (
        "10000",
        "Most deleted tasks kept for restore per user; further deletes get 422",
    ),
    "TASK_RETENTION_DAYS": ("30", "Days a deleted task can be restored before it is purged"),
    "PURGE_INTERVAL": ("300", "Seconds between the service's purges (0 = never; see purge)"),
    "LOG_LEVEL": ("info", "debug, info, warning or error"),
    "LOG_FORMAT": ("json in production, else text", "text or json"),
    "API_DIALECT": (
        "standard",
        "standard, or compatible: task lists as a bare JSON array (paging in Link), DELETE"
        " answers 200 with the task",
    ),
}


#: Role names the migrations may grant to without quoting troubles.
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class DatabaseSettings:
    """What the pool and the migration runner need; no secret leaks through repr."""

    url: str = field(repr=False)
    pool_min: int = 2
    pool_max: int = 10
    pool_timeout: float = 5.0
    pool_max_waiting: int = 500
    pool_max_per_user: int = 4
    statement_timeout: float = 5.0
    prepare_threshold: int | None = 5
    pgbouncer: bool = False  # behind a transaction-pooling PgBouncer

    @property
    def display_url(self) -> str:
        """The URL with any password replaced, safe for logs."""
        return redact_url(self.url)


#: A looked-up session may be remembered at most this long (README: opaque session tokens).
MAX_SESSION_CACHE_TTL = 60.0


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
    """Everything the server needs, validated."""

    database: DatabaseSettings
    secret: str = field(repr=False)
    allowed_origins: tuple[str, ...] = ("http://localhost:3000",)
    environment: str = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_request_head_bytes: int = 16 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    shutdown_timeout: float = 10.0
    log_level: str = "info"
    log_format: str = "text"
    access_token_ttl: int = 86400
    # iss/aud per token source; each None means that claim is not checked.
    hs256_issuer: str | None = None
    hs256_audience: str | None = None
    jwks_issuer: str | None = None
    jwks_audience: str | None = None
    frontend_hs256: bool = True
    #: What loading decided that an operator should hear about, logged at start-up.
    notes: tuple[str, ...] = field(default=(), compare=False)
    jwks_url: str | None = None
    jwt_algorithms: tuple[str, ...] = SHARED_SECRET_ALGORITHMS
    jwks_refresh_interval: float = 30.0
    #: None: opaque (non-JWT) bearer tokens are refused, as before the setting existed.
    session_store: SessionStoreSettings | None = None
    login_max_failures: int = 10
    login_max_failures_per_ip: int = 50
    registrations_per_ip: int = 10
    trusted_proxies: tuple[str, ...] = ()
    max_tasks_per_user: int = 10000
    max_deleted_tasks_per_user: int = 10000
    task_retention_days: int = 30
    purge_interval: float = 300.0
    api_dialect: str = "standard"

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
        """What the HTTP protocol enforces (``http_limits``)."""
        from todo_server.http_limits import ConnectionLimits

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
    pool_min = _int(env, "DB_POOL_MIN", 2, minimum=0)
    pool_max = _int(env, "DB_POOL_MAX", 10, minimum=1)
    if pool_max < pool_min:
        raise ConfigError("DB_POOL_MAX", f"must be at least DB_POOL_MIN ({pool_min})")
    threshold_text = _get(env, "DB_PREPARE_THRESHOLD")
    pgbouncer = _choice(env, "DB_PGBOUNCER", "off", ("off", "transaction")) == "transaction"
    prepare_threshold: int | None = None if pgbouncer else 5
    if threshold_text is not None and threshold_text.lower() == "none":
        prepare_threshold = None
    elif threshold_text is not None:
        if pgbouncer:
            # PgBouncer 1.x in transaction mode runs the next transaction on any
            # server connection, where a prepared statement does not exist.
            raise ConfigError(
                "DB_PREPARE_THRESHOLD", "must be none (or unset) with DB_PGBOUNCER=transaction"
            )
        prepare_threshold = _int(env, "DB_PREPARE_THRESHOLD", 5, minimum=0)
    return DatabaseSettings(
        url=url,
        pool_min=pool_min,
        pool_max=pool_max,
        pool_timeout=_seconds(env, "DB_POOL_TIMEOUT", 5.0, allow_zero=False),
        pool_max_waiting=_int(env, "DB_POOL_MAX_WAITING", 500, minimum=1),
        pool_max_per_user=_int(env, "DB_POOL_MAX_PER_USER", 4, minimum=1),
        # PostgreSQL's statement_timeout is an int of milliseconds; more would fail on
        # every new connection (the pool never fills), or overflow converting to ms.
        statement_timeout=_seconds(
            env, "DB_STATEMENT_TIMEOUT", 5.0, allow_zero=True, maximum=2147483
        ),
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
        lock_timeout=_seconds(env, "MIGRATION_LOCK_TIMEOUT", 60.0, allow_zero=False),
        runtime_role=_role_name(env),
    )


def _role_name(env: Mapping[str, str]) -> str:
    text = _get(env, "DB_RUNTIME_ROLE") or "todo_app"
    if not ROLE_NAME.fullmatch(text):
        raise ConfigError(
            "DB_RUNTIME_ROLE", "must be a plain role name: lowercase letters, digits and _"
        )
    return text


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting the server needs."""
    env = os.environ if environ is None else environ
    database = load_database_settings(env)

    environment = _choice(env, "ENVIRONMENT", "development", ENVIRONMENTS)
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

    origins = _origins(env)
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
    frontend_hs256 = _switch(env, "JWT_FRONTEND_HS256", jwks_url is None)
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
        host=_get(env, "HOST") or "127.0.0.1",
        port=_int(env, "PORT", 8000, minimum=1, maximum=65535),
        workers=_int(env, "WORKERS", 1, minimum=1, maximum=64),
        max_request_head_bytes=_int(
            env, "MAX_REQUEST_HEAD_BYTES", 16 * 1024, minimum=1024, maximum=1024 * 1024
        ),
        head_timeout=_seconds(env, "HEAD_TIMEOUT", 10.0, allow_zero=False, maximum=3600),
        body_timeout=_seconds(env, "BODY_TIMEOUT", 30.0, allow_zero=False, maximum=3600),
        max_connections=_int(env, "MAX_CONNECTIONS", 1000, minimum=1),
        shutdown_timeout=_seconds(env, "SHUTDOWN_TIMEOUT", 10.0, allow_zero=True, maximum=3600),
        log_level=_choice(env, "LOG_LEVEL", "info", LOG_LEVELS),
        log_format=_choice(env, "LOG_FORMAT", "json" if production else "text", LOG_FORMATS),
        access_token_ttl=_int(env, "ACCESS_TOKEN_TTL", 86400, minimum=60, maximum=30 * 86400),
        **issuers,
        frontend_hs256=frontend_hs256,
        notes=tuple(notes),
        jwks_url=jwks_url,
        jwt_algorithms=algorithms,
        jwks_refresh_interval=_seconds(env, "JWT_JWKS_REFRESH_INTERVAL", 30.0, allow_zero=True),
        session_store=_session_store(env, database),
        login_max_failures=_int(env, "LOGIN_MAX_FAILURES", 10, minimum=1),
        login_max_failures_per_ip=_int(env, "LOGIN_MAX_FAILURES_PER_IP", 50, minimum=1),
        registrations_per_ip=_int(env, "REGISTRATIONS_PER_IP", 10, minimum=1),
        trusted_proxies=_trusted_proxies(env),
        max_tasks_per_user=_int(env, "MAX_TASKS_PER_USER", 10000, minimum=1),
        max_deleted_tasks_per_user=_int(env, "MAX_DELETED_TASKS_PER_USER", 10000, minimum=1),
        task_retention_days=_int(env, "TASK_RETENTION_DAYS", 30, minimum=1, maximum=3650),
        purge_interval=_seconds(env, "PURGE_INTERVAL", 300.0, allow_zero=True),
        api_dialect=_choice(env, "API_DIALECT", "standard", API_DIALECTS),
    )


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The stripped value, or None when unset or blank."""
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _int(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    text = _get(env, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return value


def _seconds(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    allow_zero: bool,
    maximum: float | None = None,
) -> float:
    text = _get(env, name)
    if text is None:
        return default
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


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    text = _get(env, name)
    if text is None:
        return default
    value = text.lower()
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {text!r}")
    return value


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    text = _get(env, "ALLOWED_ORIGINS")
    if text is None:
        return ("http://localhost:3000",)
    origins = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(
                "ALLOWED_ORIGINS", f"{origin!r} is not an origin like https://app.example.com"
            )
    return origins


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


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = _get(env, name)
    if text is None:
        return default
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise ConfigError(name, f"must be on or off, got {text!r}")


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
    token, user_id, expires_at = _columns(
        env, "BETTER_AUTH_SESSION_COLUMNS", "token,userId,expiresAt"
    )
    user_key, email, name = _columns(env, "BETTER_AUTH_USER_COLUMNS", "id,email,name")
    return SessionStoreSettings(
        url=url,
        session_table=_table(env, "BETTER_AUTH_SESSION_TABLE", "session"),
        token_column=token,
        user_id_column=user_id,
        expires_at_column=expires_at,
        user_table=_table(env, "BETTER_AUTH_USER_TABLE", "user"),
        user_key_column=user_key,
        email_column=email,
        name_column=name,
        cache_ttl=_seconds(
            env,
            "BETTER_AUTH_SESSION_CACHE_TTL",
            MAX_SESSION_CACHE_TTL,
            allow_zero=True,
            maximum=MAX_SESSION_CACHE_TTL,
        ),
        pool_timeout=database.pool_timeout,
        pool_max_waiting=database.pool_max_waiting,
    )


def _identifier(name: str, text: str) -> str:
    """One SQL identifier as Better Auth's adapters spell it (quoted where it is used)."""
    if not text or len(text.encode()) > 63 or any(ord(c) < 0x20 or c == "." for c in text):
        raise ConfigError(name, f"{text!r} is not a table or column name")
    return text


def _table(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    parts = (_get(env, name) or default).split(".")
    if len(parts) > 2:
        raise ConfigError(name, "must be a table name or schema.table")
    return tuple(_identifier(name, part) for part in parts)


def _columns(env: Mapping[str, str], name: str, default: str) -> tuple[str, str, str]:
    parts = [part.strip() for part in (_get(env, name) or default).split(",")]
    if len(parts) != 3:
        raise ConfigError(name, f"must name three columns, like {default}")
    first, second, third = (_identifier(name, part) for part in parts)
    return first, second, third


def _trusted_proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    """Addresses or networks of proxies trusted to report the client's address."""
    text = _get(env, "TRUSTED_PROXIES")
    if text is None:
        return ()
    proxies = tuple(part.strip() for part in text.split(",") if part.strip())
    for proxy in proxies:
        if proxy == "*":
            continue
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                "TRUSTED_PROXIES", f"{proxy!r} is not an IP address or network (or *)"
            ) from None
    return proxies
