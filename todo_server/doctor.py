"""``todo-server doctor``: a deployment's configuration checked against its database.

Each check gives one finding: ``ok``, ``warn`` or ``fail``, what was found and
the fix. Nothing is changed anywhere: the checks read settings, the catalog and
the JWKS, and the database connection only runs queries.

The exit status is 0 when every check is ok, 1 when some warn, 2 when one fails
(docs/deploy.md: Checking a deployment).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from todo_server.auth.better_auth_sessions import (
    LOOKUP_CHECKS,
    SESSION_FUNCTION,
    session_lookup_sql,
)
from todo_server.auth.jwks import fetch_document, parse_jwks
from todo_server.config import (
    GENERATED_SECRET_PREFIX,
    ConfigError,
    DatabaseSettings,
    SessionStoreSettings,
    Settings,
    load_database_settings,
    load_settings,
    url_origin,
)
from todo_server.config.settings import KNOWN_PLACEHOLDER_SECRETS
from todo_server.storage import migrate
from todo_server.storage.schema_check import ROLE_TIMEOUTS

OK, WARN, FAIL = "ok", "warn", "fail"
EXIT_STATUS = {OK: 0, WARN: 1, FAIL: 2}

#: The tables whose rows belong to one user; row-level security must hold on each.
USER_TABLES = ("tasks", "users", "idempotency_keys")
#: Host and database clocks further apart than this make expiry and purge times wrong.
MAX_CLOCK_SKEW_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 5
#: Which variable a ConfigError names decides which check it fails.
CHECK_OF_VARIABLE = {"BETTER_AUTH_SECRET": "secret", "ALLOWED_ORIGINS": "cors"}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f"; {self.fix}" if self.fix else ""
        return f"{self.status:<4}  {self.check}: {self.detail}{fix}"


def exit_status(findings: list[Finding]) -> int:
    return max((EXIT_STATUS[f.status] for f in findings), default=0)


def run(as_json: bool, environ: Mapping[str, str] | None = None) -> int:
    """Print the findings, as lines or a JSON list; return the exit status."""
    findings = diagnose(environ)
    if as_json:
        print(json.dumps([asdict(finding) for finding in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
    return exit_status(findings)


def diagnose(
    environ: Mapping[str, str] | None = None, *, clock: Callable[[], float] = time.time
) -> list[Finding]:
    """Every check's finding, in order; ``clock`` is this host's (a test moves it)."""
    findings: list[Finding] = []
    settings: Settings | None = None
    database: DatabaseSettings | None = None
    try:
        settings = load_settings(environ)
        database = settings.database
        notes = "; ".join(settings.notes)
        findings.append(Finding("settings", WARN if notes else OK, notes or "all settings parse"))
    except ConfigError as exc:
        check = CHECK_OF_VARIABLE.get(exc.variable, "settings")
        if exc.variable == "JWT_JWKS_URL" or "production" in str(exc):
            check = "production"
        findings.append(
            Finding(check, FAIL, str(exc), f"fix {exc.variable} (docs/configuration.md)")
        )
        try:
            database = load_database_settings(environ)
        except ConfigError:
            database = None
    if settings is not None:
        findings += settings_findings(settings)
    if database is not None:
        findings += database_findings(database, clock)
    if settings is not None and settings.jwks_url is not None:
        findings += jwks_findings(settings)
    if settings is not None and settings.session_store is not None:
        findings += session_store_findings(settings.session_store)
    return findings


# --- settings alone ---------------------------------------------------------


def settings_findings(settings: Settings) -> list[Finding]:
    return [secret_finding(settings), cors_finding(settings), production_finding(settings)]


def secret_finding(settings: Settings) -> Finding:
    secret = settings.secret
    if secret.lower() in KNOWN_PLACEHOLDER_SECRETS or len(set(secret)) < 6:
        return Finding(
            "secret",
            FAIL if settings.is_production else WARN,
            "BETTER_AUTH_SECRET is a placeholder from an example",
            "generate one: openssl rand -base64 32",
        )
    if secret.startswith(GENERATED_SECRET_PREFIX):
        return Finding("secret", OK, "BETTER_AUTH_SECRET was generated for local use by run.sh")
    return Finding("secret", OK, f"BETTER_AUTH_SECRET has {len(secret)} characters")


def cors_finding(settings: Settings) -> Finding:
    origins = settings.allowed_origins
    if "*" in origins:
        return Finding(
            "cors",
            WARN,
            "ALLOWED_ORIGINS is '*': any web page may call the API",
            "list the origins",
        )
    plain = [o for o in origins if o.startswith("http://") and url_origin(o) is not None]
    if settings.is_production and any("localhost" not in o and "127.0.0.1" not in o for o in plain):
        return Finding(
            "cors", WARN, f"plain http origins in production: {', '.join(plain)}", "use https"
        )
    listed = ", ".join(origins) if origins else "none (browsers cannot call the API)"
    return Finding("cors", OK, f"origins well formed: {listed}")


def production_finding(settings: Settings) -> Finding:
    if not settings.is_production:
        return Finding("production", OK, f"ENVIRONMENT is {settings.environment}")
    problems = []
    if settings.jwks_url is not None and not settings.jwks_url.startswith("https://"):
        problems.append("JWT_JWKS_URL is not https")
    if settings.secret.startswith(GENERATED_SECRET_PREFIX):
        problems.append("BETTER_AUTH_SECRET is a generated local secret")
    if "*" in settings.allowed_origins:
        problems.append("ALLOWED_ORIGINS is '*'")
    if problems:
        return Finding("production", FAIL, "; ".join(problems), "see docs/deploy.md")
    return Finding("production", OK, "https JWKS, an own secret, listed origins")


# --- the database -----------------------------------------------------------

ROLE_SQL = """
SELECT r.rolname AS role, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls,
       (SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class AS c
        WHERE c.relowner = r.oid AND c.oid = ANY (%(tables)s::regclass[])) AS owns,
       coalesce((SELECT array_agg(split_part(setting, '=', 1))
                 FROM pg_db_role_setting AS s, unnest(s.setconfig) AS setting
                 WHERE s.setrole = r.oid
                   AND s.setdatabase IN (0, (SELECT oid FROM pg_database
                                             WHERE datname = current_database()))),
                '{}') AS settings
