"""Settings, read once from the environment and validated at start-up.

This is the only module that reads ``os.environ``. Every setting is listed in
``SETTINGS`` with its default and a one-line description; the README's table and
``.env.example`` are checked against that list by the tests.

A missing or malformed value raises ``ConfigError`` naming the variable, so the
command line can stop with one clear line instead of a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Secrets that ``run.sh`` generates for local use start with this prefix, so
#: production can recognise and refuse them.
GENERATED_SECRET_PREFIX = "generated-local-only-"

ENVIRONMENTS = ("development", "staging", "production")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

#: name -> (default shown in the docs, description). Order is the README's order.
SETTINGS: dict[str, tuple[str, str]] = {
    "DATABASE_URL": ("(required)", "PostgreSQL URL, postgresql://user:pass@host:port/db"),
    "BETTER_AUTH_SECRET": ("(required)", "Shared HS256 secret, at least 32 characters"),
    "ALLOWED_ORIGINS": ("http://localhost:3000", "Comma-separated CORS origins"),
    "ENVIRONMENT": ("development", "development, staging or production"),
    "HOST": ("127.0.0.1", "Address to listen on"),
    "PORT": ("8000", "Port to listen on"),
    "DB_POOL_MIN": ("2", "Connections the pool keeps open"),
    "DB_POOL_MAX": ("10", "Most connections the pool opens"),
    "DB_POOL_TIMEOUT": ("5", "Seconds to wait for a connection before answering 503"),
    "DB_STATEMENT_TIMEOUT": ("5", "Seconds a statement may run (0 = no limit)"),
    "DB_PREPARE_THRESHOLD": ("5", "Executions before a statement is prepared; none = never"),
    "LOG_LEVEL": ("info", "debug, info, warning or error"),
    "LOG_FORMAT": ("json in production, else text", "text or json"),
}


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
    statement_timeout: float = 5.0
    prepare_threshold: int | None = 5

    @property
    def display_url(self) -> str:
        """The URL with any password replaced, safe for logs."""
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
    log_level: str = "info"
    log_format: str = "text"

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


def redact_url(url: str) -> str:
    """Replace the password of a URL with ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


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
    prepare_threshold: int | None = 5
    if threshold_text is not None and threshold_text.lower() == "none":
        prepare_threshold = None
    elif threshold_text is not None:
        prepare_threshold = _int(env, "DB_PREPARE_THRESHOLD", 5, minimum=0)
    return DatabaseSettings(
        url=url,
        pool_min=pool_min,
        pool_max=pool_max,
        pool_timeout=_seconds(env, "DB_POOL_TIMEOUT", 5.0, allow_zero=False),
        statement_timeout=_seconds(env, "DB_STATEMENT_TIMEOUT", 5.0, allow_zero=True),
        prepare_threshold=prepare_threshold,
    )


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

    return Settings(
        database=database,
        secret=secret,
        allowed_origins=origins,
        environment=environment,
        host=_get(env, "HOST") or "127.0.0.1",
        port=_int(env, "PORT", 8000, minimum=1, maximum=65535),
        log_level=_choice(env, "LOG_LEVEL", "info", LOG_LEVELS),
        log_format=_choice(env, "LOG_FORMAT", "json" if production else "text", LOG_FORMATS),
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


def _seconds(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool) -> float:
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
