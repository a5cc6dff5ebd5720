"""Opaque Better Auth session tokens, against a real Better Auth on the test PostgreSQL.

Better Auth (the npm package, its PostgreSQL adapter) runs its own migrations in
a database of its own and signs users up over its HTTP API; the service looks
their session tokens up there as the read-only role docs/authentication.md describes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import psycopg
import pytest
from psycopg import sql
from starlette.testclient import TestClient

from devtools.liveserver import ROOT
from devtools.postgres import as_role
from tests.support.assertions import assert_401, assert_503
from tests.support.better_auth import BetterAuthServer
from tests.support.database import MIGRATION_DEFAULTS, DatabaseServer, settings_env
from tests.support.signing import TEST_SECRET, bearer, frontend_token
from tests.support.timekeeping import ManualClock
from todo_server.app import create_app
from todo_server.auth import better_auth_sessions
from todo_server.auth.better_auth_sessions import SessionStore
from todo_server.auth.identity import InvalidToken
from todo_server.config import load_settings
from todo_server.storage import migrate

READER = "todo_sessions"

#: The grants for a read-only role (checked below to be docs/authentication.md's text).
READ_ONLY_GRANTS = [
    "GRANT USAGE ON SCHEMA public TO todo_sessions;",
    'GRANT SELECT (token, "userId", "expiresAt") ON session TO todo_sessions;',
    'GRANT SELECT (id, email, name) ON "user" TO todo_sessions;',
]


def ensure_reader_role(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(READER)))
        conn.execute(
            sql.SQL("ALTER ROLE {} SET statement_timeout = '5s'").format(sql.Identifier(READER))
        )


@pytest.fixture(scope="module")
def better_auth_url(pg_server: DatabaseServer) -> str:
    """Better Auth's own database; it runs its own migrations there."""
    url = pg_server.create_database("better_auth")
    ensure_reader_role(pg_server.admin_url)
    return url


@pytest.fixture(scope="module")
def better_auth(better_auth_url: str) -> Iterator[BetterAuthServer]:
    server = BetterAuthServer(better_auth_url, TEST_SECRET)
    with psycopg.connect(better_auth_url, autocommit=True) as conn:
        for grant in READ_ONLY_GRANTS:
            conn.execute(grant)
    yield server
    server.stop()


@pytest.fixture
def session_clock(monkeypatch) -> ManualClock:
    """The clock of every SessionStore the test's apps make: cache lifetimes pass when
    the test says so."""
    clock = ManualClock()
    monkeypatch.setitem(SessionStore.__init__.__kwdefaults__, "clock", clock)
    return clock


@pytest.fixture
def session_client(make_client, better_auth, better_auth_url):
    """The service with opaque session tokens on, reading as the read-only role."""

    def make(**overrides: str) -> TestClient:
        return make_client(BETTER_AUTH_DATABASE_URL=as_role(better_auth_url, READER), **overrides)

    return make


def expire(better_auth_url: str, token: str, seconds_from_now: float) -> None:
    with psycopg.connect(better_auth_url, autocommit=True) as conn:
        conn.execute(
            'UPDATE session SET "expiresAt" = now() + make_interval(secs => %s) WHERE token = %s',
            (seconds_from_now, token),
        )


def delete_session(better_auth_url: str, token: str) -> None:
    with psycopg.connect(better_auth_url, autocommit=True) as conn:
        assert conn.execute("DELETE FROM session WHERE token = %s", (token,)).rowcount == 1


# --- what works ---------------------------------------------------------------


