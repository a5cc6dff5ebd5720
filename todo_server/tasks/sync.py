"""Incremental sync: every task written since a sync token, in the order of commits.

``GET .../tasks?sync_token=...`` (or ``updated_since=...`` to start) returns the
user's changed tasks, deleted ones as tombstones, and the token for next time;
its handler is ``tasks.endpoints.list_changes``, the statement and the function
that runs it are here.

Each row records the transaction that last wrote it (``change_xid``, sql/0006).
A token holds the xmin of the snapshot its sync read with: every transaction
below it had finished, so every change the client has not seen has a
transaction id at or above it, and the next sync asks for exactly those. A
change may come twice; none is ever skipped, even one whose transaction waited
on a lock and committed after later ones. A token from before a purge of the
user's tombstones is refused (410): the client starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from todo_server.errors import SyncTokenExpired
from todo_server.storage.row_security import UserConnection
from todo_server.tasks.listing import PAGE_AGGREGATES, Page
from todo_server.tasks.store import TASK_JSON

TOMBSTONE_JSON = """json_build_object(
    'id', t.id, 'deleted', true, 'updated_at', task_timestamp_json(t.updated_at)
)::text"""

# Changes in the order their transactions got ids, from a floor (a sync token's
# snapshot xmin) and/or an updated_at, deleted tasks as tombstones. The page also
# reports this statement's snapshot xmin: the floor for the client's next sync
# (sql/0006 says why that never skips a change).
SYNC_TASKS_SQL = f"""
SELECT {PAGE_AGGREGATES},
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS snapshot_xmin,
       (SELECT purged_xid FROM users WHERE id = %(user_id)s) AS purged_xid
FROM (
    SELECT t.id::text AS id, t.change_xid AS sort_value,
           CASE WHEN t.deleted_at IS NULL THEN {TASK_JSON} ELSE {TOMBSTONE_JSON} END AS body,
           row_number() OVER (ORDER BY t.change_xid, t.id) AS position
    FROM tasks AS t
    WHERE t.user_id = %(user_id)s
      AND t.change_xid >= %(floor)s
      AND (%(since)s::timestamptz IS NULL OR t.updated_at > %(since)s::timestamptz)
      AND (t.change_xid, t.id) > (%(after_xid)s, %(after_id)s::uuid)
    ORDER BY t.change_xid, t.id
    LIMIT %(fetch)s
) AS page
"""

#: Sorts before every real task id, for the first page of a sync.
NO_TASK_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class SyncPage(Page):
    #: Where the client's next sync starts once it has every page of this one.
    next_floor: int = 0
    #: The last row's (transaction id, task id) when another page follows.
    last: tuple[int, str] | None = None


async def read_changes(
    conn: UserConnection,
    user_id: str,
    *,
    floor: int | None,
    since: datetime | None,
    after: tuple[int, int, str] | None,
    limit: int,
) -> SyncPage:
    """Every task written since ``floor`` (a sync token's) and/or ``since``, in write order.

    ``after`` is (first page's floor, last transaction id, last task id) from
    the previous page. A sync that takes several pages keeps the first page's
    snapshot xmin as the floor for the next sync: a change that committed
    behind the keyset while the client paged is picked up by that next sync.
    """
    next_floor: int | None = None
    after_xid, after_id = -1, NO_TASK_ID
    if after is not None:
        next_floor, after_xid, after_id = after
    result = await conn.execute(
        SYNC_TASKS_SQL,
        {
            "user_id": user_id,
            "floor": floor or 0,
            "since": since,
            "after_xid": after_xid,
            "after_id": after_id,
            "limit": limit,
            "fetch": limit + 1,
        },
    )
    row = await result.fetchone()
    assert row is not None  # an aggregate always returns one row
    if floor is not None and row["purged_xid"] is not None and floor <= row["purged_xid"]:
        raise SyncTokenExpired()  # a tombstone it has not seen may be purged
    if next_floor is None:
        next_floor = row["snapshot_xmin"]
    more = row["fetched"] > limit
    last = (row["last_value"], row["last_id"]) if more else None
    return SyncPage(
        row["bodies"], min(row["fetched"], limit), None, next_floor=next_floor, last=last
    )
