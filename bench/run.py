"""Benchmark harness: ``./run.sh bench`` (or ``./run.sh bench --smoke`` for a quick check).

Starts a durable PostgreSQL (fsync on, as production), seeds the users and
their tasks, starts the service in production configuration beside its peers
(bench/peers.py), and drives each with wrk through the Lua scenarios
(bench/load.py; one load thread, so that the load generator takes little of the
CPU the servers share). It also runs the service's own list query under
``pgbench -M prepared``. The seed stack is started only when ``seed`` is among
the scenarios.

The machines are noisy, so each repeat alternates the bare ceiling and every
scenario, and the report (bench/report.py) gives medians and ratios measured in
the same run. Results go to ``bench/results/<timestamp>.json`` and
``bench/results/latest.md``. Run from the project folder as
``python -m bench.run`` (what ``./run.sh bench`` does).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.load import SCENARIOS, current_etags, pgbench, seed, write_lua_data, wrk
from bench.peers import (
    Server,
    ensure_seed_venv,
    restart_if_stalled,
    start_bare,
    start_floor,
    start_seed,
    start_service,
)
from bench.report import log, machine, publish
from devtools.liveserver import ROOT
from devtools.postgres import DURABLE_SETTINGS, PostgresCluster, ensure_runtime_role

RESULTS = ROOT / "bench" / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="short runs (list and create only) that check the harness",
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
    args.connections = [int(c) for c in args.connections.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


class Run:
    """One harness run: the database, the servers it started, and what it measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # Only when asked for: the seed stack's virtualenv costs an install the first
        # time, so --smoke (list and create) never pays for it.
        self.seed_python = ensure_seed_venv() if "seed" in args.scenarios else None
        self.work = Path(tempfile.mkdtemp(prefix="todo-bench-"))
        self.data = self.work / "data.lua"
        self.cluster = PostgresCluster(settings=DURABLE_SETTINGS)
        self.servers: list[Server] = []
        self.runs: list[dict[str, Any]] = []
        self.pgbench_tps: list[float] = []
        self.peak_rss: dict[str, list[float]] = {}

    def measure(self) -> None:
        """Everything, in order; every server and the database go away whatever happens."""
        try:
            log("starting PostgreSQL (durable settings)")
            self.cluster.start()
            with psycopg.connect(self.cluster.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench")
            self.url = self.cluster.url("bench")
            ensure_runtime_role(self.cluster.url())  # the service connects as it
            log(f"seeding {self.args.users} users x {self.args.tasks} tasks")
            self.first_tasks = seed(self.url, self.args.users, self.args.tasks)
            self.tokens = write_lua_data(self.first_tasks, self.data)
            for workers in self.args.workers:
                self.measure_workers(workers)
        finally:
            for server in self.servers:
                server.stop()
            self.cluster.remove()

    def started(self, server: Server) -> Server:
        self.servers.append(server)
        return server

    def measure_workers(self, workers: int) -> None:
        """Every repeat of every scenario at every connection count, with this many workers."""
        log(f"starting the service and the bare app with {workers} worker(s)")
        work, url = self.work, self.url
        service = self.started(start_service(url, workers, work / f"service-{workers}.log"))
        peers = {
            "bare": self.started(start_bare(workers, work / f"bare-{workers}.log")),
            "floor": self.started(start_floor(url, workers, work / f"floor-{workers}.log")),
        }
        if self.seed_python:
            seed_log = work / f"seed-{workers}.log"
            peers["seed"] = self.started(start_seed(self.seed_python, url, workers, seed_log))
        for scenario, target in (("list", service), *peers.items()):
            wrk(target.url, scenario, 16, 1, self.data)  # warm-up: pools, prepared statements
        for repeat in range(self.args.repeat):
            for conns in self.args.connections:
                for scenario in ["bare", *self.args.scenarios]:
                    target = peers.get(scenario, service)
                    if scenario == "poll":  # 304s: the ETags as they are now
                        etags = current_etags(service.url, self.tokens)
                        write_lua_data(self.first_tasks, self.data, etags)
                    result = self.one(target, workers, scenario, conns, repeat)
                    if scenario == "seed":
                        assert self.seed_python is not None
                        seed_peer = restart_if_stalled(
                            peers["seed"],
                            result,
                            self.seed_python,
                            url,
                            workers,
                            self.data,
                            work / f"seed-{workers}-{repeat}-{conns}.log",
                        )
                        if seed_peer is not peers["seed"]:
                            peers["seed"] = self.started(seed_peer)
            if workers == self.args.workers[0]:
                tps = pgbench(self.cluster, "bench", self.args.seconds, self.args.users)
                self.pgbench_tps.append(tps)
                log(f"pgbench list query: {tps:.0f} tps")
        self.peak_rss[str(workers)] = service.peak_rss_mb()
        log(f"peak RSS per worker: {', '.join(f'{m:.0f} MB' for m in self.peak_rss[str(workers)])}")
        service.stop()
        for peer in peers.values():
            peer.stop()

    def one(
        self, target: Server, workers: int, scenario: str, conns: int, repeat: int
    ) -> dict[str, Any]:
        """One wrk run, recorded and logged."""
        result = wrk(target.url, scenario, conns, self.args.seconds, self.data)
        if not result["requests"]:  # none answered within the run: none counted
            result["errors"] = result["unanswered"] = conns
        result.update(workers=workers, scenario=scenario, connections=conns, repeat=repeat)
        self.runs.append(result)
        log(
            f"w={workers} c={conns} {scenario:8s} {result['rps']:8.0f} req/s "
            f"p50 {result['p50_ms']:6.1f} ms p99 {result['p99_ms']:6.1f} ms "
            f"errors {result['errors']}"
        )
        return result

    def meta(self) -> dict[str, Any]:
        """What the results file says about the run besides the runs themselves."""
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "config": {
                "seconds": self.args.seconds,
                "repeat": self.args.repeat,
                "users": self.args.users,
                "tasks_per_user": self.args.tasks,
                "smoke": self.args.smoke,
            },
            "peak_rss_mb": self.peak_rss,
            "pgbench_tps": self.pgbench_tps,
        }


def main() -> int:
    run = Run(parse_args())
    run.measure()
    publish(run.args.output, run.meta(), run.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