def test_session_token_and_signed_cookie_open_the_api_as_their_user(session_client, better_auth):
    client = session_client()
    ada, bob = better_auth.sign_up("Ada"), better_auth.sign_up("Bob")
    # The cookie as the browser holds it (URL-encoded), decoded as a frontend may read it, and
    # with the signature in base64url without padding, as Better Auth's bearer plugin accepts it.
    token, _, signature = unquote(ada.cookie).rpartition(".")
    base64url = signature.rstrip("=").replace("+", "-").replace("/", "_")
    for credential in (ada.token, ada.cookie, unquote(ada.cookie), f"{token}.{base64url}"):
        r = client.get("/auth/me", headers=bearer(credential))
        assert r.status_code == 200, r.text
        assert r.json() == {"id": ada.user_id, "email": ada.email, "name": "Ada"}
    assert "." in unquote(ada.cookie) and "%" in ada.cookie  # both forms really were sent

    r = client.post("/api/tasks", headers=bearer(ada.token), json={"title": "Ada's"})
    assert r.status_code == 201, r.text
    r = client.post("/api/tasks", headers=bearer(bob.cookie), json={"title": "Bob's"})
    assert r.status_code == 201, r.text
    for user, title in ((ada, "Ada's"), (bob, "Bob's")):
        for credential in (user.token, user.cookie):
            r = client.get("/api/tasks", headers=bearer(credential))
            assert r.status_code == 200, r.text
            assert [task["title"] for task in r.json()["tasks"]] == [title]
    # The path prefix that names a user checks it against the session's user.
    assert client.get(f"/api/{ada.user_id}/tasks", headers=bearer(ada.token)).status_code == 200
    assert client.get(f"/api/{bob.user_id}/tasks", headers=bearer(ada.token)).status_code == 403


def test_jwts_still_work_beside_session_tokens(session_client):
    client = session_client()
    r = client.get("/auth/me", headers=bearer(frontend_token("minted")))
    assert r.status_code == 200
    assert r.json()["id"] == "minted"


def test_the_same_database_as_database_url(pg_server, make_settings):
    """BETTER_AUTH_DATABASE_URL=same: Better Auth's tables beside ours, read as todo_app."""
    url = pg_server.create_database("todo_same")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply(conn, **MIGRATION_DEFAULTS)
    server = BetterAuthServer(url, TEST_SECRET)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for grant in READ_ONLY_GRANTS:
                conn.execute(grant.replace(READER, "todo_app"))
        ada = server.sign_up("Ada")
        settings = load_settings(settings_env(url, BETTER_AUTH_DATABASE_URL="same"))
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            r = client.get("/auth/me", headers=bearer(ada.cookie))
            assert r.status_code == 200, r.text
            assert r.json()["id"] == ada.user_id
    finally:
        server.stop()


def test_configured_table_and_column_names(pg_server, make_client):
    """A Better Auth whose schema maps to plural tables and snake_case columns."""
    url = pg_server.create_database("better_auth_snake")
    server = BetterAuthServer(url, TEST_SECRET, naming="snake_plural")
    try:
        ada = server.sign_up("Ada")
    finally:
        server.stop()
    client = make_client(
        BETTER_AUTH_DATABASE_URL=url,
        BETTER_AUTH_SESSION_TABLE="public.sessions",
        BETTER_AUTH_SESSION_COLUMNS="session_token, user_id, expires_at",
        BETTER_AUTH_USER_TABLE="users",
    )
    for credential in (ada.token, ada.cookie):
        r = client.get("/auth/me", headers=bearer(credential))
        assert r.status_code == 200, r.text
        assert r.json() == {"id": ada.user_id, "email": ada.email, "name": "Ada"}


# --- the one-token lookup function (the documented set-up) ----------------------

LOOKUP_FUNCTION_FILE = ROOT / "deploy" / "better-auth-session-lookup.sql"


@pytest.fixture(scope="module")
def function_database(pg_server) -> Iterator[tuple[str, BetterAuthServer]]:
    """Better Auth's database with the lookup function, and READER granted only EXECUTE."""
    url = pg_server.create_database("better_auth_fn")
    ensure_reader_role(pg_server.admin_url)
    server = BetterAuthServer(url, TEST_SECRET)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LOOKUP_FUNCTION_FILE.read_text())
    yield url, server
    server.stop()


