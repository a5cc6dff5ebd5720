"""The validated settings the service runs with, and the functions that load them.

This is the only module that reads ``os.environ``. Each value comes from the
table (``table.py``) by its name, so a default is never written here; what is
decided here is what one setting means given the others (production refuses a
generated secret, a JWKS changes the accepted algorithms, and so on).

A missing or malformed value raises ``ConfigError`` naming the variable, so the
command line can stop with one clear line instead of a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from todo_server.config.limits import ConnectionLimits
from todo_server.config.parsers import ConfigError
from todo_server.config.redaction import redact_url
from todo_server.config.table import SETTINGS_BY_NAME, env_text
from todo_server.config.token_sources import accepted_algorithms, issuers_and_audiences

#: Secrets that ``run.sh`` generates for local use start with this prefix, so
#: production can recognise and refuse them.
GENERATED_SECRET_PREFIX = "generated-local-only-"

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


def _read(env: Mapping[str, str], name: str) -> Any:
    """The setting's parsed value or declared default (None when it has none)."""
    return SETTINGS_BY_NAME[name].read(env)


@dataclass(frozen=True)
class DatabaseSettings:
    """What the pool and the migration runner need; no secret leaks through repr."""

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
    #: ``function`` (todo_session_user, in the session table's schema) or ``table``.
    lookup: str
    session_table: tuple[str, ...]
    token_column: str
    user_id_column: str
    expires_at_column: str
    user_table: tuple[str, ...]
    user_key_column: str
    email_column: str
    name_column: str
    cache_ttl: float
    #: The service pool's own wait limits, applied to this pool too.
    pool_timeout: float
    pool_max_waiting: int

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs, validated."""

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
    body_deadline: float
    send_timeout: float
    max_connections: int
    max_connections_per_client: int
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
    #: None: opaque (non-JWT) bearer tokens are refused.
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
    #: The admin server (todo_server.admin); None: not started.
    admin_port: int | None
    admin_host: str

    @property
    def compatible(self) -> bool:
        """Whether the compatible dialect is on (docs/frontends.md)."""
        return self.api_dialect == "compatible"

    @property
    def accepts_shared_secret_tokens(self) -> bool:
        """Whether HS256 tokens (ours and a frontend's) are accepted at all."""
        return "HS256" in self.jwt_algorithms

    @property
    def connection_limits(self) -> ConnectionLimits:
        """What the HTTP protocol enforces (``web.http_protocol``)."""
        return ConnectionLimits(
            max_head_bytes=self.max_request_head_bytes,
            head_timeout=self.head_timeout,
            body_timeout=self.body_timeout,
            body_deadline=self.body_deadline,
            send_timeout=self.send_timeout,
            max_connections=self.max_connections,
            max_connections_per_client=self.max_connections_per_client,
            uncapped_peers=self.trusted_proxies,
        )

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


def load_database_settings(environ: Mapping[str, str] | None = None) -> DatabaseSettings:
    """Read the database settings; enough for ``migrate``."""
    env = os.environ if environ is None else environ
    url = env_text(env, "DATABASE_URL")
    if url is None:
        raise ConfigError("DATABASE_URL", "is required (a postgresql:// URL)")
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError("DATABASE_URL", "must be a postgresql:// URL")
    pool_min = _read(env, "DB_POOL_MIN")
    pool_max = _read(env, "DB_POOL_MAX")
    if pool_max < pool_min:
        raise ConfigError("DB_POOL_MAX", f"must be at least DB_POOL_MIN ({pool_min})")
    threshold_text = env_text(env, "DB_PREPARE_THRESHOLD")
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
    lock_timeout: float
    runtime_role: str

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


def load_migration_settings(environ: Mapping[str, str] | None = None) -> MigrationSettings:
    """The schema owner's URL (MIGRATION_DATABASE_URL, else DATABASE_URL) and the lock wait."""
    env = os.environ if environ is None else environ
    name = "MIGRATION_DATABASE_URL" if env_text(env, "MIGRATION_DATABASE_URL") else "DATABASE_URL"
    url = env_text(env, name)
    if url is None:
        raise ConfigError("DATABASE_URL", "is required (a postgresql:// URL)")
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError(name, "must be a postgresql:// URL")
    return MigrationSettings(
        url=url,
        lock_timeout=_read(env, "MIGRATION_LOCK_TIMEOUT"),
        runtime_role=_read(env, "DB_RUNTIME_ROLE"),
    )


def load_admin_address(environ: Mapping[str, str] | None = None) -> tuple[str, int | None]:
    """ADMIN_HOST and ADMIN_PORT (None: off), all ``todo-server ready`` needs."""
    env = os.environ if environ is None else environ
    return _read(env, "ADMIN_HOST"), _admin_port(env)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting the server needs."""
    env = os.environ if environ is None else environ
    database = load_database_settings(env)

    environment = _read(env, "ENVIRONMENT")
    production = environment == "production"

    secret = env_text(env, "BETTER_AUTH_SECRET")
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

    jwks_url = env_text(env, "JWT_JWKS_URL")
    if jwks_url is not None:
        parts = urlsplit(jwks_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("JWT_JWKS_URL", "must be an http(s) URL")
        if production and parts.scheme != "https":
            raise ConfigError("JWT_JWKS_URL", "must use https in production")

    algorithms = accepted_algorithms(env, jwks_url)
    notes: list[str] = []
    issuers = issuers_and_audiences(env, jwks_url, algorithms, notes)
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
    max_connections = _read(env, "MAX_CONNECTIONS")
    per_client = _read(env, "MAX_CONNECTIONS_PER_CLIENT")
    if 0 < max_connections <= per_client:
        notes.append(
            f"MAX_CONNECTIONS_PER_CLIENT ({per_client}) is not below MAX_CONNECTIONS"
            f" ({max_connections}): one client address can take every connection"
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
        body_deadline=_read(env, "BODY_DEADLINE"),
        send_timeout=_read(env, "SEND_TIMEOUT"),
        max_connections=max_connections,
        max_connections_per_client=per_client,
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
        admin_port=_admin_port(env),
        admin_host=_read(env, "ADMIN_HOST"),
    )


def _admin_port(env: Mapping[str, str]) -> int | None:
    """ADMIN_PORT, which must not be the API's: probes and metrics are never public."""
    admin_port: int | None = _read(env, "ADMIN_PORT")
    if admin_port is not None and admin_port == _read(env, "PORT"):
        raise ConfigError("ADMIN_PORT", f"must differ from PORT ({admin_port})")
    return admin_port


def _session_store(
    env: Mapping[str, str], database: DatabaseSettings
) -> SessionStoreSettings | None:
    """Better Auth's session table, when opaque session tokens are accepted."""
    text = env_text(env, "BETTER_AUTH_DATABASE_URL")
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
        lookup=_read(env, "BETTER_AUTH_SESSION_LOOKUP"),
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
