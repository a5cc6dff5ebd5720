"""The todo-server command: version, migrate, serve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import psycopg
import pytest

from devtools.liveserver import ROOT, LiveServer
from devtools.postgres import find_bindir
from tests.support.database import settings_env
from tests.support.signing import TEST_SECRET
from todo_server.storage import migrate


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "todo_server", *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version():
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.strip() == "0.1.0"


def test_missing_setting_stops_with_one_line_naming_it():
    result = run_cli("serve", env={"BETTER_AUTH_SECRET": TEST_SECRET})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "todo-server: configuration error: DATABASE_URL: is required (a postgresql:// URL)"
    ]


def test_bad_setting_never_echoes_the_secret(database_url):
    result = run_cli(
        "serve", env={"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": "too-short-secret"}
    )
    assert result.returncode == 2
    assert "BETTER_AUTH_SECRET" in result.stderr
    assert "too-short-secret" not in result.stderr


def test_migrate_applies_then_reports_status(pg_server):
    url = pg_server.create_database("todo_cli")
    env = {"DATABASE_URL": url}
    result = run_cli("migrate", "status", env=env)
    assert result.returncode == 3  # pending: a pipeline can gate on it
    migrations = migrate.discover()
    assert result.stdout.splitlines() == [
        f"{m.path.name}  pending  sha256:{m.checksum}" for m in migrations
    ]

    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"applied {m.path.name}" for m in migrations]

    result = run_cli("migrate", "status", env=env)
    assert result.returncode == 0
    assert all(" applied 20" in line for line in result.stdout.splitlines())
    assert (
        run_cli("migrate", env=env).stdout.strip() == "nothing to apply; the database is up to date"
    )


@pytest.mark.slow
def test_migrate_status_json_and_verify_report_drift(pg_server, tmp_path):
    url = pg_server.create_database("todo_cli")
    env = {"DATABASE_URL": url}
    assert run_cli("migrate", env=env).returncode == 0
    status = json.loads(run_cli("migrate", "status", "--json", env=env).stdout)
    assert status["state"] == "current"
    first = status["files"][0]
    assert first["version"] == 1 and first["state"] == "applied"
    assert first["checksum"] == migrate.discover()[0].checksum
    result = run_cli("migrate", "verify", env=env)
    assert (result.returncode, result.stdout.split(":")[0]) == (0, "verified")

    # History that the files do not match: the checksum of version 1 differs.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    for args in (("status",), ("verify",), ("sql",), ()):
        result = run_cli("migrate", *args, env=env)
        assert result.returncode == 4, (args, result.stderr)
    status = json.loads(run_cli("migrate", "status", "--json", env=env).stdout)
    assert (status["state"], status["files"][0]["state"]) == ("drift", "changed")


def test_migrate_sql_prints_a_script_psql_applies_in_one_transaction(pg_server):
    url = pg_server.create_database("todo_cli")
    env = {"DATABASE_URL": url}
    script = run_cli("migrate", "sql", env=env)
    assert script.returncode == 0, script.stderr
    psql = shutil.which("psql") or str(find_bindir() / "psql")
    applied = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", "-", url],
        input=script.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert run_cli("migrate", "status", env=env).returncode == 0  # current
    assert run_cli("migrate", "sql", env=env).stdout.count("INSERT INTO schema_migrations") == 0


def test_migration_database_url_is_used_by_migrate_only(pg_server):
    owner_db = pg_server.create_database("todo_cli")
    env = {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "MIGRATION_DATABASE_URL": owner_db,
    }
    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert run_cli("migrate", "status", env=env).returncode == 0


def test_a_migrate_waiting_on_anothers_lock_gives_up_naming_the_holder(pg_server):
    url = pg_server.create_database("todo_cli")
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SET application_name = 'the-other-deploy'")
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.ADVISORY_LOCK_KEY,))
        result = run_cli("migrate", env={"DATABASE_URL": url, "MIGRATION_LOCK_TIMEOUT": "0.5"})
    assert result.returncode == 1
    assert "another migration run holds the lock after 0.5 s: pid" in result.stderr
    assert "application the-other-deploy" in result.stderr
    # Nothing was applied, and no lock is left behind: the next run applies everything.
    assert run_cli("migrate", env={"DATABASE_URL": url}).returncode == 0


def test_serve_refuses_to_start_while_migrations_are_pending(pg_server):
    url = pg_server.create_database("todo_pending")
    server = LiveServer(settings_env(url))
    try:
        server.start()
    except RuntimeError as exc:
        message = str(exc)
    else:
        server.stop()
        raise AssertionError("the server started with pending migrations")
    names = ", ".join(m.path.name for m in migrate.discover())
    assert message.splitlines()[-1] == (
        f"todo-server: migration error: migrations pending: {names};"
        " run `todo-server migrate` (or ./run.sh migrate) first"
    )
    assert "Traceback" not in message


def test_serve_end_to_end_with_json_logs(database_url):
    env = settings_env(database_url, LOG_FORMAT="json")
    with LiveServer(env) as server:
        r = httpx2.get(server.base_url + "/health", headers={"X-Request-ID": "e2e-1"})
        assert r.status_code == 200
        assert r.json()["database"] == "ok"
        assert r.headers["x-request-id"] == "e2e-1"
    lines = [json.loads(line) for line in server.output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "todo_server.access"]
    assert {
        "method": "GET",
        "path": "/health",
        "status": 200,
        "request_id": "e2e-1",
        "user_id": None,
    }.items() <= access[-1].items()
    assert isinstance(access[-1]["duration_ms"], float)
    # Stopped with SIGTERM, the server still writes out its last queued lines.
    assert lines[-1]["message"].startswith("Finished server process")
    assert TEST_SECRET not in server.output


def package_with_migrations(tmp_path: Path, extra: dict[str, bytes]) -> Path:
    """A copy of the package whose migrations are the project's plus ``extra``; its root."""
    root = tmp_path / "installed"
    package = ROOT / "todo_server"
    shutil.copytree(
        package,
        root / "todo_server",
        ignore=shutil.ignore_patterns("migrations", "__pycache__"),
    )
    shutil.copytree(package / "migrations", root / "todo_server" / "migrations")
    for name, data in extra.items():
        (root / "todo_server" / "migrations" / name).write_bytes(data)
    return root


