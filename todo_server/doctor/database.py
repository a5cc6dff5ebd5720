"""Checks on the service's own database, as the service's role."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from todo_server.config import DatabaseSettings
from todo_server.doctor.findings import (
    CONNECT_TIMEOUT_SECONDS,
    FAIL,
    OK,
    WARN,
    Finding,
    first_line,
)
from todo_server.storage import migrate
from todo_server.storage.schema_check import ROLE_SETTINGS_SQL, ROLE_TIMEOUTS

#: The tables whose rows belong to one user; row-level security must hold on each.
USER_TABLES = ("tasks", "users", "idempotency_keys")
#: Host and database clocks further apart than this make expiry and purge times wrong.
MAX_CLOCK_SKEW_SECONDS = 2.0

ROLE_SQL = f"""
SELECT r.rolname AS role, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls,
       (SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class AS c
        WHERE pg_has_role(r.oid, c.relowner, 'MEMBER')
          AND c.oid IN (SELECT to_regclass(t) FROM unnest(%(tables)s::text[]) AS t)) AS owns,
       {ROLE_SETTINGS_SQL}
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
                f"cannot connect to {database.display_url}: {first_line(exc)}",
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
                        f"the check failed: {first_line(exc)}",
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
            (f"the owner (or a member of the owner's role) of {', '.join(owns or [])}", owns),
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