def test_the_lookup_function_verifies_a_token_and_the_role_reads_no_session(
    function_database, make_client
):
    url, server = function_database
    ada, bob = server.sign_up("Ada"), server.sign_up("Bob")
    client = make_client(
        BETTER_AUTH_DATABASE_URL=as_role(url, READER),
        BETTER_AUTH_SESSION_LOOKUP="function",
        BETTER_AUTH_SESSION_CACHE_TTL="0",
    )
    for user in (ada, bob):
        for credential in (user.token, user.cookie):
            r = client.get("/auth/me", headers=bearer(credential))
            assert r.status_code == 200, r.text
            assert r.json() == {"id": user.user_id, "email": user.email, "name": user.name}
    assert_401(client.get("/auth/me", headers=bearer(secrets.token_urlsafe(24))), "unknown session")
    expire(url, bob.token, -60)
    assert_401(
        client.get("/auth/me", headers=bearer(bob.token)), "expired", message="Session has expired"
    )

    with psycopg.connect(as_role(url, READER), autocommit=True) as reader:
        # EXECUTE only: one token it holds in, its session's user out; no listing.
        row = reader.execute("SELECT user_id FROM todo_session_user(%s)", (ada.token,)).fetchone()
        assert row == (ada.user_id,)
        for statement in (
            "SELECT token FROM session",
            'SELECT "userId" FROM session',
            'SELECT id, email FROM "user"',
            "SELECT * FROM account",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)
        for guess in ("%", "", None):  # no pattern, no wildcard
            assert reader.execute("SELECT * FROM todo_session_user(%s)", (guess,)).fetchall() == []
        definition = reader.execute(
            "SELECT p.prosecdef, p.proconfig, has_function_privilege('public',"
            " p.oid, 'EXECUTE') FROM pg_proc AS p WHERE p.proname = 'todo_session_user'"
        ).fetchone()
    assert definition == (True, ["search_path=pg_catalog, pg_temp"], False)


def test_without_execute_the_function_lookup_is_503_and_says_what_to_check(
    function_database, make_client, caplog
):
    url, server = function_database
    ada = server.sign_up("Ada")
    client = make_client(
        BETTER_AUTH_DATABASE_URL=as_role(url, "todo_app"), BETTER_AUTH_SESSION_LOOKUP="function"
    )
    with caplog.at_level(logging.ERROR, logger="todo_server.sessions"):
        assert_503(client.get("/auth/me", headers=bearer(ada.token)))
    assert "GRANT EXECUTE" in caplog.text and "todo_session_user" in caplog.text
    assert ada.token not in caplog.text


def test_the_authentication_page_documents_the_lookup_function():
    page = (ROOT / "docs" / "authentication.md").read_text()
    assert LOOKUP_FUNCTION_FILE.read_text().partition("CREATE FUNCTION")[2] in page
    assert "BETTER_AUTH_SESSION_LOOKUP=function" in page


# --- what stops working, and when -------------------------------------------


def test_sign_out_stops_the_token_within_the_cache_lifetime(
    session_client, better_auth, session_clock
):
    client = session_client(BETTER_AUTH_SESSION_CACHE_TTL="1")
    ada = better_auth.sign_up("Ada")
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200
    better_auth.sign_out(ada.cookie)
    session_clock.advance(0.9)  # remembered: it works on for at most the cache lifetime
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200
    session_clock.advance(0.2)
    assert_401(client.get("/auth/me", headers=bearer(ada.token)), "unknown session")
    assert_401(client.get("/auth/me", headers=bearer(ada.cookie)), "unknown session")


def test_a_looked_up_session_is_remembered_for_the_cache_lifetime(
    session_client, better_auth, better_auth_url
):
    client = session_client(BETTER_AUTH_SESSION_CACHE_TTL="60")
    ada = better_auth.sign_up("Ada")
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200
    delete_session(better_auth_url, ada.token)
    # Remembered: no query until the entry ages out (60 s here, at most).
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200


def test_no_cache_when_the_lifetime_is_zero(session_client, better_auth, better_auth_url):
    client = session_client(BETTER_AUTH_SESSION_CACHE_TTL="0")
    ada = better_auth.sign_up("Ada")
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200
    delete_session(better_auth_url, ada.token)
    assert_401(client.get("/auth/me", headers=bearer(ada.token)))


def test_expired_session_is_401(session_client, better_auth, better_auth_url):
    client = session_client()
    ada = better_auth.sign_up("Ada")
    expire(better_auth_url, ada.token, -60)
    assert_401(
        client.get("/auth/me", headers=bearer(ada.token)), "expired", message="Session has expired"
    )


def test_a_session_that_never_expires_opens_the_api(session_client, better_auth, better_auth_url):
    client = session_client()
    ada = better_auth.sign_up("Ada")
    with psycopg.connect(better_auth_url, autocommit=True) as conn:
        conn.execute(
            """UPDATE session SET "expiresAt" = 'infinity' WHERE token = %s""", (ada.token,)
        )
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200


