"""The second wall: row-level security and the runtime role's privileges.

Isolation is enforced in every statement's ``user_id = ...`` predicate and,
again, by PostgreSQL's row-level security under the least-privilege runtime
role the service connects as (sql/0009). These tests take the first wall away.
"""

from __future__ import annotations

import psycopg
import pytest

from devtools.postgres import as_role
from tests.support.assertions import assert_error
from todo_server.tasks import store

USER_TABLES = ("tasks", "users", "idempotency_keys")


@pytest.fixture
def runtime(database_url, db):
    """A connection as the runtime role, in a transaction, like the service's."""
    with psycopg.connect(as_role(database_url)) as conn:
        yield conn
        conn.rollback()


@pytest.fixture
def two_users(ada, bob):
    return ada, ada.create(title="ada's"), bob, bob.create(title="bob's")


def act_as(conn: psycopg.Connection, user_id: str | None) -> None:
    if user_id is not None:
        conn.execute("SELECT set_config('app.user_id', %s, true)", (user_id,))


def test_every_user_data_table_forces_row_level_security(db):
    rows = db.execute(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
        " WHERE relname = ANY(%s) ORDER BY relname",
        (list(USER_TABLES),),
    ).fetchall()
    assert rows == [(name, True, True) for name in sorted(USER_TABLES)]


def test_as_one_user_a_query_without_predicates_sees_only_that_user(runtime, two_users):
    _, ada_task, _, bob_task = two_users
    act_as(runtime, "ada")
    assert [row[0] for row in runtime.execute("SELECT id::text FROM tasks")] == [ada_task["id"]]
    assert [row[0] for row in runtime.execute("SELECT id FROM users")] == ["ada"]
    changed = runtime.execute(
        "UPDATE tasks SET title = 'mine now' WHERE id = %s", (bob_task["id"],)
    )
    assert changed.rowcount == 0
    changed = runtime.execute("UPDATE tasks SET title = 'every one' RETURNING id::text")
    assert [row[0] for row in changed] == [ada_task["id"]]
    # Writing a row for someone else is refused outright.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        runtime.execute("INSERT INTO tasks (user_id, title) VALUES ('bob', 'planted')")


def test_with_the_setting_unset_nothing_is_visible(runtime, two_users):
    for table in USER_TABLES:
        assert runtime.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    assert runtime.execute("UPDATE tasks SET title = 'x'").rowcount == 0


def test_the_setting_ends_with_its_transaction(runtime, two_users):
    act_as(runtime, "ada")
    assert runtime.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
    runtime.commit()
    assert runtime.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM tasks",
        "DELETE FROM users",
        "TRUNCATE tasks",
        "DROP TABLE tasks",
        "ALTER TABLE tasks ADD COLUMN owned boolean",
        "ALTER TABLE tasks DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tasks_of_the_user ON tasks",
        "CREATE TABLE mine (id int)",
        "SET ROLE postgres",
        "UPDATE schema_migrations SET checksum = 'x'",
        "CREATE OR REPLACE FUNCTION todo_local_account(text) RETURNS SETOF users"
        " LANGUAGE sql AS 'SELECT * FROM users'",
    ],
)
def test_the_runtime_role_cannot_change_the_schema_or_escape(runtime, two_users, statement):
    act_as(runtime, "ada")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        runtime.execute(statement)


def test_the_runtime_role_is_no_owner_superuser_or_bypasser(runtime):
    role = runtime.execute(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
        " WHERE rolname = current_user"
    ).fetchone()
    assert role == (False, False, False, False)
    owned = runtime.execute(
        "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles"
        " WHERE rolname = current_user)"
    ).fetchone()
    assert owned == (0,)


def test_a_statement_that_forgets_its_user_predicate_still_cannot_cross_users(
    monkeypatch, two_users
):
    ada, _, bob, bob_task = two_users
    # The first wall, gone: reads and writes by task id alone.
    monkeypatch.setattr(
        store,
        "GET_TASK_SQL",
        store.GET_TASK_SQL.replace("AND t.user_id = %(user_id)s", ""),
    )
    monkeypatch.setattr(
        store,
        "UPDATE_TASK_SQL",
        store.UPDATE_TASK_SQL.replace("AND t.user_id = %(user_id)s", ""),
    )
    assert "user_id = %(user_id)s" not in store.GET_TASK_SQL
    assert_error(ada.request("GET", f"/{bob_task['id']}"), 404, "not_found")
    r = ada.request("PATCH", f"/{bob_task['id']}", json={"title": "stolen"})
    assert_error(r, 404, "not_found")
    assert bob.request("GET", f"/{bob_task['id']}").json() == bob_task