def run_installed(root: Path, *args: str, env: dict[str, str], timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "todo_server", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


NOT_UTF8 = {"0099_latin1.sql": "-- notes\nCOMMENT ON TABLE tasks IS 'café';\n".encode("latin-1")}
NOT_UTF8_LINE = (
    "todo-server: migration error: 0099_latin1.sql: not UTF-8 (byte 0xe9 on line 2);"
    " save the file as UTF-8"
)


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("verify",), ("sql",), ()])
def test_a_migration_file_that_is_not_utf8_is_one_line_naming_it(pg_server, tmp_path, args):
    url = pg_server.create_database("todo_cli")
    root = package_with_migrations(tmp_path, NOT_UTF8)
    result = run_installed(root, "migrate", *args, env={"DATABASE_URL": url})
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (
        1,
        [NOT_UTF8_LINE],
        "",
    )
    with psycopg.connect(url, autocommit=True) as conn:  # nothing was applied
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None


def test_serve_refuses_a_migration_file_that_is_not_utf8(database_url, tmp_path):
    root = package_with_migrations(tmp_path, NOT_UTF8)
    result = run_installed(root, "serve", env=settings_env(database_url))
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (1, [NOT_UTF8_LINE])
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_migration_file_that_is_not_utf8_while_the_database_is_down(
    tmp_path,
):
    root = package_with_migrations(tmp_path, NOT_UTF8)
    env = settings_env("postgresql://nobody@127.0.0.1:1/none")
    result = run_installed(root, "serve", env=env, timeout=30)
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (1, [NOT_UTF8_LINE])
    assert "Traceback" not in result.stderr


