"""Every SQL statement about tasks, and the functions that run them.

Isolation is enforced here, in each statement: every one is scoped by
``user_id = %(user_id)s`` from the verified token, so another user's task, a
deleted task and a missing task all look the same (no row).

PostgreSQL keeps each task's JSON text in ``tasks.body``, rendered by a trigger
on every write (sql/0004), and it is sent to the client as is: no Python
objects for UUIDs, timestamps or dicts on the hot path, and no JSON building on
reads. Timestamps are RFC 3339 in UTC whatever the session's time zone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql

from todo_server.cursors import PageToken

#: A task's public fields, in the order the tasks_render_body trigger renders them.
TASK_FIELDS = (
    "id",
    "user_id",
    "title",
    "description",
    "completed",
    "completed_at",
    "priority",
    "due_at",
    "tags",
    "created_at",
    "updated_at",
)

# A task as the client sees it: rendered by the tasks_render_body trigger
# (sql/0004) whenever the row is written, and read back as is.
TASK_JSON = "t.body"

IF_MATCH = "(%(if_match)s::int[] IS NULL OR t.version = ANY(%(if_match)s::int[]))"

# Taking a quota slot and creating the user's row if this is their first task
# are one upsert: it locks the user's row, so concurrent creates queue there and
# re-check the count, and the quota can never be overshot.
CREATE_TASK_SQL = f"""
WITH slot AS (
    INSERT INTO users AS u (id, email, name, live_tasks)
    VALUES (%(user_id)s, %(email)s, %(name)s, 1)
    ON CONFLICT (id) DO UPDATE SET live_tasks = u.live_tasks + 1
    WHERE u.live_tasks < %(max_tasks)s
    RETURNING u.id
)
INSERT INTO tasks AS t
    (user_id, title, description, completed, completed_at, priority, due_at, tags)
SELECT slot.id, %(title)s, %(description)s, %(completed)s::boolean,
       CASE WHEN %(completed)s::boolean THEN now() END,
       %(priority)s::task_priority, %(due_at)s::timestamptz, %(tags)s::text[]
FROM slot
RETURNING t.id::text AS id, t.version, {TASK_JSON} AS body
"""

GET_TASK_SQL = f"""
SELECT t.id::text AS id, t.version, {TASK_JSON} AS body
FROM tasks AS t
WHERE t.id = %(task_id)s AND t.user_id = %(user_id)s AND t.deleted_at IS NULL
"""

# Static SQL for any subset of fields: each column keeps its value unless its
# set_ flag is true. One statement text means one prepared plan.
UPDATE_TASK_SQL = f"""
UPDATE tasks AS t SET
    title = CASE WHEN %(set_title)s THEN %(title)s ELSE t.title END,
    description = CASE WHEN %(set_description)s THEN %(description)s ELSE t.description END,
    completed = CASE WHEN %(set_completed)s THEN %(completed)s::boolean ELSE t.completed END,
    completed_at = CASE WHEN NOT %(set_completed)s THEN t.completed_at
                        WHEN %(completed)s::boolean THEN coalesce(t.completed_at, now()) END,
    priority = CASE WHEN %(set_priority)s THEN %(priority)s::task_priority ELSE t.priority END,
    due_at = CASE WHEN %(set_due_at)s THEN %(due_at)s::timestamptz ELSE t.due_at END,
    tags = CASE WHEN %(set_tags)s THEN %(tags)s::text[] ELSE t.tags END,
    updated_at = now(),
    version = t.version + 1
WHERE t.id = %(task_id)s AND t.user_id = %(user_id)s AND t.deleted_at IS NULL AND {IF_MATCH}
RETURNING t.id::text AS id, t.version, {TASK_JSON} AS body
"""

# completed = NULL toggles.
COMPLETE_TASK_SQL = f"""
UPDATE tasks AS t SET
    completed = coalesce(%(completed)s::boolean, NOT t.completed),
    completed_at = CASE WHEN coalesce(%(completed)s::boolean, NOT t.completed)
                        THEN coalesce(t.completed_at, now()) END,
    updated_at = now(),
    version = t.version + 1