def test_the_service_connects_as_the_runtime_role(client, db, two_users):
    users = {
        row[0]
        for row in db.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    }
    assert users == {"todo_app"}


def test_start_up_warns_about_a_privileged_role_or_missing_timeouts(database_url, pg_server):
    import asyncio

    from psycopg.rows import dict_row

    from todo_server.storage.schema_check import warn_about_the_role

    async def warnings(url: str) -> list[str]:
        async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
            return await warn_about_the_role(conn)

    assert asyncio.run(warnings(as_role(database_url))) == []  # todo_app, set up as documented
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS todo_bare")
        admin.execute("CREATE ROLE todo_bare LOGIN")
    bare = asyncio.run(warnings(as_role(database_url, "todo_bare")))
    assert bare == [
        "role 'todo_bare' has no statement_timeout, lock_timeout,"
        " idle_in_transaction_session_timeout of its own; set them with ALTER ROLE ... SET"
        " (docs/deploy.md: Roles) so they hold on every connection"
    ]
    owner = asyncio.run(warnings(database_url))  # the admin: superuser and owner
    assert owner[0].startswith("the service connects as 'postgres', a superuser")
    # A member of the owner's role may turn row-level security off, as the owner may.
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        admin.execute("GRANT postgres TO todo_bare")
    member = asyncio.run(warnings(as_role(database_url, "todo_bare")))
    assert member[0].startswith("the service connects as 'todo_bare'")
    assert "tables' owner: row-level security does not apply" in member[0]


# --- what row-level security does not cover: the runtime role acts as any user ---------


def test_the_runtime_role_cannot_back_date_a_deletion(runtime, two_users, db):
    """deleted_at is the time of the delete: back-dated, a live task would be purged at once."""
    _, ada_task, _, _ = two_users
    act_as(runtime, "ada")
    for statement, params in (
        ("UPDATE tasks SET deleted_at = now() - interval '60 days' WHERE id = %s", ada_task["id"]),
        ("UPDATE tasks SET deleted_at = now() + interval '1 day' WHERE id = %s", ada_task["id"]),
        (
            "INSERT INTO tasks (user_id, title, deleted_at)"
            " VALUES ('ada', 'planted', now() - interval '60 days') RETURNING %s",
            "x",
        ),
    ):
        with pytest.raises(psycopg.errors.CheckViolation, match="deleted_at may only be"):
            runtime.execute(statement, (params,))
        runtime.rollback()
        act_as(runtime, "ada")
    # A delete as the service makes it, and a restore, still work; a deleted task stays dated.
    runtime.execute("UPDATE tasks SET deleted_at = now() WHERE id = %s", (ada_task["id"],))
    with pytest.raises(psycopg.errors.CheckViolation):
        runtime.execute(
            "UPDATE tasks SET deleted_at = deleted_at - interval '60 days' WHERE id = %s",
            (ada_task["id"],),
        )
    runtime.rollback()
    act_as(runtime, "ada")
    runtime.execute("UPDATE tasks SET deleted_at = now() WHERE id = %s", (ada_task["id"],))
    runtime.execute("UPDATE tasks SET title = 'still deleted' WHERE id = %s", (ada_task["id"],))
    runtime.execute("UPDATE tasks SET deleted_at = NULL WHERE id = %s", (ada_task["id"],))
    runtime.commit()
    assert db.execute("SELECT count(*) FROM tasks WHERE deleted_at IS NULL").fetchone() == (2,)


def test_the_runtime_role_cannot_back_date_an_idempotency_key(runtime, db):
    """created_at starts a key's 24 hours: back-dated, a live key would be purged at once."""
    act_as(runtime, "ada")
    runtime.execute(
        "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ('ada', 'k1', 'h')"
    )
    runtime.commit()
    for statement in (
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'k1'",
        "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at)"
        " VALUES ('ada', 'k2', 'h', now() - interval '2 days')",
    ):
        act_as(runtime, "ada")
        with pytest.raises(psycopg.errors.CheckViolation, match="created_at may only be"):
            runtime.execute(statement)
        runtime.rollback()
    # What the service does: claim a key anew (created_at = now()), save its response.
    act_as(runtime, "ada")
    runtime.execute("UPDATE idempotency_keys SET created_at = now() WHERE key = 'k1'")
    runtime.execute("UPDATE idempotency_keys SET status = 201 WHERE key = 'k1'")
    runtime.commit()
    act_as(runtime, "ada")
    runtime.execute("SELECT todo_purge_idempotency_keys('infinity', 1000)")
    runtime.commit()
    assert db.execute("SELECT key FROM idempotency_keys").fetchall() == [("k1",)]
