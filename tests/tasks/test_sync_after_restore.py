"""Sync, ETags and purge horizons after the database moves to a cluster whose counter is behind.

pg_dump | psql into a new cluster (or a provider's logical copy) keeps every
stored transaction id as it was, while the new cluster hands out ids from its
own, smaller counter. Most tests here make that state in the test database:
they add the same large offset to the user's stored ids (``change_xid``,
``users.purged_xid``), loaded as a restore loads rows (without the trigger
that stamps the current transaction's id), and to the ids in the client's
token. Only the order of ids matters to the service, and that order is exactly
a restore's: rows and tokens are ahead of every id the database hands out from
then on, and changes made after the move get smaller ids than all of them.
The cluster stays the same, as after a point-in-time restore or a failover,
so these tokens still name this database. The last test does the real thing
once: pg_dump of the test database, psql into a second, newly initdb'd
cluster, the service started on it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import psycopg
import pytest
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from devtools.postgres import PostgresCluster, ensure_runtime_role, find_bindir, initdb
from tests.support.assertions import assert_error
from tests.support.database import settings_env
from tests.support.signing import TEST_SECRET
from tests.support.sync_replica import Replica
from tests.support.task_users import User
from todo_server.app import create_app
from todo_server.config import load_settings
from todo_server.purge import Purged, purge
from todo_server.tasks.page_tokens import (
    CursorCodec,
    PageToken,
    decode_changes_cursor,
    decode_sync_token,
    encode_changes_cursor,
    encode_sync_token,
)

#: Far beyond any id the test cluster will reach: the old cluster's history.
AHEAD = 1_000_000_000
CODEC = CursorCodec(TEST_SECRET)


def move_to_a_cluster_behind(db, user_id: str, token: str) -> str:
    """Shift the user's stored ids ahead of this cluster's counter; the token as it now stands."""
    with db.transaction():
        # As a restore loads rows: without the trigger that stamps the current id.
        db.execute("SET LOCAL session_replication_role = replica")
        db.execute(
            "UPDATE tasks SET change_xid = change_xid + %s WHERE user_id = %s", (AHEAD, user_id)
        )
        db.execute(
            "UPDATE users SET purged_xid = pg_current_xact_id()::text::bigint + %s WHERE id = %s",
            (AHEAD, user_id),
        )
    assert db.execute(
        "SELECT min(change_xid) > %s FROM tasks WHERE user_id = %s", (AHEAD, user_id)
    ).fetchone()[0]
    floor, database = decode_sync_token(CODEC, token)
    assert database is not None
    return encode_sync_token(CODEC, floor + AHEAD, database)


def test_a_token_from_before_the_move_is_410_and_a_fresh_start_then_works(ada, db):
    x, y = ada.create(title="x v1"), ada.create(title="y v1")
    replica = Replica(lambda params: ada.list(**params))
    replica.sync()
    old_token = move_to_a_cluster_behind(db, "ada", replica.token)
    x2 = ada.request("PATCH", f"/{x['id']}", json={"title": "x v2"}).json()

    # The old token is beyond every id this database has handed out.
    r = ada.request("GET", params={"sync_token": old_token})
    assert_error(r, 410, "sync_token_expired")
    assert ada.request("GET", params={"sync_token": old_token}).status_code == 410

    # Starting afresh delivers the change made after the move, and the next
    # syncs deliver later ones: no 410 from the purge horizon of the old history.
    fresh = Replica(lambda params: ada.list(**params))
    fresh.sync()
    assert fresh.tasks == {x["id"]: x2, y["id"]: y}
    y2 = ada.request("PATCH", f"/{y['id']}", json={"title": "y v2"}).json()
    ada.request("DELETE", f"/{x['id']}")
    fresh.sync()
    assert fresh.tasks == {y["id"]: y2}
    assert ada.list(sync_token=fresh.token)["tasks"] == []


def test_the_users_ids_are_pulled_back_into_this_databases_history(ada, bob, db):
    ada.create(title="a")
    bob.create(title="b")
    bobs = "SELECT change_xid FROM tasks WHERE user_id = 'bob'"
    bob_before = db.execute(bobs).fetchall()
    token = ada.list(updated_since="2000-01-01T00:00:00Z")["sync_token"]
    move_to_a_cluster_behind(db, "ada", token)
    ada.list(updated_since="2000-01-01T00:00:00Z")
    ahead = db.execute(
        "SELECT count(*) FROM tasks WHERE change_xid >= pg_current_xact_id()::text::bigint"
    ).fetchone()[0]
    purged = db.execute(
        "SELECT purged_xid < pg_current_xact_id()::text::bigint FROM users WHERE id = 'ada'"
    ).fetchone()[0]
    assert (ahead, purged) == (0, True)
    assert db.execute(bobs).fetchall() == bob_before  # another user's rows are not touched


def test_a_token_or_cursor_naming_another_database_is_410(ada):
    for n in range(3):
        ada.create(title=f"t{n}")
    first = ada.list(updated_since="2000-01-01T00:00:00Z", limit=2)
    floor, _ = decode_sync_token(CODEC, first["sync_token"])
    elsewhere = "0123456789abcdef"
    r = ada.request("GET", params={"sync_token": encode_sync_token(CODEC, floor, elsewhere)})
    assert "issued by another database" in assert_error(r, 410, "sync_token_expired")["message"]
    page_floor, last_xid, last_id, _ = decode_changes_cursor(CODEC, first["next_cursor"])
    cursor = encode_changes_cursor(CODEC, page_floor, last_xid, last_id, elsewhere)
    r = ada.request(
        "GET", params={"updated_since": "2000-01-01T00:00:00Z", "limit": 2, "cursor": cursor}
    )
    assert_error(r, 410, "sync_token_expired")


def test_a_token_from_before_tokens_named_their_database_still_works(ada):
    ada.create(title="before")
    floor, _ = decode_sync_token(
        CODEC, ada.list(updated_since="2000-01-01T00:00:00Z")["sync_token"]
    )
    later = ada.create(title="after")
    older_form = CODEC.encode(PageToken("sync-token", str(floor), ""))
    assert [t["id"] for t in ada.list(sync_token=older_form)["tasks"]] == [later["id"]]


def test_a_cursor_from_before_the_move_is_410(ada, db):
    for n in range(4):
        ada.create(title=f"t{n}")
    first = ada.list(updated_since="2000-01-01T00:00:00Z", limit=2)
    move_to_a_cluster_behind(db, "ada", first["sync_token"])
    floor, last_xid, last_id, database = decode_changes_cursor(CODEC, first["next_cursor"])
    assert database is not None
    cursor = encode_changes_cursor(CODEC, floor + AHEAD, last_xid + AHEAD, last_id, database)
    r = ada.request(
        "GET", params={"updated_since": "2000-01-01T00:00:00Z", "limit": 2, "cursor": cursor}
    )
    assert_error(r, 410, "sync_token_expired")


def test_a_list_etag_moves_with_a_change_made_after_the_move(ada, db, database_url):
    task = ada.create(title="v1")
    ada.create(title="other")
    token = ada.list(updated_since="2000-01-01T00:00:00Z")["sync_token"]
    move_to_a_cluster_behind(db, "ada", token)
    with psycopg.connect(database_url) as older:
        older.execute("SELECT pg_current_xact_id()")  # unrelated, open throughout
        tag = ada.request("GET").headers["etag"]
        assert ada.request("GET", headers={"If-None-Match": tag}).status_code == 304
        ada.request("PATCH", f"/{task['id']}", json={"title": "v2"})
        r = ada.request("GET", headers={"If-None-Match": tag})
        assert r.status_code == 200
        assert "v2" in {t["title"] for t in r.json()["tasks"]}


@pytest.mark.slow
def test_a_real_dump_restored_into_a_new_cluster_behind(ada, db, database_url):
    """pg_dump | psql into a second cluster whose counter is behind: the whole story, for real."""
    # The old cluster has a longer history than the new one will have by the end of the test.
    for _ in range(3000):
        db.execute("SELECT pg_current_xact_id()")
    x, y, z = ada.create(title="x v1"), ada.create(title="y v1"), ada.create(title="z")
    ada.request("DELETE", f"/{z['id']}")
    db.execute("UPDATE tasks SET deleted_at = now() - interval '31 days' WHERE id = %s", (z["id"],))
    assert asyncio.run(purge_now(database_url)).tasks == 1
    replica = Replica(lambda params: ada.list(**params))
    replica.sync()
    assert replica.tasks == {x["id"]: x, y["id"]: y}

    new = PostgresCluster()
    try:
        # Its own initdb, not a copy of the suite's template: a new server's own identity.
        shutil.rmtree(new.data)
        initdb(new.bindir, new.data, new.user, sync=False)
        new.start()
        ensure_runtime_role(new.url())
        with psycopg.connect(new.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE restored")
        restored_url = new.url("restored")
        bindir = find_bindir()
        dump = subprocess.run(
            [str(bindir / "pg_dump"), "-d", database_url], capture_output=True, check=True
        )
        subprocess.run(
            [str(bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", restored_url],
            input=dump.stdout,
            capture_output=True,
            check=True,
        )
        with psycopg.connect(restored_url, autocommit=True) as there:
            behind = there.execute(
                "SELECT pg_current_xact_id()::text::bigint < min(change_xid) FROM tasks"
            ).fetchone()[0]
        assert behind, "the new cluster's counter must be behind the restored ids"

        app = create_app(load_settings(settings_env(restored_url)))
        with TestClient(app, raise_server_exceptions=False) as client:
            moved = User(client, "ada")
            x2 = moved.request("PATCH", f"/{x['id']}", json={"title": "x v2"}).json()
            assert_error(
                moved.request("GET", params={"sync_token": replica.token}),
                410,
                "sync_token_expired",
            )
            fresh = Replica(lambda params: moved.list(**params))
            fresh.sync()
            assert fresh.tasks == {x["id"]: x2, y["id"]: y}
            tag = moved.request("GET").headers["etag"]
            y2 = moved.request("PATCH", f"/{y['id']}", json={"title": "y v2"}).json()
            fresh.sync()
            assert fresh.tasks == {x["id"]: x2, y["id"]: y2}
            assert moved.request("GET", headers={"If-None-Match": tag}).status_code == 200

            # Long after the move, the new counter has passed the old token's ids: the
            # token still names the old database, so it is still refused, not trusted.
            with psycopg.connect(restored_url, autocommit=True) as there:
                floor = decode_sync_token(CODEC, replica.token)[0]
                while (
                    there.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
                    <= floor
                ):
                    pass
            assert_error(
                moved.request("GET", params={"sync_token": replica.token}),
                410,
                "sync_token_expired",
            )
            assert moved.list(sync_token=fresh.token)["tasks"] == []
    finally:
        new.remove()


async def purge_now(database_url: str) -> Purged:
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        return await purge(conn, retention_days=30)


def test_a_backup_restored_into_another_database_on_the_same_server(ada, pg_server, database_url):
    """The most common restore: same cluster, so same identity and a counter already past
    every restored id; only the database is new. A token from before must not pass."""
    kept = ada.create(title="in the backup")
    bindir = find_bindir()
    dump = subprocess.run(
        [str(bindir / "pg_dump"), "-d", database_url], capture_output=True, check=True
    )
    # After the backup: a new task, a deletion; the client syncs both.
    ada.create(title="created after the backup")
    ada.request("DELETE", f"/{kept['id']}")
    replica = Replica(lambda params: ada.list(**params))
    replica.sync()
    assert [t["title"] for t in replica.tasks.values()] == ["created after the backup"]

    restored_url = pg_server.create_database("todo_restored")
    subprocess.run(
        [str(bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", restored_url],
        input=dump.stdout,
        capture_output=True,
        check=True,
    )
    app = create_app(load_settings(settings_env(restored_url)))
    with TestClient(app, raise_server_exceptions=False) as client:
        moved = User(client, "ada")
        assert_error(
            moved.request("GET", params={"sync_token": replica.token}), 410, "sync_token_expired"
        )
        fresh = Replica(lambda params: moved.list(**params))
        fresh.sync()
        assert fresh.tasks == {kept["id"]: kept}
