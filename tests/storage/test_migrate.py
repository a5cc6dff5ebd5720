"""The migration runner: each file once, in its own transaction, refusing drift."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from tests.support.database import MIGRATION_DEFAULTS
from todo_server.storage import migrate


def write(directory: Path, name: str, sql: str) -> Path:
    path = directory / name
    path.write_text(sql)
    return path


@pytest.fixture
def fresh_url(pg_server) -> str:
    return pg_server.create_database("todo_migrate")


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def applied_versions(url: str) -> list[int]:
    with connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def table_exists(url: str, name: str) -> bool:
    with connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def test_project_migrations_apply_and_create_users_and_tasks(fresh_url):
    with connect(fresh_url) as conn:
        applied = migrate.apply(conn, **MIGRATION_DEFAULTS)
    assert [m.path.name for m in applied] == [m.path.name for m in migrate.discover()]
    assert table_exists(fresh_url, "users")
    assert table_exists(fresh_url, "tasks")


def test_rerun_applies_each_file_once(fresh_url, tmp_path):
    write(tmp_path, "0001_create_things.sql", "CREATE TABLE things (id int);")
    with connect(fresh_url) as conn:
        assert [m.version for m in migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)] == [1]
        assert migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS) == []
    write(tmp_path, "0002_add_name.sql", "ALTER TABLE things ADD COLUMN name text;")
    with connect(fresh_url) as conn:
        assert [m.version for m in migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)] == [2]
    assert applied_versions(fresh_url) == [1, 2]


def test_bookkeeping_row_records_name_and_checksum(fresh_url, tmp_path):
    path = write(tmp_path, "0001_create_things.sql", "CREATE TABLE things (id int);")
    with connect(fresh_url) as conn:
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
        row = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchone()
    import hashlib

    assert row == (1, "create_things", hashlib.sha256(path.read_bytes()).hexdigest())


def test_failed_file_rolls_back_and_stays_pending(fresh_url, tmp_path):
    write(tmp_path, "0001_create_things.sql", "CREATE TABLE things (id int);")
    write(
        tmp_path,
        "0002_broken.sql",
        "CREATE TABLE half_done (id int);\nSELECT no_such_function();",
    )
    with connect(fresh_url) as conn, pytest.raises(migrate.MigrationError) as caught:
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    message = str(caught.value)
    assert "0002_broken.sql" in message
    assert "no_such_function" in message
    # The good file stays applied, the broken one left nothing behind.
    assert applied_versions(fresh_url) == [1]
    assert not table_exists(fresh_url, "half_done")
    with connect(fresh_url) as conn:
        assert [
            (line.version, line.state, line.applied_at is None)
            for line in migrate.inspect(conn, tmp_path)
        ] == [
            (1, "applied", False),
            (2, "pending", True),
        ]
    # Fixed forward, it applies.
    write(tmp_path, "0002_broken.sql", "CREATE TABLE half_done (id int);")
    with connect(fresh_url) as conn:
        assert [m.version for m in migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)] == [2]


def test_edited_applied_file_is_refused(fresh_url, tmp_path):
    write(tmp_path, "0001_create_things.sql", "CREATE TABLE things (id int);")
    with connect(fresh_url) as conn:
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    write(tmp_path, "0001_create_things.sql", "CREATE TABLE things (id bigint);")
    write(tmp_path, "0002_more.sql", "CREATE TABLE more (id int);")
    with (
        connect(fresh_url) as conn,
        pytest.raises(migrate.MigrationError, match="0001_create_things.sql: changed"),
    ):
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    assert applied_versions(fresh_url) == [1]
    assert not table_exists(fresh_url, "more")


def test_applied_version_without_file_is_refused(fresh_url, tmp_path):
    first = write(tmp_path, "0001_create_things.sql", "CREATE TABLE things (id int);")
    with connect(fresh_url) as conn:
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    first.unlink()
    write(tmp_path, "0002_more.sql", "CREATE TABLE more (id int);")
    with (
        connect(fresh_url) as conn,
        pytest.raises(migrate.MigrationError, match="version 1 .*missing"),
    ):
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    assert not table_exists(fresh_url, "more")


def test_duplicate_versions_are_refused(tmp_path):
    write(tmp_path, "0001_create_things.sql", "SELECT 1;")
    write(tmp_path, "0001_create_others.sql", "SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="version 1 is also used"):
        migrate.discover(tmp_path)


@pytest.mark.parametrize(
    "name",
    ["1_short.sql", "0001-dashes.sql", "0001_Upper.sql", "0001.sql", "abcd_x.sql", "0001_x.SQL"],
)
def test_badly_named_files_are_refused(tmp_path, name):
    write(tmp_path, name, "SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="badly named"):
        migrate.discover(tmp_path)


def test_other_files_are_ignored(tmp_path):
    write(tmp_path, "README.md", "notes")
    write(tmp_path, "0001_create_things.sql", "SELECT 1;")
    assert [m.path.name for m in migrate.discover(tmp_path)] == ["0001_create_things.sql"]


def test_two_runners_at_once_apply_each_file_once(fresh_url, tmp_path):
    write(tmp_path, "0001_slow.sql", "SELECT pg_sleep(0.3); CREATE TABLE things (id int);")
    write(tmp_path, "0002_more.sql", "CREATE TABLE more (id int);")
    barrier = threading.Barrier(2)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with connect(fresh_url) as conn:
                barrier.wait()
                results.append(
                    [m.version for m in migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)]
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Each file once, by one runner or the other: the lock is per file, so the
    # second runner may apply 0002 while the first has just committed 0001.
    assert sorted(version for applied in results for version in applied) == [1, 2]
    assert applied_versions(fresh_url) == [1, 2]


def test_runner_needs_autocommit(fresh_url, tmp_path):
    with (
        psycopg.connect(fresh_url) as conn,
        pytest.raises(migrate.MigrationError, match="autocommit"),
    ):
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)


def test_task_json_is_rendered_on_write_in_utc_whatever_the_session_zone(fresh_url):
    with connect(fresh_url) as conn:
        migrate.apply(conn, **MIGRATION_DEFAULTS)
        conn.execute("SET TimeZone = 'America/New_York'")
        conn.execute("INSERT INTO users (id) VALUES ('tz-user')")
        conn.execute(
            "INSERT INTO tasks (user_id, title, due_at)"
            " VALUES ('tz-user', 'x', '2026-12-01 09:30-05')"
        )
        body = conn.execute("SELECT body FROM tasks").fetchone()[0]
    import json

    task = json.loads(body)
    assert task["due_at"] == "2026-12-01T14:30:00+00:00"
    assert task["created_at"].endswith("+00:00")


def test_rendering_migration_fills_existing_rows(fresh_url, tmp_path):
    import json
    import shutil

    for migration in migrate.discover():
        if migration.version < 4:
            shutil.copy(migration.path, tmp_path / migration.path.name)
    with connect(fresh_url) as conn:
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
        conn.execute("INSERT INTO users (id) VALUES ('old-user')")
        conn.execute("INSERT INTO tasks (user_id, title, tags) VALUES ('old-user', 'old', '{a}')")
        migrate.apply(conn, **MIGRATION_DEFAULTS)
        body, task_id = conn.execute("SELECT body, id::text FROM tasks").fetchone()
    task = json.loads(body)
    assert (task["id"], task["title"], task["tags"], task["user_id"]) == (
        task_id,
        "old",
        ["a"],
        "old-user",
    )


@pytest.mark.parametrize(
    "statement",
    ["COMMIT", "commit work", "END", "ROLLBACK", "BEGIN", "START TRANSACTION", "SAVEPOINT s"],
)
def test_a_file_with_transaction_control_is_refused_before_anything_runs(
    fresh_url, tmp_path, statement
):
    write(tmp_path, "0001_create_things.sql", "CREATE TABLE things (id int);")
    write(
        tmp_path,
        "0002_sneaky.sql",
        f"CREATE TABLE first_half (id int);\n{statement};\nCREATE TABLE second_half (id int);\n",
    )
    with connect(fresh_url) as conn, pytest.raises(migrate.MigrationError) as caught:
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    assert str(caught.value).startswith("0002_sneaky.sql: transaction control is not allowed")
    assert not table_exists(fresh_url, "things")  # refused before the first file ran
    assert not table_exists(fresh_url, "first_half")
    # Fixed forward, the next run applies both files whole.
    write(tmp_path, "0002_sneaky.sql", "CREATE TABLE first_half (id int);\n")
    with connect(fresh_url) as conn:
        assert [m.version for m in migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)] == [1, 2]


def test_transaction_words_in_strings_comments_and_bodies_are_not_refused(fresh_url, tmp_path):
    write(
        tmp_path,
        "0001_words.sql",
        """
        -- COMMIT; in a comment
        /* ROLLBACK; /* nested */ BEGIN; */
        CREATE TABLE notes (body text DEFAULT 'COMMIT;', "end" int);
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            NEW.body := E'it''s \\' ; COMMIT;';
            RETURN NEW;
        END
        $fn$;
        CREATE FUNCTION two() RETURNS int LANGUAGE sql
        BEGIN ATOMIC
            SELECT 1;
            SELECT 2;
        END;
        """,
    )
    with connect(fresh_url) as conn:
        assert [m.version for m in migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)] == [1]
    assert table_exists(fresh_url, "notes")
