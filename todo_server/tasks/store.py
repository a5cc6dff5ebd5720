"""Every SQL statement about one task, and the functions that run them.

Listing many (pages, filters, sorts, the list's ETag) is ``tasks.listing``.

Isolation is enforced here, in each statement: every one is scoped by
``user_id = %(user_id)s`` from the verified token, so another user's task, a
deleted task and a missing task all look the same (no row).

PostgreSQL keeps each task's JSON text in ``tasks.body``, rendered by a trigger
on every write (sql/0004), and it is sent to the client as is: no Python
objects for UUIDs, timestamps or dicts on the hot path, and no JSON building on
reads. Timestamps are RFC 3339 in UTC whatever the session's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import DictRow

from todo_server.storage.row_security import UserConnection

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


class QuotaExceeded(Exception):
    """The user already has the most live tasks allowed."""


@dataclass(frozen=True)
class TaskRow:
    """A task as the client sees it (JSON text), its id, and its version for the ETag."""

    id: str
    version: int
    body: str


def _row(row: DictRow | None) -> TaskRow | None:
    """The task in a statement's answer (the user connection's rows are dicts).

    Not ``psycopg.rows.class_row``: a row factory needs a psycopg cursor, and
    statements run as a user answer ``Rows`` from ``storage.row_security``; nor
    would it be faster (bench/README.md compares the two).
    """
    return None if row is None else TaskRow(row["id"], row["version"], row["body"])


async def create_task(
    conn: UserConnection,
    *,
    user_id: str,
    email: str | None,
    name: str | None,
    fields: dict[str, Any],
    max_tasks: int,
) -> TaskRow:
    """Insert a task (and the user's row on their first); raises ``QuotaExceeded``."""
    result = await conn.execute(
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
    row = _row(await result.fetchone())
    if row is None:
        raise QuotaExceeded()
    return row


async def get_task(conn: UserConnection, user_id: str, task_id: str) -> TaskRow | None:
    result = await conn.execute(GET_TASK_SQL, {"user_id": user_id, "task_id": task_id})
    return _row(await result.fetchone())


async def find_task_any_state(
    conn: UserConnection, user_id: str, task_id: str
) -> tuple[TaskRow, bool] | None:
    """The task whether deleted or not, and whether it is deleted."""
    result = await conn.execute(FIND_TASK_ANY_STATE_SQL, {"user_id": user_id, "task_id": task_id})
    row = await result.fetchone()
    task = _row(row)
    return None if row is None or task is None else (task, row["deleted"])


async def update_task(
    conn: UserConnection,
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
    result = await conn.execute(UPDATE_TASK_SQL, params)
    return _row(await result.fetchone())


async def complete_task(
    conn: UserConnection,
    user_id: str,
    task_id: str,
    completed: bool | None,
    if_match: list[int] | None,
) -> TaskRow | None:
    """Set completion, or toggle it when ``completed`` is None."""
    result = await conn.execute(
        COMPLETE_TASK_SQL,
        {"user_id": user_id, "task_id": task_id, "completed": completed, "if_match": if_match},
    )
    return _row(await result.fetchone())


async def delete_task(
    conn: UserConnection,
    user_id: str,
    task_id: str,
    if_match: list[int] | None,
    max_deleted: int,
) -> TaskRow | None:
    """Soft-delete a live task, returning it; None when none matched or too many are deleted."""
    result = await conn.execute(
        DELETE_TASK_SQL,
        {"user_id": user_id, "task_id": task_id, "if_match": if_match, "max_deleted": max_deleted},
    )
    return _row(await result.fetchone())


async def restore_task(
    conn: UserConnection,
    user_id: str,
    task_id: str,
    if_match: list[int] | None,
    max_tasks: int,
) -> TaskRow | None:
    """Undo a soft delete, taking a quota slot; None when no deleted task matched."""
    params = {"user_id": user_id, "task_id": task_id, "if_match": if_match, "max_tasks": max_tasks}
    async with conn.transaction():
        result = await conn.execute(RESTORE_TASK_SQL, params)
        row = _row(await result.fetchone())
        if row is None:
            return None
        slot = await conn.execute(TAKE_SLOT_SQL, params)
        if await slot.fetchone() is None:
            raise QuotaExceeded()  # leaving the block rolls the restore back
    return row