def psql_file(url: str, script: str, *variables: str) -> subprocess.CompletedProcess[str]:
    """``psql -f`` as docs/deploy.md says to run a ``migrate sql`` script."""
    psql = shutil.which("psql") or str(find_bindir() / "psql")
    options = [option for variable in variables for option in ("-v", variable)]
    return subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", *options, "-1", "-f", "-", url],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_sql_never_lets_psql_run_a_backslash_command_from_a_file(pg_server, tmp_path):
    marker = tmp_path / "shell-ran"
    root = package_with_migrations(
        tmp_path,
        {"0099_shell.sql": f"CREATE TABLE shell_ran (id int);\n\\! touch {marker}\n".encode()},
    )
    by_script, by_runner = (pg_server.create_database("todo_cli") for _ in range(2))
    script = run_installed(root, "migrate", "sql", env={"DATABASE_URL": by_script})
    assert script.returncode == 0, script.stderr

    applied = psql_file(by_script, script.stdout)
    # What `migrate` does with the file: the server refuses it, nothing is applied.
    runner = run_installed(root, "migrate", env={"DATABASE_URL": by_runner})
    assert not marker.exists()
    assert applied.returncode == 3
    assert 'ERROR:  syntax error at or near "\\"' in applied.stderr
    assert runner.returncode == 1
    assert 'migration error: 0099_shell.sql failed: syntax error at or near "\\"' in runner.stderr
    with psycopg.connect(by_script, autocommit=True) as conn:  # all or nothing: nothing
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None
    with psycopg.connect(by_runner, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('shell_ran')").fetchone()[0] is None
        assert 99 not in [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]


def test_a_nul_byte_cannot_end_migrate_sqls_quoting_under_psql(pg_server, tmp_path):
    """psql reads lines as C strings: a NUL cuts its line, and the next line joins the rest.

    Split by a NUL and a newline, the script's own dollar-quote tag is invisible to a
    search of the file but whole to psql, which would then run the ``\\!`` after it.
    The server cannot take a NUL either, so such a file is refused before any SQL.
    """
    marker = tmp_path / "shell-ran"
    planted = (
        b"CREATE TABLE notes (id int);\n/* $todo_0099\x00\n$ \\! touch "
        + str(marker).encode()
        + b"\n*/\n"
    )
    root = package_with_migrations(tmp_path, {"0099_add_a_note.sql": planted})
    url = pg_server.create_database("todo_cli")
    for action in (["migrate", "sql"], ["migrate"], ["migrate", "status"]):
        refused = run_installed(root, *action, env={"DATABASE_URL": url})
        assert refused.returncode == 1, (action, refused.stdout)
        assert refused.stdout == ""
        assert refused.stderr.strip().splitlines() == [
            "todo-server: migration error: 0099_add_a_note.sql: holds a NUL byte (line 2),"
            " which neither PostgreSQL nor psql can read as SQL"
        ], action
    assert not marker.exists()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('notes')").fetchone()[0] is None


def test_migrate_sql_leaves_colon_names_to_the_server_whatever_psql_variables_say(
    pg_server, tmp_path
):
    slice_sql = (
        "CREATE TABLE slice AS SELECT (ARRAY[1, 2, 3])[2:x] AS part, ':x' AS quoted"
        " FROM (SELECT 3 AS x) AS s;\n"
    )
    root = package_with_migrations(tmp_path, {"0099_slice.sql": slice_sql.encode()})
    by_script, by_runner = (pg_server.create_database("todo_cli") for _ in range(2))
    script = run_installed(root, "migrate", "sql", env={"DATABASE_URL": by_script})
    assert script.returncode == 0, script.stderr
    applied = psql_file(by_script, script.stdout, "x=1")
    assert applied.returncode == 0, applied.stderr
    assert run_installed(root, "migrate", env={"DATABASE_URL": by_runner}).returncode == 0
    for url in (by_script, by_runner):
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT part, quoted FROM slice").fetchone() == ([2, 3], ":x")
            assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == 99


def test_migrate_sql_quotes_a_file_that_holds_its_own_quote_tag(pg_server, tmp_path):
    sql = "CREATE TABLE tagged AS SELECT $todo_0001$ $todo_0001_$ ; $todo_0001$ AS body;\n"
    (tmp_path / "0001_tagged.sql").write_text(sql)
    script = migrate.script(migrate.discover(tmp_path), runtime_role="todo_app")
    url = pg_server.create_database("todo_cli")
    applied = psql_file(url, script)
    assert applied.returncode == 0, applied.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT body FROM tagged").fetchone()[0] == " $todo_0001_$ ; "


def test_a_migrate_sql_script_stops_when_a_file_leaves_its_transaction(
    pg_server, tmp_path, monkeypatch
):
    """Should the scan ever miss a COMMIT, the script stops there and records nothing."""
    monkeypatch.setattr(migrate, "refuse_transaction_control", lambda migration: None)
    (tmp_path / "0001_escape.sql").write_text("CREATE TABLE a (id int);\nCOMMIT;\n")
    script = migrate.script(migrate.discover(tmp_path), runtime_role="todo_app")
    url = pg_server.create_database("todo_cli")
    applied = psql_file(url, script)
    assert applied.returncode == 3
    assert "ERROR:  0001_escape.sql ended the transaction it runs in" in applied.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == 0
