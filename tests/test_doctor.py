"""``todo-server doctor``: each check against a deployment that passes it and one that fails it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devtools.postgres import as_role
from tests.support.database import MIGRATION_DEFAULTS, DatabaseServer, settings_env
from tests.support.pgbouncer import through
from tests.support.signing import JwksServer, SigningKey
from tests.system.test_run_sh import fresh_checkout
from todo_server import cli, doctor
from todo_server.doctor import Finding
from todo_server.storage import migrate

ROOT = Path(__file__).resolve().parents[1]


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    found: dict[str, Finding] = {}
    for finding in findings:
        assert finding.check not in found, f"two findings for {finding.check}"
        found[finding.check] = finding
    return found


def diagnose(database_url: str, **overrides: str) -> dict[str, Finding]:
    return by_check(doctor.diagnose(settings_env(database_url, **overrides)))


@pytest.fixture
def fresh_database(pg_server: DatabaseServer) -> str:
    """A database of its own, migrated as ``todo-server migrate`` does; the admin's URL."""
    url = pg_server.create_database("todo_doctor")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply(conn, **MIGRATION_DEFAULTS)
    return url


def test_a_fresh_local_deployment_is_all_ok(database_url: str) -> None:
    findings = doctor.diagnose(settings_env(database_url))
    assert [f.line() for f in findings if f.status != "ok"] == []
    assert doctor.exit_status(findings) == 0
    names = {f.check for f in findings}
    assert {"settings", "database", "migrations", "runtime role", "role timeouts"} <= names
    assert {"row security", "pooler", "clock skew", "secret", "cors", "production"} <= names


