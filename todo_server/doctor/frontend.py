"""Checks of what the frontend provides: its JWKS, and Better Auth's session store."""

from __future__ import annotations

import secrets

import psycopg
from psycopg import sql

from todo_server.auth.better_auth_sessions import (
    LOOKUP_CHECKS,
    SESSION_FUNCTION,
    session_lookup_sql,
)
from todo_server.auth.jwks import fetch_document, parse_jwks
from todo_server.config import SessionStoreSettings, Settings, url_origin
from todo_server.doctor.findings import (
    CONNECT_TIMEOUT_SECONDS,
    FAIL,
    OK,
    WARN,
    Finding,
    first_line,
)


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
                f"cannot connect to {store.display_url}: {first_line(exc)}",
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
            f"the {store.lookup} lookup fails: {first_line(exc)}",
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