WHERE t.id = %(task_id)s AND t.user_id = %(user_id)s AND t.deleted_at IS NULL AND {IF_MATCH}
RETURNING t.id::text AS id, t.version, {TASK_JSON} AS body
"""

# A soft delete gives its quota slot back and takes one of the user's slots for
# deleted tasks (kept for restore until purged), in the same statement. The
# user's row is locked first, so concurrent deletes queue there and re-check the
# cap; only a row this statement really deleted counts.
DELETE_TASK_SQL = f"""
WITH capped AS (
    SELECT id FROM users
    WHERE id = %(user_id)s AND deleted_tasks < %(max_deleted)s
    FOR UPDATE
), deleted AS (
    UPDATE tasks AS t SET deleted_at = now(), updated_at = now(), version = t.version + 1
    FROM capped
    WHERE t.id = %(task_id)s AND t.user_id = capped.id AND t.deleted_at IS NULL AND {IF_MATCH}
    RETURNING t.user_id, t.id::text AS id, t.version, {TASK_JSON} AS body
)
UPDATE users AS u SET live_tasks = u.live_tasks - 1, deleted_tasks = u.deleted_tasks + 1
FROM deleted
WHERE u.id = deleted.user_id
RETURNING deleted.id, deleted.version, deleted.body
"""

RESTORE_TASK_SQL = f"""
UPDATE tasks AS t SET deleted_at = NULL, updated_at = now(), version = t.version + 1
WHERE t.id = %(task_id)s AND t.user_id = %(user_id)s AND t.deleted_at IS NOT NULL AND {IF_MATCH}
RETURNING t.id::text AS id, t.version, {TASK_JSON} AS body
"""

TAKE_SLOT_SQL = """
UPDATE users SET live_tasks = live_tasks + 1, deleted_tasks = deleted_tasks - 1
WHERE id = %(user_id)s AND live_tasks < %(max_tasks)s
RETURNING id
"""

# Any state, for telling 404 from 412 and for restoring a live task (a no-op).
FIND_TASK_ANY_STATE_SQL = f"""
SELECT t.id::text AS id, t.version, t.deleted_at IS NOT NULL AS deleted,
       {TASK_JSON} AS body
FROM tasks AS t
WHERE t.id = %(task_id)s AND t.user_id = %(user_id)s
"""

# One page as one row: the tasks' JSON joined by PostgreSQL, how many rows were
# found (limit + 1 means there is a next page), and the limit-th row's sort key
# for the cursor. One row instead of fifty saves psycopg building a Python row
# per task, which was most of the list's cost in Python (measured, README).
PAGE_SQL = """
SELECT coalesce(string_agg(body, ',' ORDER BY position)
                FILTER (WHERE position <= %(limit)s), '') AS bodies,
       count(*)::int AS fetched,
       (array_agg(sort_value ORDER BY position))[%(limit)s] AS last_value,
       (array_agg(id ORDER BY position))[%(limit)s] AS last_id,
       ({state}) AS state
