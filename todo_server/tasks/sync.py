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

Transaction ids belong to one database's history, so tokens and cursors name
it: a hash of the cluster's ``system_identifier`` and the database's oid. A dump
restored into another cluster (pg_dump | psql, a provider's logical copy) keeps
neither; one restored into a new database on the same server keeps the first,
not the second. A token from another database is refused (410). So is one beyond the snapshot's
xmax, which a token from before a point-in-time restore or a failover that
lost the last transactions can be (same cluster identity, counter behind).
A restore also keeps the stored ``change_xid`` and ``users.purged_xid``: where
they are at or beyond the xmax, they are first pulled back to the id of the
transaction that notices (``rebase_foreign_changes``), so the user's rows,
purge horizon and fresh tokens all count in the new history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import DictRow

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
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS snapshot_xmax,
       (SELECT purged_xid FROM users WHERE id = %(user_id)s) AS purged_xid,
       (SELECT max(s.change_xid) FROM tasks AS s WHERE s.user_id = %(user_id)s) AS newest,
       (SELECT system_identifier FROM pg_control_system())::text || '/'
           || (SELECT oid FROM pg_database WHERE datname = current_database())::text
           AS database_identity
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

# A user's transaction ids that another database wrote (at or beyond this
# transaction's own id, so beyond every id this database has handed out),
# pulled back to this transaction's: the stamp trigger (sql/0006) sets
# change_xid to it, and the body it re-renders is unchanged. A purge horizon
# from there becomes this id too, so a token from before this moment is
# refused rather than trusted. Concurrent runs are harmless: the second finds
# nothing left at or beyond its own id.
REBASE_FOREIGN_CHANGES_SQL = """
WITH rebased AS (
    UPDATE tasks SET change_xid = 0
    WHERE user_id = %(user_id)s AND change_xid >= pg_current_xact_id()::text::bigint
    RETURNING 1
)
UPDATE users SET purged_xid = pg_current_xact_id()::text::bigint
WHERE id = %(user_id)s AND purged_xid >= pg_current_xact_id()::text::bigint
"""

#: Sorts before every real task id, for the first page of a sync.
NO_TASK_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class SyncPage(Page):
    #: Where the client's next sync starts once it has every page of this one.
    next_floor: int = 0
    #: The last row's (transaction id, task id) when another page follows.
    last: tuple[int, str] | None = None
    #: The database whose transaction ids the floor and ``last`` count in.
    database: str = ""


MOVED = (
    "This sync_token (or cursor) was issued by another database (the service's database"
    " was restored or failed over); sync from scratch (updated_since=2000-01-01T00:00:00Z)"
    " and keep the new token"
)


def database_id(identity: str) -> str:
    """The database a token's ids belong to (cluster identity and database oid), hashed."""
    digest = hashlib.sha256(b"todo-server database " + identity.encode())
    return digest.hexdigest()[:16]


async def read_changes(
    conn: UserConnection,
    user_id: str,
    *,
    floor: int | None,
    since: datetime | None,
    after: tuple[int, int, str] | None,
    limit: int,
    issued_by: tuple[str, ...] = (),
) -> SyncPage:
    """Every task written since ``floor`` (a sync token's) and/or ``since``, in write order.

    ``after`` is (first page's floor, last transaction id, last task id) from
    the previous page. A sync that takes several pages keeps the first page's
    snapshot xmin as the floor for the next sync: a change that committed
    behind the keyset while the client paged is picked up by that next sync.
    ``issued_by`` names the databases the client's token and cursor came from.
    """
    next_floor: int | None = None
    after_xid, after_id = -1, NO_TASK_ID
    if after is not None:
        next_floor, after_xid, after_id = after
    params = {
        "user_id": user_id,
        "floor": floor or 0,
        "since": since,
        "after_xid": after_xid,
        "after_id": after_id,
        "limit": limit,
        "fetch": limit + 1,
    }
    row = await _fetch_one(conn, params)
    if max(row["newest"] or 0, row["purged_xid"] or 0) >= row["snapshot_xmax"]:
        await rebase_foreign_changes(conn, user_id)
        row = await _fetch_one(conn, params)
    database = database_id(row["database_identity"])
    if any(issuer != database for issuer in issued_by):
        raise SyncTokenExpired(MOVED)
    if max(floor or 0, next_floor or 0, after_xid) > row["snapshot_xmax"]:
        raise SyncTokenExpired(MOVED)  # ahead of this database's history
    if floor is not None and row["purged_xid"] is not None and floor <= row["purged_xid"]:
        raise SyncTokenExpired()  # a tombstone it has not seen may be purged
    if next_floor is None:
        next_floor = row["snapshot_xmin"]
    more = row["fetched"] > limit
    last = (row["last_value"], row["last_id"]) if more else None
    return SyncPage(
        row["bodies"],
        min(row["fetched"], limit),
        None,
        next_floor=next_floor,
        last=last,
        database=database,
    )


async def _fetch_one(conn: UserConnection, params: dict[str, Any]) -> DictRow:
    result = await conn.execute(SYNC_TASKS_SQL, params)
    row = await result.fetchone()
    assert row is not None  # an aggregate always returns one row
    return row


async def rebase_foreign_changes(conn: UserConnection, user_id: str) -> None:
    """Pull the user's transaction ids written by another database back into this one's."""
    await conn.execute(REBASE_FOREIGN_CHANGES_SQL, {"user_id": user_id})