def test_the_command_prints_lines_or_json_and_exits_by_the_worst(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in settings_env(database_url, ALLOWED_ORIGINS="*").items():
        monkeypatch.setenv(name, value)
    assert cli.main(["doctor"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        "warn  cors: ALLOWED_ORIGINS is '*': any web page may call the API; list the origins"
        in (lines)
    )
    assert all(line.split()[0] in ("ok", "warn", "fail") for line in lines)
    assert cli.main(["doctor", "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)
    assert {(item["check"], item["status"]) for item in listed} >= {
        ("cors", "warn"),
        ("database", "ok"),
    }
    assert all(set(item) == {"check", "status", "detail", "fix"} for item in listed)
    monkeypatch.setenv("PORT", "not-a-port")
    assert cli.main(["doctor"]) == 2


def test_a_setting_that_does_not_parse_fails_naming_the_variable(database_url: str) -> None:
    found = diagnose(database_url, PORT="eighty")
    assert found["settings"].status == "fail"
    assert "PORT" in found["settings"].detail
    # The database is still checked with the database settings.
    assert found["database"].status == "ok"
    assert found["migrations"].status == "ok"


def test_an_unreachable_database_fails() -> None:
    env = settings_env("postgresql://todo_app@127.0.0.1:1/nowhere")
    found = by_check(doctor.diagnose(env))
    assert found["database"].status == "fail"
    assert "cannot connect" in found["database"].detail
    assert "migrations" not in found


def test_a_pending_migration_fails(fresh_database: str) -> None:
    assert diagnose(fresh_database)["migrations"].status == "ok"
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM schema_migrations"
            " WHERE version = (SELECT max(version) FROM schema_migrations)"
        )
    found = diagnose(fresh_database)["migrations"]
    assert (found.status, found.fix) == ("fail", "run todo-server migrate")
    assert "pending: 0012_" in found.detail


def test_a_changed_checksum_fails(fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    found = diagnose(fresh_database)["migrations"]
    assert found.status == "fail"
    assert "0001_create_users_and_tasks.sql changed" in found.detail


def test_the_schema_owner_as_runtime_role_fails(database_url: str) -> None:
    found = diagnose(database_url, DATABASE_URL=database_url)
    role = found["runtime role"]
    assert role.status == "fail"
    assert (
        "a superuser" in role.detail
        and "the owner (or a member of the owner's role) of idempotency_keys, tasks, users"
        in role.detail
    )


@pytest.fixture
def bare_role(pg_server: DatabaseServer, database_url: str) -> Iterator[str]:
    """A login role with the runtime role's grants (by membership) but no timeouts of its own."""
    name = "todo_doctor_bare"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE todo_app").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_bypassrls_role_fails(
    database_url: str, bare_role: str, pg_server: DatabaseServer
) -> None:
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(bare_role)))
    role = diagnose(database_url, DATABASE_URL=as_role(database_url, bare_role))["runtime role"]
    assert role.status == "fail"
    assert role.detail == f"{bare_role!r} is BYPASSRLS: row-level security does not apply"


def test_a_member_of_the_owners_role_fails(
    database_url: str, bare_role: str, pg_server: DatabaseServer
) -> None:
    """GRANT owner TO runtime: the role may turn row-level security off, as the owner may."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'tasks'"
        ).fetchone()[0]
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(bare_role))
        )
    role = diagnose(database_url, DATABASE_URL=as_role(database_url, bare_role))["runtime role"]
    assert role.status == "fail"
    assert "the owner (or a member of the owner's role) of idempotency_keys, tasks, users" in (
        role.detail
    )


def test_what_start_up_would_note_is_a_settings_warning(database_url: str) -> None:
    found = diagnose(database_url, MAX_CONNECTIONS="10", MAX_CONNECTIONS_PER_CLIENT="10")
    assert found["settings"].status == "warn"
    assert "one client address can take every connection" in found["settings"].detail


def test_a_role_without_timeouts_warns(database_url: str, bare_role: str) -> None:
    found = diagnose(database_url, DATABASE_URL=as_role(database_url, bare_role))
    assert found["runtime role"].status == "ok"
    timeouts = found["role timeouts"]
    assert timeouts.status == "warn"
    assert "statement_timeout, lock_timeout, idle_in_transaction_session_timeout" in timeouts.detail
    assert diagnose(database_url)["role timeouts"].status == "ok"


def test_row_security_not_forced_fails(fresh_database: str) -> None:
    assert (
        diagnose(fresh_database, DATABASE_URL=as_role(fresh_database))["row security"].status
        == "ok"
    )
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("ALTER TABLE idempotency_keys NO FORCE ROW LEVEL SECURITY")
    found = diagnose(fresh_database, DATABASE_URL=as_role(fresh_database))["row security"]
    assert found.status == "fail"
    assert found.detail == "not enabled and forced on idempotency_keys"


@pytest.mark.slow
def test_a_transaction_pooler_without_db_pgbouncer_fails(database_url: str, bouncer) -> None:
    url = through(bouncer, database_url)
    pooled = diagnose(database_url, DATABASE_URL=url)["pooler"]
    assert pooled.status == "fail"
    assert pooled.fix == "set DB_PGBOUNCER=transaction (docs/deploy.md: PgBouncer)"
    told = diagnose(database_url, DATABASE_URL=url, DB_PGBOUNCER="transaction")["pooler"]
    assert (told.status, told.detail) == ("ok", "a transaction pooler; DB_PGBOUNCER=transaction")


def test_db_pgbouncer_without_a_pooler_warns(database_url: str) -> None:
    assert diagnose(database_url)["pooler"].detail == "PostgreSQL directly; DB_PGBOUNCER unset"
    found = diagnose(database_url, DB_PGBOUNCER="transaction")["pooler"]
    assert found.status == "warn"


def test_clock_skew_above_two_seconds_warns(database_url: str) -> None:
    env = settings_env(database_url)
    skewed = by_check(doctor.diagnose(env, clock=lambda: time.time() + 10))["clock skew"]
    assert skewed.status == "warn"
    assert "behind this host's" in skewed.detail
    assert by_check(doctor.diagnose(env))["clock skew"].status == "ok"


@pytest.fixture
def ed25519_jwks() -> Iterator[JwksServer]:
    server = JwksServer([SigningKey.ed25519("ed-1")])
    yield server
    server.close()


@pytest.fixture
def rsa_jwks() -> Iterator[JwksServer]:
    server = JwksServer([SigningKey.rsa("rsa-1")])
    yield server
    server.close()


def test_a_jwks_signing_with_the_accepted_algorithm_is_ok(
    database_url: str, ed25519_jwks: JwksServer
) -> None:
    found = diagnose(database_url, JWT_JWKS_URL=ed25519_jwks.url)
    assert found["jwks"].status == "ok"
    assert found["jwks issuer"].status == "ok"


def test_a_jwks_signing_with_an_algorithm_not_accepted_fails(
    database_url: str, rsa_jwks: JwksServer
) -> None:
    found = diagnose(database_url, JWT_JWKS_URL=rsa_jwks.url)["jwks"]
    assert found.status == "fail"
    assert "sign with RS256" in found.detail
    assert found.fix.startswith("add RS256 to JWT_ALGORITHMS")
    accepted = diagnose(database_url, JWT_JWKS_URL=rsa_jwks.url, JWT_ALGORITHMS="RS256,HS256")
    assert accepted["jwks"].status == "ok"


def test_an_unreachable_jwks_fails(database_url: str) -> None:
    found = diagnose(database_url, JWT_JWKS_URL="http://127.0.0.1:1/api/auth/jwks")["jwks"]
    assert found.status == "fail"
    assert "cannot fetch" in found.detail


def test_a_jwks_issuer_not_its_origin_warns(database_url: str, ed25519_jwks: JwksServer) -> None:
    found = diagnose(
        database_url, JWT_JWKS_URL=ed25519_jwks.url, JWT_JWKS_ISSUER="https://auth.example.com"
    )["jwks issuer"]
    assert found.status == "warn"
    assert "issuer 'https://auth.example.com'" in found.detail


def test_a_placeholder_secret_warns_and_fails_in_production(database_url: str) -> None:
    placeholder = "change-me-to-a-long-random-secret-of-32-characters-or-more"
    assert diagnose(database_url)["secret"].status == "ok"
    assert diagnose(database_url, BETTER_AUTH_SECRET=placeholder)["secret"].status == "warn"
    found = diagnose(
        database_url,
        BETTER_AUTH_SECRET=placeholder,
        ENVIRONMENT="production",
        ALLOWED_ORIGINS="https://app.example.com",
    )
    assert found["secret"].status == "fail"


def test_a_short_secret_fails(database_url: str) -> None:
    found = diagnose(database_url, BETTER_AUTH_SECRET="short")["secret"]
    assert (found.status, found.detail) == (
        "fail",
        "BETTER_AUTH_SECRET: must be at least 32 characters",
    )


def test_cors_origins_must_be_well_formed(database_url: str) -> None:
    assert diagnose(database_url)["cors"].detail == "origins well formed: http://localhost:3000"
    found = diagnose(database_url, ALLOWED_ORIGINS="https://app.example.com/path")["cors"]
    assert found.status == "fail"
    assert "is not an origin" in found.detail


def test_production_refuses_a_generated_secret_and_plain_http_jwks(
    database_url: str, ed25519_jwks: JwksServer
) -> None:
    production = {"ENVIRONMENT": "production", "ALLOWED_ORIGINS": "https://app.example.com"}
    assert diagnose(database_url, **production)["production"].status == "ok"
    generated = diagnose(
        database_url, BETTER_AUTH_SECRET="generated-local-only-" + "ab12" * 16, **production
    )["production"]
    assert generated.status == "fail"
    assert "generated local secret" in generated.detail
    plain = diagnose(database_url, JWT_JWKS_URL=ed25519_jwks.url, **production)["production"]
    assert (plain.status, plain.detail) == ("fail", "JWT_JWKS_URL: must use https in production")
    wildcard = diagnose(database_url, ENVIRONMENT="production", ALLOWED_ORIGINS="*")["production"]
    assert wildcard.status == "fail"


# --- Better Auth's session store --------------------------------------------------

READER = "todo_doctor_reader"
BETTER_AUTH_SCHEMA = [
    'CREATE TABLE "user" (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE)',
    'CREATE TABLE session (id text PRIMARY KEY, "expiresAt" timestamptz NOT NULL,'
    ' token text NOT NULL UNIQUE, "userId" text NOT NULL REFERENCES "user" (id))',
    "ALTER DATABASE {database} SET TimeZone = {zone}",
]
READ_ONLY_GRANTS = [
    "GRANT USAGE ON SCHEMA public TO todo_doctor_reader",
    'GRANT SELECT (token, "userId", "expiresAt") ON session TO todo_doctor_reader',
    'GRANT SELECT (id, email, name) ON "user" TO todo_doctor_reader',
]


def better_auth_database(pg_server: DatabaseServer, zone: str = "UTC") -> str:
    """A database with Better Auth's user and session tables; the admin's URL."""
    url = pg_server.create_database("better_auth_doctor")
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(READER)))
    with psycopg.connect(url, autocommit=True) as conn:
        database = conn.execute("SELECT current_database()").fetchone()[0]
        for statement in BETTER_AUTH_SCHEMA:
            conn.execute(
                sql.SQL(statement).format(database=sql.Identifier(database), zone=sql.Literal(zone))
            )
    return url


def with_grants(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        for grant in READ_ONLY_GRANTS:
            conn.execute(grant)
    return url


def session_findings(
    database_url: str, better_auth_url: str, **overrides: str
) -> dict[str, Finding]:
    found = diagnose(
        database_url, BETTER_AUTH_DATABASE_URL=as_role(better_auth_url, READER), **overrides
    )
    return {name: finding for name, finding in found.items() if name.startswith("better auth")}


def test_a_session_table_the_reader_may_read_is_ok(
    database_url: str, pg_server: DatabaseServer
) -> None:
    url = with_grants(better_auth_database(pg_server))
    found = session_findings(database_url, url)
    assert {name: f.status for name, f in found.items()} == {
        "better auth database": "ok",
        "better auth timezone": "ok",
        "better auth sessions": "ok",
        "better auth columns": "ok",
    }
    assert found["better auth columns"].detail == (
        '"session": expiresAt is timestamp with time zone'
    )


def test_a_reader_without_grants_fails(database_url: str, pg_server: DatabaseServer) -> None:
    found = session_findings(database_url, better_auth_database(pg_server))["better auth sessions"]
    assert found.status == "fail"
    assert "permission denied" in found.detail
    assert "GRANT SELECT" in found.fix


def test_an_expiry_column_that_is_no_timestamp_fails(
    database_url: str, pg_server: DatabaseServer
) -> None:
    url = better_auth_database(pg_server)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('ALTER TABLE session ALTER "expiresAt" TYPE bigint USING 0')
    found = session_findings(database_url, with_grants(url))["better auth columns"]
    assert found.status == "fail"
    assert found.detail == '"session": expiresAt is bigint'


def test_the_lookup_function_missing_fails_and_present_is_ok(
    database_url: str, pg_server: DatabaseServer
) -> None:
    url = better_auth_database(pg_server)
    missing = session_findings(database_url, url, BETTER_AUTH_SESSION_LOOKUP="function")
    assert missing["better auth sessions"].status == "fail"
    assert "todo_session_user" in missing["better auth sessions"].fix
    function_sql = (ROOT / "deploy" / "better-auth-session-lookup.sql").read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(function_sql.replace("todo_sessions", READER))
    present = session_findings(database_url, url, BETTER_AUTH_SESSION_LOOKUP="function")
    assert {f.status for f in present.values()} == {"ok"}


def test_a_better_auth_database_not_in_utc_warns(
    database_url: str, pg_server: DatabaseServer
) -> None:
    url = with_grants(better_auth_database(pg_server, zone="America/New_York"))
    found = session_findings(database_url, url)["better auth timezone"]
    assert found.status == "warn"
    assert found.detail.startswith("TimeZone is America/New_York")


def test_an_unreachable_better_auth_database_fails(database_url: str) -> None:
    found = diagnose(
        database_url, BETTER_AUTH_DATABASE_URL="postgresql://todo_app@127.0.0.1:1/better_auth"
    )["better auth database"]
    assert found.status == "fail"


@pytest.mark.slow
def test_run_sh_doctor_on_a_fresh_checkout_is_all_ok(tmp_path: Path) -> None:
    """``./run.sh doctor`` with nothing set: the private cluster, migrated, as serve runs it."""
    project = fresh_checkout(tmp_path / "project")
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "BETTER_AUTH_SECRET", "VIRTUAL_ENV")
    }
    migrated = subprocess.run(
        ["./run.sh", "migrate"], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    assert migrated.returncode == 0, migrated.stderr
    checked = subprocess.run(
        ["./run.sh", "doctor"], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) >= 11
    assert all(line.startswith("ok    ") for line in lines), lines
