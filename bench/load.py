"""The load: the seeded data, the tokens, and the two load generators (wrk and pgbench).

The harness seeds the users and their tasks straight into PostgreSQL, signs one
token per user with the secret every peer is given, and writes tokens, task ids
and list ETags as a Lua table that ``bench/scenarios.lua`` rotates over. wrk
runs one scenario against one peer and reports one JSON line; pgbench runs the
service's own list query with no HTTP in front of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import psycopg

from devtools.liveserver import ROOT
from devtools.postgres import PostgresCluster
from todo_server.config import load_migration_settings
from todo_server.storage import migrate
from todo_server.tasks import listing

#: The HS256 secret the harness signs its tokens with; every peer verifies with it.
SECRET = "bench-secret-" + "b" * 40
#: The scenarios of bench/scenarios.lua, in the order the report lists them.
SCENARIOS = ("list", "poll", "floor", "seed", "get", "create", "update", "complete", "mix")
SCENARIOS_LUA = ROOT / "bench" / "scenarios.lua"

SEED_USERS_SQL = """
INSERT INTO users (id, email, name, live_tasks)
SELECT 'bench-' || u, 'bench' || u || '@example.com', 'Bench user ' || u, %(tasks)s
FROM generate_series(1, %(users)s) AS u
"""

SEED_TASKS_SQL = """
INSERT INTO tasks (user_id, title, description, priority, due_at, tags, created_at, updated_at)
SELECT 'bench-' || u,
       'Task ' || t || ' of user ' || u,
       CASE WHEN t %% 3 = 0 THEN 'A description of task ' || t END,
       (ARRAY['low', 'medium', 'high'])[1 + t %% 3]::task_priority,
       CASE WHEN t %% 2 = 0 THEN now() + t * interval '1 day' END,
       ARRAY['tag' || (t %% 5)],
       now() - t * interval '1 minute',
       now() - t * interval '1 minute'
FROM generate_series(1, %(users)s) AS u, generate_series(1, %(tasks)s) AS t
"""

FIRST_TASKS_SQL = """
SELECT DISTINCT ON (user_id) user_id, id::text AS id
FROM tasks ORDER BY user_id, created_at
"""


# --- data ------------------------------------------------------------------------


def seed(url: str, users: int, tasks: int) -> dict[str, str]:
    """Seed the users and their tasks; returns one task id per user id."""
    # As `todo-server migrate` would with only DATABASE_URL set: the settings' defaults.
    settings = load_migration_settings({"DATABASE_URL": url})
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply(conn, lock_timeout=settings.lock_timeout, runtime_role=settings.runtime_role)
        conn.execute(SEED_USERS_SQL, {"users": users, "tasks": tasks})
        conn.execute(SEED_TASKS_SQL, {"users": users, "tasks": tasks})
        conn.execute("ANALYZE")
        return {row[0]: row[1] for row in conn.execute(FIRST_TASKS_SQL)}


def write_lua_data(
    first_tasks: dict[str, str], path: Path, etags: list[str] | None = None
) -> list[str]:
    """Tokens, task ids and list ETags as a Lua table for scenarios.lua; the tokens."""
    now = int(time.time())
    tokens, task_ids = [], []
    for user_id, task_id in sorted(first_tasks.items()):
        claims = {"sub": user_id, "email": f"{user_id}@example.com", "iat": now, "exp": now + 86400}
        tokens.append(jwt.encode(claims, SECRET, algorithm="HS256"))
        task_ids.append(task_id)
    token_list = ",".join(f'"{t}"' for t in tokens)
    task_list = ",".join(f'"{t}"' for t in task_ids)
    etag_list = ",".join("'" + tag + "'" for tag in (etags or [""] * len(tokens)))
    lua = (
        f"return {{\n  tokens = {{{token_list}}},\n  tasks = {{{task_list}}},\n"
        f"  etags = {{{etag_list}}},\n}}\n"
    )
    path.write_text(lua)
    return tokens


def current_etags(url: str, tokens: list[str]) -> list[str]:
    """Each user's list ETag now, for the poll scenario (a write since makes it stale)."""
    tags = []
    for token in tokens:
        request = urllib.request.Request(
            url + "/api/tasks?limit=50", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            tags.append(response.headers["ETag"])
    return tags


# --- load generators ---------------------------------------------------------------


def wrk(url: str, scenario: str, connections: int, seconds: float, data: Path) -> dict[str, Any]:
    """One wrk run; requests/s, latency and errors."""
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(SCENARIOS_LUA),
            url,
            "--",
            scenario,
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    line = [x for x in result.stdout.splitlines() if x.startswith("{")]
    if result.returncode != 0 or not line:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    raw = json.loads(line[-1])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors + raw["status"],
        "non_2xx": raw["status"],
        "socket_errors": errors,
        "requests": raw["requests"],
    }


def pgbench(cluster: PostgresCluster, dbname: str, seconds: float, users: int) -> float:
    """Transactions/s of the service's own list query under pgbench -M prepared."""
    text, _ = listing.build_list_query("-created_at", {}, None)
    for placeholder, value in (
        ("%(user_id)s", "'bench-' || :u"),
        ("%(limit)s", "50"),
        ("%(fetch)s", "51"),
    ):
        text = text.replace(placeholder, value)
    script = Path(tempfile.mkstemp(suffix=".sql")[1])
    script.write_text(f"\\set u random(1, {users})\n{' '.join(text.split())};\n")
    os.chmod(script, 0o644)
    args = [
        str(cluster.bindir / "pgbench"),
        "-n",
        "-M",
        "prepared",
        "-c",
        "8",
        "-j",
        "1",
        "-T",
        str(max(1, round(seconds))),
        "-f",
        str(script),
        "-h",
        str(cluster.socket_dir),
        "-U",
        "postgres",
        dbname,
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    script.unlink()
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if not match:
        raise RuntimeError(f"pgbench failed: {result.stdout}\n{result.stderr}")
    return float(match.group(1))
