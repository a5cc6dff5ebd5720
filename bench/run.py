"""Benchmark harness: ``./run.sh bench`` (or ``./run.sh bench --smoke`` for a quick check).

Starts a durable PostgreSQL (fsync on, as production), seeds 1,000 users x 50
tasks, starts the service in production configuration and a bare Starlette app
under the same uvicorn options, and drives both with wrk (one load thread; the
machine has two cores) through Lua scenarios that rotate over the users'
tokens. It also runs the service's own list query under ``pgbench -M prepared``.
Two peers answer the same list request: the floor (bench/floor_app.py) and, when
``seed`` is among the scenarios, the seed stack (bench/seed_app.py, FastAPI +
SQLModel + psycopg2), installed in its own virtualenv under .data/.

The machines are noisy, so each repeat alternates the bare ceiling and every
scenario, and the report gives medians and ratios measured in the same run.
Results go to ``bench/results/<timestamp>.json`` and ``bench/results/latest.md``.
Run from the project folder as ``python -m bench.run`` (what ``./run.sh bench`` does).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import psycopg

from devtools.liveserver import ROOT, LiveServer, free_port
from devtools.postgres import DURABLE_SETTINGS, PostgresCluster, as_role, ensure_runtime_role
from todo_server.storage import migrate
from todo_server.tasks import listing

SECRET = "bench-secret-" + "b" * 40
SCENARIOS = ("list", "poll", "floor", "seed", "get", "create", "update", "complete", "mix")
RESULTS = ROOT / "bench" / "results"
SEED_REQUIREMENTS = ROOT / "bench" / "seed-requirements.txt"
SEED_VENV = ROOT / ".data" / "bench-seed-venv"

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


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------


def seed(url: str, users: int, tasks: int) -> dict[str, str]:
    """Seed the users and their tasks; returns one task id per user id."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply(conn)
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


# --- processes ---------------------------------------------------------------------


