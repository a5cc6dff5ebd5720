"""Listing a user's tasks: one page of them, filtered and sorted, and the list's ETag state.

Every statement is scoped by ``user_id = %(user_id)s``, as in ``tasks.store``.
Pages are keyset-paginated: a page ends with a ``PageToken`` holding the last
row's sort value and id, and the next page starts strictly after it. The SQL
is written out below; ``page_sql`` only picks the sort column, the filters and
the keyset condition for one shape of request, from the tables here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from todo_server.storage.row_security import UserConnection
from todo_server.tasks.page_tokens import PageToken
from todo_server.tasks.store import TASK_JSON

# --- the SQL -------------------------------------------------------------------

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

# Rows strictly after the page token in (column, id) order; NULLs sort last
# both ways, so on a nullable column the rest of the NULLs also follow, and
# after a NULL only the NULLs are walked, by id.
KEYSET = "(t.{col}, t.id) {beyond} (%(after_value)s::{cast}, %(after_id)s::uuid)"
KEYSET_NULLABLE = "(" + KEYSET + " OR t.{col} IS NULL)"
KEYSET_AFTER_NULL = "(t.{col} IS NULL AND t.id {beyond} %(after_id)s::uuid)"

# The page's rows, one more than asked for (there is a next page when it comes).
PAGE_ROWS_SQL = f"""
SELECT t.id::text AS id, t.{{col}}::text AS sort_value, {TASK_JSON} AS body,
       row_number() OVER (ORDER BY {{order}}) AS position
FROM tasks AS t
WHERE t.user_id = %(user_id)s AND t.deleted_at IS NULL{{conditions}}
ORDER BY {{order}}
LIMIT %(fetch)s
"""

# What a list's ETag is made of: the newest change to any of the user's tasks
# (one backward step of tasks_user_change_idx), in the statement's snapshot,
# and the transactions that snapshot still saw running below it. Transaction
# ids are handed out in start order but commit in any order: one of those may
# yet commit a change of this user's with a *lower* id than the newest, which
# moves neither the newest nor, for an update, the count; its leaving the
# in-progress list does. (The snapshot's xmin alone is not enough: an older,
# unrelated transaction holds it still while the late change commits.) Those
# above the newest need nothing: a change of theirs would be the newest.
# A newest change at or beyond the snapshot's xmax was written by another
# database (restored into a cluster whose counter is behind): the state then
# ends in WRITTEN_ELSEWHERE, and ``tasks.sync.rebase_foreign_changes`` must
# run before the state means anything.
LIST_STATE = """
SELECT newest || coalesce((SELECT '.' || string_agg(x::text, '.' ORDER BY x)
                           FROM pg_snapshot_xip(snapshot) AS x
                           WHERE x < newest::text::xid8), '')
              || CASE WHEN newest::text::xid8 >= pg_snapshot_xmax(snapshot)
                      THEN '!' ELSE '' END
FROM (
    SELECT coalesce((SELECT max(s.change_xid) FROM tasks AS s
                     WHERE s.user_id = %(user_id)s), 0) AS newest,
           pg_current_snapshot() AS snapshot
) AS now
"""
LIST_STATE_SQL = "SELECT (" + LIST_STATE + ") AS state"

#: How LIST_STATE ends when the user's newest change is from another database.
WRITTEN_ELSEWHERE = "!"

# One page as one row, from its rows (id, sort_value, body, position; one more
# than the limit): the tasks' JSON joined by PostgreSQL, how many rows were
# found (limit + 1 means there is a next page), and the limit-th row's sort key
# for the page token. One row instead of fifty saves psycopg building a Python
# row per task, the largest part of a list's cost in Python (bench/README.md).
# A sync's pages (``tasks.sync``) are made the same way.
PAGE_AGGREGATES = """coalesce(string_agg(body, ',' ORDER BY position)
                FILTER (WHERE position <= %(limit)s), '') AS bodies,
       count(*)::int AS fetched,
       (array_agg(sort_value ORDER BY position))[%(limit)s] AS last_value,
       (array_agg(id ORDER BY position))[%(limit)s] AS last_id"""

PAGE_SQL = f"""
SELECT {PAGE_AGGREGATES},
       ({LIST_STATE}) AS state
FROM ({{page_rows}}) AS page
"""


# --- building a page's statement -------------------------------------------------


@dataclass(frozen=True)
class Page:
    bodies: str  # the tasks' JSON objects, comma-separated
    count: int
    next_cursor: PageToken | None
    state: str = ""  # LIST_STATE as of this page: what its ETag is made of


def _like_pattern(text: str) -> str:
    """A substring pattern for ILIKE with the client's wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


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
    return page_sql(sort, tuple(filters), keyset), params


@functools.lru_cache(maxsize=512)
def page_sql(sort: str, filter_names: tuple[str, ...], keyset: str | None) -> str:
    """The page statement's text for one shape of request, composed once.

    ``keyset`` is None on a first page, else whether the token's sort value
    was NULL (``"null"``) or not (``"value"``). Composing SQL objects on every
    request is a visible share of a list request's time; as text, psycopg also
    caches its own parsing of it.
    """
    column, descending, nullable = SORT_COLUMNS[sort]
    col = sql.Identifier(column)
    beyond = sql.SQL("<" if descending else ">")
    conditions: list[sql.Composable] = [sql.SQL(LIST_FILTERS[name]) for name in filter_names]
    if keyset == "null":  # only reached for nullable columns
        conditions.append(sql.SQL(KEYSET_AFTER_NULL).format(col=col, beyond=beyond))
    elif keyset is not None:
        template = KEYSET_NULLABLE if nullable else KEYSET
        cast = sql.SQL(COLUMN_TYPES[column])
        conditions.append(sql.SQL(template).format(col=col, beyond=beyond, cast=cast))
    direction = sql.SQL("DESC" if descending else "ASC")
    # NULLS LAST only where NULLs exist: on NOT NULL columns the plain order
    # lets the (user_id, created_at DESC, id DESC) index deliver rows in order.
    nulls = sql.SQL(" NULLS LAST" if nullable else "")
    order = sql.SQL("t.{col} {direction}{nulls}, t.id {direction}").format(
        col=col, direction=direction, nulls=nulls
    )
    page_rows = sql.SQL(PAGE_ROWS_SQL).format(
        col=col,
        conditions=sql.SQL("").join(sql.SQL(" AND ") + c for c in conditions),
        order=order,
    )
    return sql.SQL(PAGE_SQL).format(page_rows=page_rows).as_string()


# --- running it ---------------------------------------------------------------------


async def list_state(conn: UserConnection, user_id: str) -> str:
    """LIST_STATE alone: enough to answer If-None-Match without building a page."""
    result = await conn.execute(LIST_STATE_SQL, {"user_id": user_id})
    row = await result.fetchone()
    assert row is not None
    state: str = row["state"]
    return state


async def list_tasks(
    conn: UserConnection,
    user_id: str,
    *,
    sort: str,
    filters: dict[str, Any],
    after: PageToken | None,
    limit: int,
) -> Page:
    """One page of the user's live tasks, and the token of the next when there is one."""
    query, params = build_list_query(sort, filters, after)
    result = await conn.execute(
        query, {"user_id": user_id, **params, "limit": limit, "fetch": limit + 1}
    )
    row = await result.fetchone()
    assert row is not None  # an aggregate always returns one row
    more = row["fetched"] > limit
    next_token = PageToken(sort, row["last_value"], row["last_id"]) if more else None
    return Page(row["bodies"], min(row["fetched"], limit), next_token, row["state"])
