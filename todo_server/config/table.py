"""Every setting, declared once: its name, default, parser and one line of help.

This table is the only place a default is written. Loading (``settings.py``)
reads each setting by name through it; ``docs/configuration.md``'s table and
``.env.example`` are generated from it (``python -m devtools settings-docs --write``),
and the tests fail when either is stale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from todo_server.config.parsers import (
    ConfigError,
    any_text,
    one_of,
    origins,
    port_or_off,
    prepare_threshold,
    role_name,
    seconds,
    switch,
    table_name,
    three_columns,
    trusted_proxies,
    whole_number,
)

ENVIRONMENTS = ("development", "staging", "production")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: standard: the contract (list envelope, 204 on DELETE); compatible: what
#: existing frontends expect (list as a bare array, DELETE answers the task).
API_DIALECTS = ("standard", "compatible")

#: function: the one-token SECURITY DEFINER function (the documented set-up); table: SELECT.
SESSION_LOOKUPS = ("table", "function")
#: A looked-up session may be remembered at most this long.
MAX_SESSION_CACHE_TTL = 60.0
#: Better Auth's own column names: the defaults, and the example a malformed value's error shows.
SESSION_COLUMNS = "token,userId,expiresAt"
USER_COLUMNS = "id,email,name"


@dataclass(frozen=True)
class Setting:
    """One environment variable, declared once: loading and the generated docs read it."""

    name: str
    #: The value used when unset, as an operator would write it; None when the setting is
    #: required or its default depends on other settings (``shown_default`` then says how).
    default: str | None
    #: ``(variable, stripped text) -> value``; raises ConfigError naming the variable.
    parse: Callable[[str, str], Any]
    #: One line for people: the settings table's "meaning" (Markdown).
    help: str
    #: The settings table's default column, when it is not just ``default``.
    shown_default: str | None = None
    #: What .env.example shows, commented out, for a setting without a plain default.
    example: str | None = None

    def read(self, env: Mapping[str, str]) -> Any:
        """The parsed value; unset, the parsed default, or None without one."""
        text = env_text(env, self.name)
        if text is None:
            text = self.default
        return None if text is None else self.parse(self.name, text)


def env_text(env: Mapping[str, str], name: str) -> str | None:
    """The variable's stripped text, or None when unset or blank.

    The environment holds bytes; those that are not UTF-8 reach Python as lone
    surrogates and would fail later, in a traceback far from the variable's name.
    """
    value = env.get(name)
    if value is None or not value.strip():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(name, "is not valid UTF-8") from None
    return value.strip()


#: Every setting, in the order of the documentation's table.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        None,
        any_text,
        "PostgreSQL URL, `postgresql://user:pass@host:port/db`",
        shown_default="(required; `./run.sh` supplies a local one)",
        example="postgresql://todo:change-me@localhost:5432/todo",
    ),
    Setting(
        "MIGRATION_DATABASE_URL",
        None,
        any_text,
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
        role_name,
        (
            "The role the service connects as (`DATABASE_URL`'s user); `migrate` grants it what "
            "it needs (see [Deploy: Roles](deploy.md#roles))"
        ),
    ),
    Setting(
        "MIGRATION_LOCK_TIMEOUT",
        "60",
        seconds(allow_zero=False),
        (
            "Seconds `migrate` waits for another run's lock before giving up (exit 1, naming the "
            "holder)"
        ),
    ),
    Setting(
        "BETTER_AUTH_SECRET",
        None,
        any_text,
        "Shared HS256 secret, at least 32 characters. Production refuses a generated one.",
        shown_default="(required; `./run.sh` generates one in `.data/secret`)",
    ),
    Setting(
        "ALLOWED_ORIGINS",
        "http://localhost:3000",
        origins,
        "Comma-separated CORS origins. Production refuses `*`.",
    ),
    Setting(
        "ENVIRONMENT",
        "development",
        one_of(ENVIRONMENTS),
        "`development`, `staging` or `production`",
    ),
    Setting("HOST", "127.0.0.1", any_text, "Address to listen on"),
    Setting("PORT", "8000", whole_number(1, 65535), "Port to listen on"),
    Setting(
        "WORKERS",
        "1",
        whole_number(1, 64),
        "Server processes (uvicorn workers), about one per core; each has its own pool",
    ),
    Setting(
        "MAX_REQUEST_HEAD_BYTES",
        "16384",
        whole_number(1024, 1024 * 1024),
        (
            "Most bytes of request line and headers; more get 431 and the connection is closed, "
            "before the bytes are buffered"
        ),
    ),
    Setting(
        "HEAD_TIMEOUT",
        "10",
        seconds(allow_zero=False, maximum=3600),
        (
            "Seconds a client may take to send a request head (from its first byte, or from "
            "connecting); then 408 and close; a connection that sent nothing is just closed"
        ),
    ),
    Setting(
        "BODY_TIMEOUT",
        "30",
        seconds(allow_zero=False, maximum=3600),
        "Seconds a request body may stall between two chunks; then 408 and close",
    ),
    Setting(
        "BODY_DEADLINE",
        "60",
        seconds(allow_zero=False, maximum=3600),
        (
            "Seconds a whole request body may take, from the end of its head, however steadily "
            "it arrives; then 408 and close (60 s carries a 64 KiB body at 9 kbit/s)"
        ),
    ),
    Setting(
        "SEND_TIMEOUT",
        "60",
        seconds(allow_zero=False, maximum=3600),
        (
            "Seconds a client may leave a response unread once the server's send buffer is "
            "full; then the connection is dropped"
        ),
    ),
    Setting(
        "MAX_CONNECTIONS",
        "1000",
        whole_number(1),
        "Open connections per worker; more get 503 with `Retry-After` and are closed",
    ),
    Setting(
        "MAX_CONNECTIONS_PER_CLIENT",
        "100",
        whole_number(0),
        (
            "Open connections per client address (an IPv6 /64 counts as one) per worker; more "
            "get 503 with `Retry-After` and are closed; `0` = no cap. Peers in `TRUSTED_PROXIES` "
            "are not capped (all their clients share their address)"
        ),
    ),
    Setting(
        "SHUTDOWN_TIMEOUT",
        "10",
        seconds(allow_zero=True, maximum=3600),
        "Seconds in-flight requests get after SIGTERM; then the process exits anyway",
    ),
    Setting("DB_POOL_MIN", "2", whole_number(0), "Connections the pool keeps open"),
    Setting(
        "DB_POOL_MAX",
        "10",
        whole_number(1),
        (
            "Most connections the pool opens, per worker. Keep it small: a pool many times "
            "PostgreSQL's cores makes it slower, not faster (measured in "
            "[bench/README.md](../bench/README.md))"
        ),
    ),
    Setting(
        "DB_POOL_TIMEOUT",
        "5",
        seconds(allow_zero=False),
        "Seconds to wait for a connection; longer becomes 503 with `Retry-After`",
    ),
    Setting(
        "DB_POOL_MAX_WAITING",
        "500",
        whole_number(1),
        (
            "Requests that may wait for a connection at once; beyond that, 503 with `Retry-After` "
            "at once instead of queueing"
        ),
    ),
    Setting(
        "DB_POOL_MAX_PER_USER",
        "4",
        whole_number(1),
        (
            "Pool connections one user's task requests may hold at once, per process; their "
            "further requests wait up to `DB_POOL_TIMEOUT` for one of their own, then get 429 "
            "with `Retry-After`, so one user can never take the whole pool"
        ),
    ),
    Setting(
        "DB_STATEMENT_TIMEOUT",
        "5",
        seconds(allow_zero=True, maximum=2147483),
        (
            "Seconds one statement may run (server-side `statement_timeout`; `0` = no limit; at "
            "most 2147483, PostgreSQL's limit); past it: 503 `database_timeout`"
        ),
    ),
    Setting(
        "DB_PGBOUNCER",
        "off",
        one_of(("off", "transaction")),
        (
            "`transaction` when `DATABASE_URL` points at a PgBouncer in transaction pooling: "
            "prepared statements off, `statement_timeout` and `TimeZone` kept as the role's "
            "defaults (see [Deploy: PgBouncer](deploy.md#pgbouncer))"
        ),
    ),
    Setting(
        "DB_PREPARE_THRESHOLD",
        "5",
        prepare_threshold,
        (
            "Runs of a statement on one connection before it is prepared server-side; `none` "
            "disables it (PgBouncer in transaction mode)"
        ),
        shown_default="`5`; `none` with `DB_PGBOUNCER=transaction`",
    ),
    Setting(
        "ACCESS_TOKEN_TTL",
        "86400",
        whole_number(60, 30 * 86400),
        "Seconds a token from `/auth/login` or `/auth/register` lasts (60 s to 30 days)",
    ),
    Setting(
        "JWT_ISSUER",
        None,
        any_text,
        (
            "Default of `JWT_HS256_ISSUER` and `JWT_JWKS_ISSUER`: set alone, every JWT must have "
            "this `iss` (see [Authentication: Issuer and audience]"
            "(authentication.md#issuer-and-audience-per-token-source))"
        ),
        shown_default="(unset)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_AUDIENCE",
        None,
        any_text,
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
        any_text,
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
        any_text,
        "When set: HS256 tokens must have this `aud`, and issued tokens carry it",
        shown_default="(`JWT_AUDIENCE`)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_JWKS_ISSUER",
        None,
        any_text,
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
        any_text,
        "The `aud` of JWKS tokens, likewise",
        shown_default="(`JWT_AUDIENCE`, else `JWT_JWKS_URL`'s origin)",
        example="https://app.example.com",
    ),
    Setting(
        "JWT_FRONTEND_HS256",
        None,
        switch,
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
        any_text,
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
        any_text,
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
        seconds(allow_zero=True),
        (
            "After a JWKS fetch that did not list the unknown key id it was made for, seconds "
            "before another unknown id may fetch again (the first unknown id after any other "
            "fetch fetches at once)"
        ),
    ),
    Setting(
        "BETTER_AUTH_DATABASE_URL",
        None,
        any_text,
        (
            "Better Auth's database, where opaque session tokens (bearers that are not JWTs) are "
            "looked up: a `postgresql://` URL with read-only credentials, or `same` for "
            "`DATABASE_URL`'s database and role (see [Authentication: Better Auth session tokens]"
            "(authentication.md#better-auth-session-tokens))"
        ),
        shown_default="(unset: opaque tokens are refused)",
        example="postgresql://todo_sessions:secret@localhost:5432/better_auth",
    ),
    Setting(
        "BETTER_AUTH_SESSION_LOOKUP",
        "table",
        one_of(SESSION_LOOKUPS),
        (
            "How a session token is looked up: `function` calls `todo_session_user(token)`, a "
            "SECURITY DEFINER function in Better Auth's database that its role may only execute "
            "(recommended: the role cannot list sessions); `table` reads the session and user "
            "tables, with SELECT on their columns"
        ),
    ),
    Setting(
        "BETTER_AUTH_SESSION_TABLE",
        "session",
        table_name,
        "Better Auth's session table; `schema.table` allowed",
    ),
    Setting(
        "BETTER_AUTH_SESSION_COLUMNS",
        SESSION_COLUMNS,
        three_columns(like=SESSION_COLUMNS),
        (
            "Its token, user id and expiry columns, in that order (e.g. "
            "`token,user_id,expires_at` for a snake_case schema)"
        ),
    ),
    Setting(
        "BETTER_AUTH_USER_TABLE",
        "user",
        table_name,
        "Better Auth's user table; `schema.table` allowed",
    ),
    Setting(
        "BETTER_AUTH_USER_COLUMNS",
        USER_COLUMNS,
        three_columns(like=USER_COLUMNS),
        "Its id, email and name columns, in that order",
    ),
    Setting(
        "BETTER_AUTH_SESSION_CACHE_TTL",
        "60",
        seconds(allow_zero=True, maximum=MAX_SESSION_CACHE_TTL),
        (
            "Seconds a session found is remembered per process (0 to 60; never past its expiry): "
            "a signed-out or revoked session keeps working at most this long"
        ),
    ),
    Setting(
        "LOGIN_MAX_FAILURES",
        "10",
        whole_number(1),
        "Failed logins per email within 15 minutes before further attempts get 429",
    ),
    Setting(
        "LOGIN_MAX_FAILURES_PER_IP",
        "50",
        whole_number(1),
        "Failed logins per client address within 15 minutes before 429",
    ),
    Setting(
        "REGISTRATIONS_PER_IP",
        "10",
        whole_number(1),
        "Registrations per client address within 15 minutes before 429",
    ),
    Setting(
        "TRUSTED_PROXIES",
        None,
        trusted_proxies,
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
        whole_number(1),
        "Most live (not deleted) tasks one user may have; the next create gets 422",
    ),
    Setting(
        "MAX_DELETED_TASKS_PER_USER",
        "10000",
        whole_number(1),
        (
            "Most deleted tasks kept for restore per user; the next delete gets 422 until some "
            "are purged"
        ),
    ),
    Setting(
        "TASK_RETENTION_DAYS",
        "30",
        whole_number(1, 3650),
        "Days a deleted task can be restored; then it is purged for good",
    ),
    Setting(
        "PURGE_INTERVAL",
        "300",
        seconds(allow_zero=True),
        (
            "Seconds between the service's purges of deleted tasks past retention, expired "
            "idempotency keys and throttling rows (`0` = never; run `todo-server purge` instead)"
        ),
    ),
    Setting("LOG_LEVEL", "info", one_of(LOG_LEVELS), "`debug`, `info`, `warning` or `error`"),
    Setting(
        "LOG_FORMAT",
        None,
        one_of(LOG_FORMATS),
        "`text` or `json` (one JSON object per line)",
        shown_default="`json` in production, else `text`",
        example="text",
    ),
    Setting(
        "API_DIALECT",
        "standard",
        one_of(API_DIALECTS),
        (
            "`standard` (the contract: lists as `{tasks, count, next_cursor}`, DELETE answers "
            "204) or `compatible` (lists as a bare JSON array with paging in `Link` and `X-Count` "
            "headers, DELETE answers 200 with the task), for existing frontends: see [Using an "
            "existing frontend](frontends.md)"
        ),
    ),
    # The admin server (todo_server.admin): probes on a port of their own.
    Setting(
        "ADMIN_PORT",
        "off",
        port_or_off,
        (
            "Port of the admin server (`GET /live`, `GET /ready`, `GET /metrics`), never the"
            " API's; `off` = not started. See [Probes](deploy.md#probes)"
        ),
    ),
    Setting(
        "ADMIN_HOST",
        "127.0.0.1",
        any_text,
        "Address the admin server listens on; keep it off the public network",
    ),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