FROM pg_roles AS r WHERE r.rolname = current_user
"""

ROW_SECURITY_SQL = """
SELECT t.name, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced
FROM unnest(%(tables)s::text[]) AS t(name)
LEFT JOIN pg_class AS c ON c.oid = to_regclass(t.name)
"""


def database_findings(database: DatabaseSettings, clock: Callable[[], float]) -> list[Finding]:
    try:
        conn = psycopg.connect(
            database.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
    except psycopg.Error as exc:
        return [
            Finding(
                "database",
                FAIL,
                f"cannot connect to {database.display_url}: {_first_line(exc)}",
                "check DATABASE_URL and that the server is up",
            )
        ]
    findings = [Finding("database", OK, f"connected to {database.display_url}")]
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("migrations", lambda: [migrations_finding(conn)]),
        ("runtime role", lambda: role_findings(conn)),
        ("row security", lambda: [row_security_finding(conn)]),
        ("pooler", lambda: [pooler_finding(conn, database)]),
        ("clock skew", lambda: [clock_finding(conn, clock)]),
    ]
    with conn:
        for name, check in checks:
            try:
                findings += check()
            except psycopg.Error as exc:
                # A role without the runtime role's grants cannot read what a check needs.
                findings.append(
                    Finding(
                        name,
                        FAIL,
                        f"the check failed: {_first_line(exc)}",
                        "see docs/deploy.md: Roles",
                    )
                )
    return findings


def migrations_finding(conn: psycopg.Connection) -> Finding:
    files = migrate.inspect(conn)
    drift = [
        f"{f.version:04d}_{f.name}.sql {f.state}"
        for f in files
        if f.state in ("changed", "missing")
    ]
    waiting = [f"{f.version:04d}_{f.name}.sql" for f in files if f.state == "pending"]
    if drift:
        return Finding(
            "migrations",
            FAIL,
            f"applied files changed or gone: {', '.join(drift)}",
            "restore the applied files as they were; fix forward with a new file",
        )
    if waiting:
        return Finding(
            "migrations", FAIL, f"pending: {', '.join(waiting)}", "run todo-server migrate"
        )
    return Finding("migrations", OK, f"{len(files)} applied, checksums match")


def role_findings(conn: psycopg.Connection) -> list[Finding]:
    facts = conn.execute(ROLE_SQL, {"tables": list(USER_TABLES)}).fetchone()
    assert facts is not None  # current_user is always a role
    role, superuser, bypassrls, owns, settings = facts
    why = [
        what
        for what, present in (
            ("a superuser", superuser),
            ("BYPASSRLS", bypassrls),
            (f"the owner of {', '.join(owns or [])}", owns),
        )
        if present
    ]
    fix = "connect as the runtime role (DB_RUNTIME_ROLE, docs/deploy.md: Roles)"
    found = [
        Finding(
            "runtime role",
            FAIL,
            f"{role!r} is {' and '.join(why)}: row-level security does not apply",
            fix,
        )
        if why
        else Finding("runtime role", OK, f"{role!r}: not superuser, not BYPASSRLS, owns no table")
    ]
    missing = [name for name in ROLE_TIMEOUTS if name not in settings]
    if missing:
        found.append(
            Finding(
                "role timeouts",
                WARN,
                f"role {role!r} has no {', '.join(missing)} of its own",
                f"ALTER ROLE {role} SET ... (docs/deploy.md: Roles), so they hold behind PgBouncer",
            )
        )
    else:
        found.append(Finding("role timeouts", OK, f"role {role!r} sets {', '.join(ROLE_TIMEOUTS)}"))
    return found


def row_security_finding(conn: psycopg.Connection) -> Finding:
    rows = conn.execute(ROW_SECURITY_SQL, {"tables": list(USER_TABLES)}).fetchall()
    missing = [name for name, enabled, _ in rows if enabled is None]
    weak = [
        name for name, enabled, forced in rows if enabled is not None and not (enabled and forced)
    ]
    if missing or weak:
        parts = [f"no table {', '.join(missing)}"] if missing else []
        if weak:
            parts.append(f"not enabled and forced on {', '.join(weak)}")
        return Finding(
            "row security",
            FAIL,
            "; ".join(parts),
            "run todo-server migrate; ALTER TABLE ... ENABLE and FORCE ROW LEVEL SECURITY",
        )
    return Finding("row security", OK, f"enabled and forced on {', '.join(USER_TABLES)}")


def pooler_finding(conn: psycopg.Connection, database: DatabaseSettings) -> Finding:
    """A pooler hands the client its own backend key, so the pid the client was told
    is not the server's; it pools by transaction when a second client's transaction
    gets the server connection the first one just used (a session pooler keeps it)."""
    setting = "DB_PGBOUNCER=transaction" if database.pgbouncer else "DB_PGBOUNCER unset"
    first = _backend_pid(conn)
    pooled = conn.info.backend_pid != first
    by_transaction = False
    if pooled:
        other = psycopg.connect(database.url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        with other, other.transaction():
            second = _backend_pid(other)
            by_transaction = second == first or _backend_pid(conn) != first
    if by_transaction and not database.pgbouncer:
        return Finding(
            "pooler",
            FAIL,
            "a transaction pooler is between the service and PostgreSQL, and DB_PGBOUNCER is unset",
            "set DB_PGBOUNCER=transaction (docs/deploy.md: PgBouncer)",
        )
    if database.pgbouncer and not by_transaction:
        return Finding(
            "pooler",
            WARN,
            "DB_PGBOUNCER=transaction, but no transaction pooler answers",
            "unset DB_PGBOUNCER to use server-side prepared statements",
        )
    what = (
        "a transaction pooler"
        if by_transaction
        else "a session pooler"
        if pooled
        else "PostgreSQL directly"
    )
    return Finding("pooler", OK, f"{what}; {setting}")


def _backend_pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def clock_finding(conn: psycopg.Connection, clock: Callable[[], float]) -> Finding:
    before = clock()
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    after = clock()
    assert row is not None
    skew = float(row[0]) - (before + after) / 2
    side = "ahead of" if skew > 0 else "behind"
    detail = f"the database's clock is {abs(skew):.1f} s {side} this host's"
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        return Finding("clock skew", WARN, detail, "synchronise both clocks (NTP)")
    return Finding("clock skew", OK, detail)


# --- the JWKS ---------------------------------------------------------------


def jwks_findings(settings: Settings) -> list[Finding]:
    assert settings.jwks_url is not None
    try:
        keys = parse_jwks(fetch_document(settings.jwks_url))
    except (OSError, ValueError) as exc:
        return [
            Finding(
                "jwks",
                FAIL,
                f"cannot fetch {settings.jwks_url}: {exc}",
                "check JWT_JWKS_URL and that the frontend is up",
            )
        ]
    offered = sorted({str(key.algorithm_name) for key in keys.values()})
    accepted = [name for name in offered if name in settings.jwt_algorithms]
    findings = []
    if not keys:
        findings.append(
            Finding(
                "jwks",
                FAIL,
                f"{settings.jwks_url} lists no usable key",
                "check the frontend's JWT plugin",
            )
        )
    elif not accepted:
        findings.append(
            Finding(
                "jwks",
                FAIL,
                f"its keys sign with {', '.join(offered)}; JWT_ALGORITHMS accepts"
                f" {', '.join(settings.jwt_algorithms)}",
                f"add {offered[0]} to JWT_ALGORITHMS, or change the frontend's key algorithm",
            )
        )
    elif len(accepted) < len(offered):
        findings.append(
            Finding(
                "jwks",
                WARN,
                f"keys for {', '.join(sorted(set(offered) - set(accepted)))} are not accepted",
                "add them to JWT_ALGORITHMS if the frontend signs with them",
            )
        )
    else:
        findings.append(Finding("jwks", OK, f"{len(keys)} keys, algorithms {', '.join(offered)}"))
    origin = url_origin(settings.jwks_url)
    mismatched = [
        f"{name} {value!r}"
        for name, value in (("issuer", settings.jwks_issuer), ("audience", settings.jwks_audience))
        if value is not None and value != origin
    ]
    if mismatched:
        findings.append(
            Finding(
                "jwks issuer",
                WARN,
                f"{'; '.join(mismatched)} differ from the JWKS origin {origin!r}",
                "Better Auth writes its base URL's origin into iss and aud;"
                " check JWT_JWKS_ISSUER and JWT_JWKS_AUDIENCE",
            )
        )
    else:
        findings.append(
            Finding("jwks issuer", OK, f"issuer and audience match {origin!r} or are unchecked")
        )
    return findings


# --- Better Auth's session store ----------------------------------------------

#: Column types Better Auth's schema uses for the session columns the lookup reads.
TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")
TEXT_TYPES = ("text", "character varying", "uuid")

COLUMN_TYPES_SQL = """
SELECT a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute AS a
WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped
"""


def session_store_findings(store: SessionStoreSettings) -> list[Finding]:
    try:
        conn = psycopg.connect(store.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.Error as exc:
        return [
            Finding(
                "better auth database",
                FAIL,
                f"cannot connect to {store.display_url}: {_first_line(exc)}",
                "check BETTER_AUTH_DATABASE_URL and that the server is up",
            )
        ]
    with conn:
        found = [Finding("better auth database", OK, f"connected to {store.display_url}")]
        found.append(timezone_finding(conn))
        found.append(session_lookup_finding(conn, store))
        found.append(session_columns_finding(conn, store))
    return found


def timezone_finding(conn: psycopg.Connection) -> Finding:
    row = conn.execute("SELECT current_setting('TimeZone')").fetchone()
    assert row is not None
    zone = str(row[0])
    if zone.upper() in ("UTC", "ETC/UTC", "GMT", "ETC/GMT", "UCT", "ZULU", "ETC/UCT"):
        return Finding("better auth timezone", OK, f"TimeZone is {zone}")
    return Finding(
        "better auth timezone",
        WARN,
        f"TimeZone is {zone}: Better Auth writes UTC wall clocks into timestamp without time zone"
        " columns, which other readers then take as local time",
        "ALTER DATABASE ... SET TimeZone = 'UTC'",
    )


def session_lookup_finding(conn: psycopg.Connection, store: SessionStoreSettings) -> Finding:
    """Look up a token no session has: the function or the query, with the role's grants."""
    probe = "todo-doctor-" + secrets.token_hex(8)
    try:
        with conn.transaction():
            conn.execute(session_lookup_sql(store), {"token": probe}).fetchall()
    except psycopg.Error as exc:
        return Finding(
            "better auth sessions",
            FAIL,
            f"the {store.lookup} lookup fails: {_first_line(exc)}",
            f"check {LOOKUP_CHECKS[store.lookup]}",
        )
    how = f"{SESSION_FUNCTION}(text)" if store.lookup == "function" else "the session table"
    return Finding("better auth sessions", OK, f"a token lookup through {how} runs")


