"""The migration scanner: transaction control found wherever the server would run it.

The scanner reads a file as the server does; each case below is checked against
the real server too (``test_each_case_is_valid_sql_the_server_splits_so``), so a
case cannot pass by being SQL the server would refuse anyway.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.support.database import MIGRATION_DEFAULTS
from todo_server.storage import migrate
from todo_server.storage.migration_scanner import statements, transaction_control

SETUP = 'CREATE TABLE t ("begin" int, "end" int, "by" int); CREATE DOMAIN "€e" AS text;\n'

#: Files with a COMMIT the server runs, each hidden from a reading that is almost right.
HIDDEN_COMMITS = {
    # "begin atomic" outside CREATE FUNCTION: a column and its alias.
    "begin_atomic_as_names": "SELECT x.begin atomic FROM (SELECT 1 AS begin) AS x;\nCOMMIT;",
    # Reserved words as column labels inside a body: not a CASE that END closes.
    "case_as_label_in_body": "CREATE FUNCTION f1() RETURNS int LANGUAGE sql\n"
    "BEGIN ATOMIC SELECT 1 AS case; END;\nCOMMIT;",
    "case_as_bare_label_in_body": "CREATE FUNCTION f2() RETURNS int LANGUAGE sql\n"
    "BEGIN ATOMIC SELECT 1 case; END;\nCOMMIT;",
    "case_as_label_after_a_keyword_named_column": "CREATE FUNCTION f4() RETURNS int"
    " LANGUAGE sql\nBEGIN ATOMIC SELECT by case FROM t; END;\nCOMMIT;",
    "begin_atomic_as_names_in_body": "CREATE FUNCTION f3() RETURNS int LANGUAGE sql\n"
    "BEGIN ATOMIC SELECT begin atomic FROM t; END;\nCOMMIT;",
    # A function named begin, without a body.
    "function_named_begin": "CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 1;\nCOMMIT;",
    # A string continued on the next line stays an E'' string: \' does not end it.
    "continued_escape_string": "SELECT E'x'\n'\\' , ';\nCOMMIT;\nSELECT '' AS a, ' ';",
    "continued_after_comment": "SELECT E'x' -- note\n'\\' , ';\nCOMMIT;\nSELECT '' AS a, ' ';",
    # A comment ends at a carriage return too.
    "comment_ended_by_carriage_return": "SELECT 1; -- note\rCOMMIT;\n",
    # No-break space is a letter to the server: \u00a0e is a name, then a plain string.
    "no_break_space_in_a_name": 'CREATE DOMAIN "\u00a0e" AS text;\n'
    "SELECT \u00a0e'\\' ;\nCOMMIT;\nSELECT 1; --';",
    # A dollar-quote tag of non-ASCII letters.
    "non_ascii_dollar_tag": "SELECT $é$ ' $é$;\nCOMMIT;\nSELECT ' ';",
    # A non-ASCII name ending in e, then a plain string: not an E'' string.
    "name_ending_in_e_before_string": "SELECT €e'\\' ;\nCOMMIT;\nSELECT 1; --';",
}

#: Valid files without transaction control, whose words look like it.
CLEAN_FILES = {
    "case_in_body_then_statement": "CREATE FUNCTION sign_of(a int) RETURNS int LANGUAGE sql\n"
    "BEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 WHEN a < 0 THEN -1 ELSE 0 END;\nEND;\n"
    "CREATE TABLE after_case (id int);",
    "nested_case_in_body": "CREATE OR REPLACE PROCEDURE p(a int) LANGUAGE sql\n"
    "BEGIN ATOMIC\n  INSERT INTO t SELECT CASE WHEN a > 0 THEN CASE a WHEN 1 THEN 1 END END, 0;\n"
    '  UPDATE t SET "end" = (CASE WHEN "end" IS NULL THEN 0 END);\nEND;\n'
    "CREATE TABLE after_procedure (id int);",
    "case_after_distinct_on": "CREATE FUNCTION firsts() RETURNS int LANGUAGE sql\n"
    "BEGIN ATOMIC SELECT DISTINCT ON (by) CASE WHEN by > 0 THEN 1 END FROM t; END;\n"
    "CREATE TABLE after_distinct (id int);",
    "labels_in_body": "CREATE FUNCTION labels() RETURNS int LANGUAGE sql\n"
    'BEGIN ATOMIC SELECT t.end FROM t; SELECT 1 AS "end"; END;\n'
    "CREATE TABLE after_labels (id int);",
    "words_in_strings_and_comments": "-- COMMIT; in a comment\n"
    "/* ROLLBACK; /* nested */ BEGIN; */\n"
    "CREATE TABLE notes (body text DEFAULT 'COMMIT;', \"end\" int);\n"
    "SELECT E'it''s \\' ; COMMIT;', $tag$ ; END; $tag$, $é$ ; ROLLBACK; $é$;\n"
    "PREPARE notes_plan AS SELECT 1;",
}


@pytest.mark.parametrize("name", sorted(HIDDEN_COMMITS))
def test_a_hidden_commit_is_found(name):
    assert "COMMIT" in transaction_control(HIDDEN_COMMITS[name])


@pytest.mark.parametrize("name", sorted(CLEAN_FILES))
def test_valid_files_without_transaction_control_pass(name):
    assert transaction_control(CLEAN_FILES[name]) == []


@pytest.fixture
def fresh_url(pg_server) -> str:
    return pg_server.create_database("todo_scan")


def test_each_case_is_valid_sql_the_server_splits_so(fresh_url):
    """The cases are real: the server runs each file whole, as the scanner splits it."""
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute(SETUP)
        for name, sql in {**HIDDEN_COMMITS, **CLEAN_FILES}.items():
            conn.execute("BEGIN")
            conn.execute(sql)
            # The hidden COMMIT ran: the transaction is over; a clean file stays inside it.
            expected = "IDLE" if name in HIDDEN_COMMITS else "INTRANS"
            assert conn.info.transaction_status.name == expected, name
            if name in CLEAN_FILES:
                conn.execute("ROLLBACK")
            assert len(statements(sql)) >= 2, name


def write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql, encoding="utf-8")


def applied_versions(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def table_exists(url: str, name: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def test_a_file_with_a_hidden_commit_is_refused_and_nothing_is_applied(fresh_url, tmp_path):
    write(tmp_path, "0001_first.sql", "CREATE TABLE first (id int);")
    write(
        tmp_path,
        "0002_hidden.sql",
        "CREATE TABLE first_half (id int);\n"
        "SELECT x.begin atomic FROM (SELECT 1 AS begin) AS x;\n"
        "COMMIT;\n"
        "SELECT no_such_function();\n",
    )
    with (
        psycopg.connect(fresh_url, autocommit=True) as conn,
        pytest.raises(migrate.MigrationError) as caught,
    ):
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    assert str(caught.value).startswith(
        "0002_hidden.sql: transaction control is not allowed (COMMIT)"
    )
    assert not table_exists(fresh_url, "first_half")
    assert not table_exists(fresh_url, "first")  # refused before any file ran
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        assert [line.state for line in migrate.inspect(conn, tmp_path)] == ["pending", "pending"]


def test_a_body_with_case_then_another_statement_applies(fresh_url, tmp_path):
    write(tmp_path, "0001_function.sql", CLEAN_FILES["case_in_body_then_statement"])
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        assert [m.version for m in migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)] == [1]
        assert conn.execute("SELECT sign_of(-5)").fetchone()[0] == -1
    assert table_exists(fresh_url, "after_case")


@pytest.mark.parametrize(
    ("escape", "committed"),
    [("COMMIT", True), ("ROLLBACK", False)],
)
def test_a_file_that_gets_out_of_its_transaction_is_never_called_rolled_back(
    fresh_url, tmp_path, monkeypatch, escape, committed
):
    """Should the scan ever miss one, the runner still tells the truth about what happened."""
    monkeypatch.setattr(migrate, "refuse_transaction_control", lambda migration: None)
    write(
        tmp_path,
        "0001_escape.sql",
        f"CREATE TABLE before_escape (id int);\n{escape};\n"
        "CREATE TABLE after_escape (id int);\nSELECT no_such_function();\n",
    )
    with (
        psycopg.connect(fresh_url, autocommit=True) as conn,
        pytest.raises(migrate.MigrationError) as caught,
    ):
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    assert str(caught.value).startswith(
        "0001_escape.sql ended the transaction it runs in (a COMMIT, ROLLBACK or the like"
    )
    assert "stays pending; check the database by hand" in str(caught.value)
    assert table_exists(fresh_url, "before_escape") is committed
    assert applied_versions(fresh_url) == []


def test_a_file_that_leaves_its_transaction_and_succeeds_is_not_recorded(
    fresh_url, tmp_path, monkeypatch
):
    monkeypatch.setattr(migrate, "refuse_transaction_control", lambda migration: None)
    write(tmp_path, "0001_escape.sql", "CREATE TABLE a (id int);\nCOMMIT;\nBEGIN;\n")
    with (
        psycopg.connect(fresh_url, autocommit=True) as conn,
        pytest.raises(
            migrate.MigrationError, match="0001_escape.sql ended the transaction it runs in"
        ),
    ):
        migrate.apply(conn, tmp_path, **MIGRATION_DEFAULTS)
    assert applied_versions(fresh_url) == []