def test_a_remembered_session_ends_at_its_expiry(
    session_client, better_auth, better_auth_url, session_clock
):
    client = session_client(BETTER_AUTH_SESSION_CACHE_TTL="60")
    ada = better_auth.sign_up("Ada")
    expire(better_auth_url, ada.token, 30)
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200
    expire(better_auth_url, ada.token, -60)  # what the database says from now on
    session_clock.advance(20)  # within its 30 s: remembered
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200
    session_clock.advance(15)  # past its expiry, though not the 60 s cache lifetime
    r = client.get("/auth/me", headers=bearer(ada.token))
    assert_401(r, "expired", message="Session has expired")


def test_unknown_and_malformed_tokens_are_401(session_client, better_auth):
    client = session_client()
    ada = better_auth.sign_up("Ada")
    token, _, signature = unquote(ada.cookie).rpartition(".")
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    for credential in (
        secrets.token_urlsafe(24),  # looks like a session token, is none
        f"{token}.{forged_signature}",  # a signature that does not match
        f"{token}.{signature[:-2]}=",  # a truncated one
        f"{secrets.token_hex(16)}.{signature}",  # another token under Ada's signature
        f"{token}.",
        f".{signature}",
        "to ken",
        "a.b.c.d",
        "x" * 2000,
        "%ff%fe",
    ):
        assert_401(client.get("/auth/me", headers=bearer(credential)))


def test_a_signature_made_with_another_secret_is_401(session_client, better_auth_url):
    other = BetterAuthServer(better_auth_url, "another-secret-" + "y" * 40)
    try:
        ada = other.sign_up("Ada")
    finally:
        other.stop()
    client = session_client()
    assert_401(client.get("/auth/me", headers=bearer(ada.cookie)), "bad signature")
    # The raw token carries no signature; it is the session's, so it opens the API.
    assert client.get("/auth/me", headers=bearer(ada.token)).status_code == 200


def test_without_the_setting_a_session_token_is_refused_as_before(client, better_auth):
    ada = better_auth.sign_up("Ada")
    for credential in (ada.token, ada.cookie):
        r = client.get("/auth/me", headers=bearer(credential))
        assert_401(r)


# --- when Better Auth's database cannot answer -----------------------------------------


def test_an_unreachable_database_is_503_and_jwts_still_work(make_client, better_auth_url):
    client = make_client(
        BETTER_AUTH_DATABASE_URL=better_auth_url.replace("/better_auth_", "/no_such_db_"),
        DB_POOL_TIMEOUT="0.3",
    )
    assert_503(client.get("/auth/me", headers=bearer(secrets.token_urlsafe(24))))
    assert client.get("/auth/me", headers=bearer(frontend_token())).status_code == 200


def test_missing_grants_and_wrong_names_are_503_and_logged(
    make_client, better_auth, better_auth_url, caplog
):
    ada = better_auth.sign_up("Ada")
    for overrides in (
        {"BETTER_AUTH_DATABASE_URL": as_role(better_auth_url, "todo_app")},  # no GRANT
        {
            "BETTER_AUTH_DATABASE_URL": as_role(better_auth_url, READER),
            "BETTER_AUTH_SESSION_TABLE": "sessions",
        },
        {
            "BETTER_AUTH_DATABASE_URL": as_role(better_auth_url, READER),
            "BETTER_AUTH_SESSION_COLUMNS": "token,user_id,expiresAt",
        },
    ):
        client = make_client(**overrides)
        with caplog.at_level(logging.ERROR, logger="todo_server.sessions"):
            assert_503(client.get("/auth/me", headers=bearer(ada.token)))
        assert "check BETTER_AUTH_SESSION_TABLE" in caplog.text
        assert ada.token not in caplog.text
        caplog.clear()


def test_the_authentication_page_documents_the_read_only_grants():
    page = (ROOT / "docs" / "authentication.md").read_text()
    for grant in READ_ONLY_GRANTS:
        assert grant in page


# --- the cache itself ---------------------------------------------------------------