def session_columns_finding(conn: psycopg.Connection, store: SessionStoreSettings) -> Finding:
    table = ".".join(sql.Identifier(part).as_string(conn) for part in store.session_table)
    rows = conn.execute(COLUMN_TYPES_SQL, {"table": table}).fetchall()
    types: dict[str, str] = {str(column): str(kind) for column, kind in rows}
    if not types:
        if store.lookup == "function":
            return Finding("better auth columns", OK, f"{table} is not visible to this role")
        return Finding(
            "better auth columns", FAIL, f"no table {table}", "check BETTER_AUTH_SESSION_TABLE"
        )
    wanted: tuple[tuple[str, tuple[str, ...]], ...] = (
        (store.token_column, TEXT_TYPES),
        (store.user_id_column, TEXT_TYPES + ("integer", "bigint")),
        (store.expires_at_column, TIMESTAMP_TYPES),
    )
    wrong = [
        f"{column} is {types.get(column, 'missing')}"
        for column, allowed in wanted
        if types.get(column, "missing") not in allowed
    ]
    if wrong:
        return Finding(
            "better auth columns",
            FAIL,
            f"{table}: {'; '.join(wrong)}",
            "check BETTER_AUTH_SESSION_COLUMNS against Better Auth's schema",
        )
    expiry = types[store.expires_at_column]
    return Finding("better auth columns", OK, f"{table}: {store.expires_at_column} is {expiry}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
