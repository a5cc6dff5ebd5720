"""The service and the migration runner behind a real PgBouncer in transaction mode."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx2
import psycopg

from devtools.liveserver import LiveServer
from tests.support.database import MIGRATION_DEFAULTS, settings_env
from tests.support.pgbouncer import through
from tests.support.signing import bearer, frontend_token
from todo_server.storage import migrate


def walk_the_api(base_url: str, user: str) -> list[int]:
    """One user's create, list, get, patch, complete and delete; every status."""
    with httpx2.Client(base_url=base_url, headers=bearer(frontend_token(user)), timeout=30) as h:
        statuses = []
        r = h.post("/api/tasks", json={"title": "t"})
        statuses.append(r.status_code)
        if r.status_code != 201:
            return statuses
        task = r.json()["id"]
        for _ in range(3):
            statuses.append(h.get("/api/tasks").status_code)
            statuses.append(h.get(f"/api/tasks/{task}").status_code)
        statuses.append(h.patch(f"/api/tasks/{task}", json={"title": "u"}).status_code)
        statuses.append(h.patch(f"/api/tasks/{task}/complete").status_code)
        statuses.append(h.delete(f"/api/tasks/{task}").status_code)
        return statuses


def sixty_four_clients(base_url: str) -> Counter[int]:
    with ThreadPoolExecutor(64) as pool:
        results = pool.map(lambda n: walk_the_api(base_url, f"pgb-{n}"), range(64))
        return Counter(status for statuses in results for status in statuses)


def test_64_concurrent_clients_through_pgbouncer_see_no_errors(bouncer, database_url, db):
    env = settings_env(
        database_url,
        DATABASE_URL=through(bouncer, database_url, user="todo_app"),
        DB_PGBOUNCER="transaction",
        DB_POOL_MAX="10",
    )
    with LiveServer(env) as server:
        statuses = sixty_four_clients(server.base_url)
    assert set(statuses) <= {200, 201, 204}, statuses
    assert sum(statuses.values()) == 64 * 10


def test_without_the_setting_lost_prepared_statements_are_503_and_say_why(
    bouncer, database_url, db
):
    url = through(bouncer, database_url, user="todo_app")
    env = settings_env(
        database_url, DATABASE_URL=url, DB_PREPARE_THRESHOLD="0", DB_POOL_MIN="1", DB_POOL_MAX="1"
    )
    with LiveServer(env) as server:
        http = httpx2.Client(base_url=server.base_url, headers=bearer(frontend_token("p")))
        assert http.get("/api/tasks").status_code == 200  # prepared on server connection 1
        with psycopg.connect(url, prepare_threshold=None) as other:
            # Another client's open transaction holds server connection 1 (PgBouncer
            # reuses the most recent one), so the service's next transaction runs on
            # another, where its prepared statement does not exist.
            other.execute("SELECT 1")
            r = http.get("/api/tasks")
        http.close()
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "service_unavailable"
    assert "Set DB_PGBOUNCER=transaction" in server.output


def test_the_statement_timeout_holds_on_every_server_connection(bouncer, database_url, db):
    # Its own role (the service changes its role's defaults), a superuser one here.
    url = through(bouncer, database_url)
    env = settings_env(
        database_url, DATABASE_URL=url, DB_PGBOUNCER="transaction", DB_STATEMENT_TIMEOUT="0.5"
    )
    with LiveServer(env) as server:
        # A connection of our own through PgBouncer, on whatever server connection
        # it gets, sees the service's timeout: it is the role's default now.
        # (TimeZone is one of the parameters PgBouncer itself keeps per client.)
        with psycopg.connect(url, prepare_threshold=None, autocommit=True) as conn:
            setting = conn.execute("SELECT current_setting('statement_timeout')").fetchone()
        assert setting == ("500ms",)
        http = httpx2.Client(
            base_url=server.base_url, headers=bearer(frontend_token("slow")), timeout=30
        )
        task = http.post("/api/tasks", json={"title": "locked"}).json()
        with db.transaction():
            db.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task["id"],))
            r = http.patch(f"/api/tasks/{task['id']}", json={"title": "waits"})
        http.close()
    assert r.status_code == 503
    assert r.json()["code"] == "database_timeout"


def test_concurrent_migrate_runs_through_pgbouncer_apply_each_file_once(bouncer, pg_server):
    url = pg_server.create_database("todo_pgb_migrate")
    target = bouncer.url(urlsplit(url).path.lstrip("/"))
    barrier = threading.Barrier(6)

    def run() -> list[int]:
        with psycopg.connect(target, autocommit=True, prepare_threshold=None) as conn:
            barrier.wait()
            return [m.version for m in migrate.apply(conn, **MIGRATION_DEFAULTS)]

    with ThreadPoolExecutor(6) as pool:
        applied = [
            version for versions in pool.map(lambda _: run(), range(6)) for version in versions
        ]
    expected = [m.version for m in migrate.discover()]
    assert sorted(applied) == expected  # each file exactly once, whichever run applied it
    with psycopg.connect(url, autocommit=True) as conn:
        recorded = [
            row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")
        ]
        locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    assert recorded == expected
    assert locks == (0,)