class Server(LiveServer):
    """A server process (the service or the bare app) on a free port, started at once."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        port = free_port()
        if "uvicorn" in args:
            args = [*args, "--port", str(port)]
        super().__init__(env, args, port=port, log_path=log_path, process_group=True, name=name)
        self.url = self.base_url
        self.start(timeout=60)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the workers, or the server itself."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        # uvicorn's supervisor starts workers and a resource tracker; workers serve.
        workers = [pid for pid in pids if "multiprocessing.resource_tracker" not in _cmdline(pid)]
        return workers or [self.process.pid]

    def peak_rss_mb(self) -> list[float]:
        return [_peak_rss_kb(pid) / 1024 for pid in self.worker_pids()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def uvicorn_command(python: str | Path, app: str, workers: int, *extra: str) -> list[str]:
    """A peer app under uvicorn as the harness runs them all: local, quiet, no access log."""
    return [
        str(python),
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
        *extra,
    ]


def service_env(database_url: str, workers: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "ENVIRONMENT": "production",
        "ALLOWED_ORIGINS": "https://app.example.com",
        "HOST": "127.0.0.1",
        "WORKERS": str(workers),
        "LOG_LEVEL": "info",
        "MAX_TASKS_PER_USER": "100000",
    }


# --- the seed stack -------------------------------------------------------------------


def ensure_seed_venv() -> Path:
    """The seed stack's own virtualenv, installed again only when its requirements change.

    Returns its python. A stamp file holds the requirements' digest and the Python
    version; a lock keeps two harness runs from installing into it at once.
    """
    digest = hashlib.sha256(SEED_REQUIREMENTS.read_bytes()).hexdigest()
    want = f"{digest} {platform.python_version()}"
    python = SEED_VENV / "bin" / "python"
    stamp = SEED_VENV / ".installed"
    SEED_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(SEED_VENV.parent / "bench-seed-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == want and python.exists():
            return python
        log(f"installing the seed stack into {SEED_VENV} (first run, or its requirements changed)")
        stamp.unlink(missing_ok=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(SEED_VENV)], check=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + ["-r", str(SEED_REQUIREMENTS)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"installing the seed stack failed:\n{result.stderr[-3000:]}")
        stamp.write_text(want + "\n")
    return python


def start_seed(python: Path, database_url: str, workers: int, log_path: Path) -> Server:
    """The seed stack under uvicorn with the bare app's options, in its own virtualenv.

    It connects as the harness's superuser, which row-level security does not
    bind (the seed filters by user in its WHERE), and verifies the harness's
    tokens with the same shared secret the service is given. A short graceful
    shutdown: a stalled seed (see restart_if_stalled) would otherwise hold its
    stop for the full 20 s.
    """
    return Server(
        "seed",
        uvicorn_command(
            python,
            "bench.seed_app:app",
            workers,
            "--no-server-header",
            "--timeout-graceful-shutdown",
            "2",
        ),
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": database_url.replace("postgresql://", "postgresql+psycopg2://", 1),
            "SECRET_KEY": SECRET,
        },
        log_path,
    )


def restart_if_stalled(
    seed: Server,
    result: dict[str, Any],
    python: Path,
    database_url: str,
    workers: int,
    data: Path,
    log_path: Path,
) -> Server:
    """A fresh seed stack after a run it did not keep up with; else the same one.

    From about 70 connections per worker the seed can stall: all 40 of its threads
    wait for a pool connection (py-spy: QueuePool._do_get), while the pool's 30
    connections belong to requests whose response validation and session close
    wait for one of those threads; nothing moves until SQLAlchemy's 30 s pool
    timeout (the known issue of sync ``yield`` session dependencies,
    fastapi/fastapi#3205 and #12066). The backlog would carry the stall into the
    seed's next run, so it starts again, warmed up like the first one.
    """
    if result["requests"] and not result["errors"]:
        return seed
    log("the seed stack stalled; starting it again for its next run")
    seed.stop()
    fresh = start_seed(python, database_url, workers, log_path)
    wrk(fresh.url, "seed", 16, 1, data)
    return fresh


# --- load ----------------------------------------------------------------------------


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
            str(ROOT / "bench" / "scenarios.lua"),
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


# --- report ----------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted(
        {(r["workers"], r["scenario"], r["connections"]) for r in runs if r["scenario"] != "bare"},
        key=lambda k: (k[0], SCENARIOS.index(k[1]), k[2]),
    )
    for workers, scenario, connections in keys:
        mine = [
            r
            for r in runs
            if (r["workers"], r["scenario"], r["connections"]) == (workers, scenario, connections)
        ]
        ratios = []
        for r in mine:
            bare = [
                b["rps"]
                for b in runs
                if b["scenario"] == "bare"
                and (b["workers"], b["connections"], b["repeat"])
                == (workers, connections, r["repeat"])
            ]
            if bare:
                ratios.append(r["rps"] / bare[0])
        bare_all = [
            b["rps"]
            for b in runs
            if b["scenario"] == "bare"
            and (b["workers"], b["connections"]) == (workers, connections)
        ]
        rows.append(
            {
                "workers": workers,
                "scenario": scenario,
                "connections": connections,
                "rps": statistics.median(r["rps"] for r in mine),
                "p50_ms": statistics.median(r["p50_ms"] for r in mine),
                "p99_ms": statistics.median(r["p99_ms"] for r in mine),
                "errors": sum(r["errors"] for r in mine),
                "bare_rps": statistics.median(bare_all) if bare_all else None,
                "ratio_to_bare": statistics.median(ratios) if ratios else None,
                "repeats": len(mine),
            }
        )
    return rows


def markdown(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    config = meta["config"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']['cores']} cores, {meta['machine']['cpu']}, "
        f"{config['seconds']} s per run, median of {config['repeat']} alternating repeats.",
        "",
        "| workers | scenario | connections | requests/s | p50 ms | p99 ms | errors"
        " | bare Starlette req/s | ratio to bare | peak RSS/worker MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        ratio = f"{row['ratio_to_bare']:.0%}" if row["ratio_to_bare"] is not None else "-"
        bare = f"{row['bare_rps']:.0f}" if row["bare_rps"] is not None else "-"
        rss = max(meta["peak_rss_mb"].get(str(row["workers"]), [0]))
        lines.append(
            f"| {row['workers']} | {row['scenario']} | {row['connections']} | {row['rps']:.0f}"
            f" | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} | {bare} | {ratio}"
            f" | {rss:.0f} |"
        )
    floors = {
        (row["workers"], row["connections"]): row["rps"]
        for row in summary
        if row["scenario"] == "floor"
    }
    for row in summary:
        floor_rps = floors.get((row["workers"], row["connections"]))
        if row["scenario"] == "list" and floor_rps:
            lines.append(
                f"\nlist at {row['connections']} connections, {row['workers']} worker(s):"
                f" {row['rps'] / floor_rps:.0%} of the floor endpoint (bench/floor_app.py,"
                f" {floor_rps:.0f} req/s)."
            )
    lines += seed_lines(summary, meta["config"].get("smoke", False))
    if meta.get("pgbench_tps"):
        lines += [
            "",
            f"pgbench -M prepared, the service's list query (50 rows as JSON), 8 clients: "
            f"{statistics.median(meta['pgbench_tps']):.0f} transactions/s (median).",
        ]
    return "\n".join(lines) + "\n"


def seed_lines(summary: list[dict[str, Any]], smoke: bool) -> list[str]:
    """The service's list as a multiple of the seed stack's, measured in the same run."""
    if smoke:
        return [
            "\nThe seed stack (bench/seed_app.py) is not run in --smoke: installing its"
            " virtualenv costs time. Run it with --scenarios list,seed."
        ]
    seeds = {
        (row["workers"], row["connections"]): row["rps"]
        for row in summary
        if row["scenario"] == "seed"
    }
    lines = []
    for row in summary:
        key = (row["workers"], row["connections"])
        seed_rps = seeds.get(key)
        if row["scenario"] == "list" and seed_rps == 0:
            lines.append(
                f"\nlist at {row['connections']} connections, {row['workers']} worker(s):"
                f" {row['rps']:.0f} req/s; the seed stack answered no request (it stalls: pool"
                " connections held by sessions waiting to close, fastapi/fastapi#3205)."
            )
        elif row["scenario"] == "list" and seed_rps:
            lines.append(
                f"\nlist at {row['connections']} connections, {row['workers']} worker(s):"
                f" {row['rps'] / seed_rps:.1f}× the seed stack (FastAPI + SQLModel + psycopg2,"
                f" bench/seed_app.py, {seed_rps:.0f} req/s)."
            )
    return lines


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# --- main -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a 2-second run that checks the harness"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="alternating repeats")
    parser.add_argument("--connections", default="8,64,256")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.repeat, args.connections, args.workers = 1, 1, "8", "1"
        args.scenarios, args.users, args.tasks = "list,create", 20, 50

    connections = [int(c) for c in args.connections.split(",")]
    workers_list = [int(w) for w in args.workers.split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")

    # The seed stack is started only when asked for: its virtualenv costs an install
    # the first time, so --smoke (list and create) never pays for it.
    seed_python = ensure_seed_venv() if "seed" in scenarios else None
    work = Path(tempfile.mkdtemp(prefix="todo-bench-"))
    cluster = PostgresCluster(settings=DURABLE_SETTINGS)
    servers: list[Server] = []
    runs: list[dict[str, Any]] = []
    pgbench_tps: list[float] = []
    peak_rss: dict[str, list[float]] = {}
    try:
        log("starting PostgreSQL (durable settings)")
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        ensure_runtime_role(cluster.url())  # the service connects as it, as in production
        log(f"seeding {args.users} users x {args.tasks} tasks")
        first_tasks = seed(url, args.users, args.tasks)
        data = work / "data.lua"
        tokens = write_lua_data(first_tasks, data)

        for workers in workers_list:
            log(f"starting the service and the bare app with {workers} worker(s)")
            env = service_env(as_role(url), workers)
            service = Server(
                "service",
                [sys.executable, "-m", "todo_server", "serve"],
                env,
                work / f"service-{workers}.log",
            )
            servers.append(service)
            bare = Server(
                "bare",
                uvicorn_command(
                    sys.executable, "bench.bare_app:app", workers, "--no-server-header"
                ),
                {"PATH": env["PATH"]},
                work / f"bare-{workers}.log",
            )
            servers.append(bare)
            floor = Server(
                "floor",
                uvicorn_command(
                    sys.executable,
                    "bench.floor_app:app",
                    workers,
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                ),
                {"PATH": env["PATH"], "DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET},
                work / f"floor-{workers}.log",
            )
            servers.append(floor)
            peers = {"bare": bare, "floor": floor}
            if seed_python:
                peers["seed"] = start_seed(seed_python, url, workers, work / f"seed-{workers}.log")
                servers.append(peers["seed"])
            for scenario, target in (("list", service), *peers.items()):
                wrk(target.url, scenario, 16, 1, data)  # warm-up: pools, prepared statements
            for repeat in range(args.repeat):
                for conns in connections:
                    for scenario in ["bare", *scenarios]:
                        target = peers.get(scenario, service)
                        if scenario == "poll":  # 304s: the ETags as they are now
                            write_lua_data(first_tasks, data, current_etags(service.url, tokens))
                        result = wrk(target.url, scenario, conns, args.seconds, data)
                        if not result["requests"]:  # none answered within the run: none counted
                            result["errors"] = result["unanswered"] = conns
                        result.update(
                            workers=workers, scenario=scenario, connections=conns, repeat=repeat
                        )
                        runs.append(result)
                        log(
                            f"w={workers} c={conns} {scenario:8s} {result['rps']:8.0f} req/s "
                            f"p50 {result['p50_ms']:6.1f} ms p99 {result['p99_ms']:6.1f} ms "
                            f"errors {result['errors']}"
                        )
                        if scenario == "seed":
                            seed_peer = restart_if_stalled(
                                peers["seed"],
                                result,
                                seed_python,
                                url,
                                workers,
                                data,
                                work / f"seed-{workers}-{repeat}-{conns}.log",
                            )
                            if seed_peer is not peers["seed"]:
                                peers["seed"] = seed_peer
                                servers.append(seed_peer)
                if workers == workers_list[0]:
                    tps = pgbench(cluster, "bench", args.seconds, args.users)
                    pgbench_tps.append(tps)
                    log(f"pgbench list query: {tps:.0f} tps")
            peak_rss[str(workers)] = service.peak_rss_mb()
            log(f"peak RSS per worker: {', '.join(f'{m:.0f} MB' for m in peak_rss[str(workers)])}")
            service.stop()
            for peer in peers.values():
                peer.stop()
    finally:
        for server in servers:
            server.stop()
        cluster.remove()

    summary = summarize(runs)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "config": {
            "seconds": args.seconds,
            "repeat": args.repeat,
            "users": args.users,
            "tasks_per_user": args.tasks,
            "smoke": args.smoke,
        },
        "peak_rss_mb": peak_rss,
        "pgbench_tps": pgbench_tps,
    }
    table = markdown(summary, meta)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"smoke-{stamp}.json" if args.smoke else f"{stamp}.json"
    target = args.output / name
    target.write_text(json.dumps({**meta, "summary": summary, "runs": runs}, indent=2) + "\n")
    if not args.smoke:
        (args.output / "latest.md").write_text(table)
    log(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