def test_the_cache_is_bounded_and_drops_the_oldest_first(monkeypatch):
    monkeypatch.setattr(better_auth_sessions, "CACHE_SIZE", 3)
    unused = settings_env("postgresql://unused/x", BETTER_AUTH_DATABASE_URL="same")
    store = better_auth_sessions.SessionStore(load_settings(unused).session_store, TEST_SECRET)
    looked_up: list[str] = []

    async def lookup(token: str) -> dict[str, object]:
        looked_up.append(token)
        return {
            "user_id": "u-" + token,
            "email": None,
            "name": None,
            "expires_at": 9e9,
            "expires_in": 3600.0,
        }

    monkeypatch.setattr(store, "_lookup", lookup)

    async def run() -> None:
        for token in ("a1", "b2", "c3", "d4", "b2", "c3", "d4", "a1"):
            assert (await store.user_for(token)).id == "u-" + token

    asyncio.run(run())
    assert looked_up == ["a1", "b2", "c3", "d4", "a1"]  # a1 was dropped for d4
    assert len(store._cache) == 3


def test_signatures_in_either_base64_alphabet_are_checked():
    """Better Auth signs in standard base64; its bearer plugin also takes base64url."""
    secret = TEST_SECRET.encode()
    for n in range(100):  # a token whose signature has both + and /, so the alphabets differ
        token = f"token{n:027d}"
        standard = base64.b64encode(hmac.new(secret, token.encode(), hashlib.sha256).digest())
        signature = standard.decode()
        if "+" in signature and "/" in signature:
            break
    url_safe = signature.rstrip("=").replace("+", "-").replace("/", "_")
    for form in (signature, signature.rstrip("="), url_safe, url_safe + "="):
        assert better_auth_sessions.session_token(f"{token}.{form}", secret) == token
    mixed_up = signature.replace("+", "/", 1)
    with pytest.raises(InvalidToken, match="bad signature"):
        better_auth_sessions.session_token(f"{token}.{mixed_up}", secret)


# --- expiry, whatever the database's TimeZone --------------------------------------


@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp"])
def test_expiry_is_compared_in_utc_whatever_the_database_time_zone(
    pg_server, make_client, column_type
):
    """Better Auth 1.4+ makes expiresAt timestamptz; 1.3.x made it timestamp without time
    zone and writes the UTC wall-clock time into it. Either way, under a database TimeZone
    far from UTC (either side), an expired session is refused and a live one accepted."""
    url = pg_server.create_database("better_auth_tz")
    ensure_reader_role(pg_server.admin_url)
    server = BetterAuthServer(url, TEST_SECRET)
    try:
        expired, live = server.sign_up("Ada"), server.sign_up("Bob")
    finally:
        server.stop()
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        for grant in READ_ONLY_GRANTS:
            conn.execute(grant)
        if column_type == "timestamp":
            conn.execute(
                """ALTER TABLE session ALTER COLUMN "expiresAt" TYPE timestamp"""
                """ USING "expiresAt" AT TIME ZONE 'UTC'"""
            )
        for user, expires_at in (
            (expired, now - timedelta(hours=1)),
            (live, now + timedelta(hours=1)),
        ):
            # As Better Auth writes it: an instant, or the UTC wall clock without a zone.
            value = expires_at if column_type == "timestamptz" else expires_at.replace(tzinfo=None)
            conn.execute(
                'UPDATE session SET "expiresAt" = %s WHERE token = %s', (value, user.token)
            )
        kind = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            """ WHERE attrelid = 'session'::regclass AND attname = 'expiresAt'"""
        ).fetchone()
        database = conn.info.dbname
        names = {
            "timestamptz": "timestamp with time zone",
            "timestamp": "timestamp without time zone",
        }
        assert kind == (names[column_type],)
        conn.execute(LOOKUP_FUNCTION_FILE.read_text())  # the function reads the column too
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14, UTC-11
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(
                    sql.Identifier(database), sql.Literal(zone)
                )
            )
        with psycopg.connect(as_role(url, READER)) as reader:
            assert reader.execute("SHOW TimeZone").fetchone() == (zone,)
        for lookup in ("table", "function"):
            client = make_client(
                BETTER_AUTH_DATABASE_URL=as_role(url, READER),
                BETTER_AUTH_SESSION_CACHE_TTL="0",
                BETTER_AUTH_SESSION_LOOKUP=lookup,
            )
            r = client.get("/auth/me", headers=bearer(expired.token))
            assert_401(r, "expired", message="Session has expired")
            r = client.get("/auth/me", headers=bearer(live.token))
            assert r.status_code == 200, (zone, lookup, r.text)