FROM ({inner}) AS page
"""

# What a list's ETag is made of: the newest change to any of the user's tasks
# (one backward step of tasks_user_change_idx), in the statement's snapshot.
# Transaction ids are handed out in start order but commit in any order: while
# a transaction older than that change is still running, it may yet commit a
# change of this user's with a *lower* id, so then the snapshot's xmin is part
# of the state too, and the ETag moves once those transactions have ended.
LIST_STATE = """
SELECT CASE WHEN xmin > newest THEN newest::text ELSE newest || '.' || xmin END
FROM (
    SELECT coalesce((SELECT max(s.change_xid) FROM tasks AS s
                     WHERE s.user_id = %(user_id)s), 0) AS newest,
           pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin
) AS now
"""
LIST_STATE_SQL = "SELECT (" + LIST_STATE + ") AS state"


class QuotaExceeded(Exception):
    """The user already has the most live tasks allowed."""


@dataclass(frozen=True)
class TaskRow:
    """A task as the client sees it (JSON text), its id, and its version for the ETag."""

    id: str
    version: int
    body: str


@dataclass(frozen=True)
class Page:
    bodies: str  # the tasks' JSON objects, comma-separated
    count: int
    next_cursor: PageToken | None
    state: str = ""  # LIST_STATE as of this page: what its ETag is made of


def _row(row: dict[str, Any] | None) -> TaskRow | None:
    return None if row is None else TaskRow(row["id"], row["version"], row["body"])


async def create_task(
    conn: AsyncConnection,
    *,
    user_id: str,
    email: str | None,
    name: str | None,
    fields: dict[str, Any],
    max_tasks: int,
) -> TaskRow:
    """Insert a task (and the user's row on their first); raises ``QuotaExceeded``."""
    cursor = await conn.execute(
        CREATE_TASK_SQL,
        {
            "user_id": user_id,
            "email": email,
            "name": name,
            "max_tasks": max_tasks,
            "title": fields["title"],
            "description": fields.get("description"),
            "completed": fields.get("completed", False),
            "priority": fields.get("priority", "medium"),
            "due_at": fields.get("due_at"),
            "tags": fields.get("tags", []),
        },
    )
    row = _row(await cursor.fetchone())
    if row is None:
        raise QuotaExceeded()
    return row


async def get_task(conn: AsyncConnection, user_id: str, task_id: str) -> TaskRow | None:
    cursor = await conn.execute(GET_TASK_SQL, {"user_id": user_id, "task_id": task_id})
    return _row(await cursor.fetchone())


async def find_task_any_state(
    conn: AsyncConnection, user_id: str, task_id: str
) -> tuple[TaskRow, bool] | None:
    """The task whether deleted or not, and whether it is deleted."""
    cursor = await conn.execute(FIND_TASK_ANY_STATE_SQL, {"user_id": user_id, "task_id": task_id})
    row = await cursor.fetchone()
    task = _row(row)
    return None if row is None or task is None else (task, row["deleted"])


async def update_task(
    conn: AsyncConnection,
    user_id: str,
    task_id: str,
    fields: dict[str, Any],
    if_match: list[int] | None,
) -> TaskRow | None:
    """Change the given fields; None when no live task matched (or If-Match failed)."""
    params: dict[str, Any] = {"user_id": user_id, "task_id": task_id, "if_match": if_match}
    for name in ("title", "description", "completed", "priority", "due_at", "tags"):
        params[f"set_{name}"] = name in fields
        params[name] = fields.get(name)
    cursor = await conn.execute(UPDATE_TASK_SQL, params)
    return _row(await cursor.fetchone())


async def complete_task(
    conn: AsyncConnection,
    user_id: str,
    task_id: str,
    completed: bool | None,
    if_match: list[int] | None,
) -> TaskRow | None:
    """Set completion, or toggle it when ``completed`` is None."""
    cursor = await conn.execute(
        COMPLETE_TASK_SQL,
        {"user_id": user_id, "task_id": task_id, "completed": completed, "if_match": if_match},
    )
    return _row(await cursor.fetchone())


async def delete_task(
    conn: AsyncConnection,
    user_id: str,
    task_id: str,
    if_match: list[int] | None,
    max_deleted: int,
) -> TaskRow | None:
    """Soft-delete a live task, returning it; None when none matched or too many are deleted."""
    cursor = await conn.execute(
        DELETE_TASK_SQL,
        {"user_id": user_id, "task_id": task_id, "if_match": if_match, "max_deleted": max_deleted},
    )
    return _row(await cursor.fetchone())


async def restore_task(
    conn: AsyncConnection,
    user_id: str,
    task_id: str,
    if_match: list[int] | None,
    max_tasks: int,
) -> TaskRow | None:
    """Undo a soft delete, taking a quota slot; None when no deleted task matched."""
    params = {"user_id": user_id, "task_id": task_id, "if_match": if_match, "max_tasks": max_tasks}
    async with conn.transaction():
        cursor = await conn.execute(RESTORE_TASK_SQL, params)
        row = _row(await cursor.fetchone())
        if row is None:
            return None
        slot = await conn.execute(TAKE_SLOT_SQL, params)
        if await slot.fetchone() is None:
            raise QuotaExceeded()  # leaving the block rolls the restore back
    return row


# --- listing ------------------------------------------------------------------

# sort name -> (column, descending, nullable). Identifiers come only from here.
SORT_COLUMNS: dict[str, tuple[str, bool, bool]] = {
    f"{prefix}{column}": (column, prefix == "-", column == "due_at")
    for column in ("created_at", "updated_at", "due_at", "priority", "title")
    for prefix in ("", "-")
}

COLUMN_TYPES = {
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "due_at": "timestamptz",
    "priority": "task_priority",
    "title": "text",
}

LIST_FILTERS = {
    "completed": "t.completed = %(completed)s",
    "priority": "t.priority = %(priority)s::task_priority",
    "tags": "t.tags @> %(tags)s::text[]",
    # The expression of the trigram index in sql/0007, character for character.
    "q": "(t.title || E'\\x1f' || coalesce(t.description, '')) ILIKE %(q)s",
    "due_before": "t.due_at < %(due_before)s",
    "due_after": "t.due_at > %(due_after)s",
}


def _like_pattern(text: str) -> str:
    """A substring pattern for ILIKE with the client's wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _keyset(column: str, descending: bool, nullable: bool, after_null: bool) -> sql.Composable:
    """Rows strictly after the cursor in (column, id) order; NULLs sort last both ways."""
    col = sql.SQL("t.{}").format(sql.Identifier(column))
    cast = sql.SQL(COLUMN_TYPES[column])
    beyond = sql.SQL("<" if descending else ">")
    if after_null:  # only reached for nullable columns: walk the NULLs by id
        return sql.SQL("({col} IS NULL AND t.id {beyond} %(after_id)s::uuid)").format(
            col=col, beyond=beyond
        )
    clause = sql.SQL("({col}, t.id) {beyond} (%(after_value)s::{cast}, %(after_id)s::uuid)").format(
        col=col, beyond=beyond, cast=cast
    )
    if nullable:
        clause = sql.SQL("({clause} OR {col} IS NULL)").format(clause=clause, col=col)
    return clause


def build_list_query(
    sort: str, filters: dict[str, Any], after: PageToken | None
) -> tuple[str, dict[str, Any]]:
    """The SELECT for one page of a user's live tasks, and its parameters."""
    params: dict[str, Any] = {
        name: _like_pattern(value) if name == "q" else value for name, value in filters.items()
    }
    keyset = None
    if after is not None:
        keyset = "null" if after.value is None else "value"
        params["after_value"], params["after_id"] = after.value, after.id
    return _list_sql(sort, tuple(filters), keyset), params


@functools.lru_cache(maxsize=512)
def _list_sql(sort: str, filter_names: tuple[str, ...], keyset: str | None) -> str:
    """The list statement's text for one shape of request, composed once.

    Composing SQL objects on every request showed up at ~9% of a list
    request's time; as text, psycopg also caches its own parsing of it.
    """
    column, descending, nullable = SORT_COLUMNS[sort]
    conditions: list[sql.Composable] = [sql.SQL("t.user_id = %(user_id)s AND t.deleted_at IS NULL")]
    conditions += [sql.SQL(LIST_FILTERS[name]) for name in filter_names]
    if keyset is not None:
        conditions.append(_keyset(column, descending, nullable, keyset == "null"))
    direction = sql.SQL("DESC" if descending else "ASC")
    # NULLS LAST only where NULLs exist: on NOT NULL columns the plain order
    # lets the (user_id, created_at DESC, id DESC) index deliver rows in order.
    nulls = sql.SQL(" NULLS LAST" if nullable else "")
    order = sql.SQL("t.{col} {direction}{nulls}, t.id {direction}").format(
        col=sql.Identifier(column), direction=direction, nulls=nulls
    )
    inner = sql.SQL(
        "SELECT t.id::text AS id, t.{col}::text AS sort_value, " + TASK_JSON + " AS body,"
        " row_number() OVER (ORDER BY {order}) AS position"
        " FROM tasks AS t WHERE {conditions}"
        " ORDER BY {order}"
        " LIMIT %(fetch)s"
    ).format(
        col=sql.Identifier(column),
        conditions=sql.SQL(" AND ").join(conditions),
        order=order,
    )
    return sql.SQL(PAGE_SQL).format(inner=inner, state=sql.SQL(LIST_STATE)).as_string()


async def _page(
    conn: AsyncConnection, query: Any, params: dict[str, Any], sort: str, limit: int
) -> Page:
    cursor = await conn.execute(query, {**params, "limit": limit, "fetch": limit + 1})
    row = await cursor.fetchone()
    assert row is not None  # an aggregate always returns one row
    more = row["fetched"] > limit
    next_cursor = PageToken(sort, row["last_value"], row["last_id"]) if more else None
    return Page(row["bodies"], min(row["fetched"], limit), next_cursor, row["state"])


async def list_state(conn: AsyncConnection, user_id: str) -> str:
    """LIST_STATE alone: enough to answer If-None-Match without building a page."""
    cursor = await conn.execute(LIST_STATE_SQL, {"user_id": user_id})
    row = await cursor.fetchone()
    assert row is not None
    return row["state"]


async def list_tasks(
    conn: AsyncConnection,
    user_id: str,
    *,
    sort: str,
    filters: dict[str, Any],
    after: PageToken | None,
    limit: int,
) -> Page:
    query, params = build_list_query(sort, filters, after)
    return await _page(conn, query, {"user_id": user_id, **params}, sort, limit)
