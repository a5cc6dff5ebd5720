"""The metrics' cost in throughput: the list at 64 connections, with and without them.

``python -m bench.metrics_ab [--seconds 5] [--repeat 5]`` seeds the harness's
users and tasks into a durable PostgreSQL, starts the service twice (as it
ships, and ``bench.service_without_metrics``), one worker each, and alternates
wrk list runs between the two; it prints each pair and the median ratio. The
machines drift within minutes, so only ratios measured in the same pair count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import psycopg

from bench.load import seed, write_lua_data, wrk
from bench.peers import Server, service_env
from bench.report import log
from devtools.postgres import DURABLE_SETTINGS, PostgresCluster, as_role, ensure_runtime_role


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--same",
        action="store_true",
        help="an A/A run: both servers with metrics, to see the bias between the two slots",
    )
    parser.add_argument(
        "--off-first", action="store_true", help="start the server without metrics first"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="todo-metrics-ab-"))
    data = work / "data.lua"
    cluster = PostgresCluster(settings=DURABLE_SETTINGS)
    servers: list[Server] = []
    try:
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        ensure_runtime_role(cluster.url())
        write_lua_data(seed(url, 1000, 50), data)
        env = service_env(as_role(url), 1)
        on_command = [sys.executable, "-m", "todo_server", "serve"]
        off_command = [sys.executable, "-m", "bench.service_without_metrics"]
        if args.same:
            off_command = on_command
        # The two slots differ a little by themselves (--same shows how much): --off-first
        # swaps them, and the A/B is read with both orders.
        order = [("metrics on", on_command), ("metrics off", off_command)]
        for name, command in reversed(order) if args.off_first else order:
            servers.append(Server(name, command, env, work / name.replace(" ", "-")))
        by_name = {server.name: server for server in servers}
        on, off = by_name["metrics on"], by_name["metrics off"]
        for server in (on, off):
            wrk(server.url, "list", 16, 1, data)  # warm-up
        ratios = []
        for repeat in range(args.repeat):
            # Alternate which goes first, so a drift inside a pair favours neither.
            pair = (on, off) if repeat % 2 == 0 else (off, on)
            rps = {
                s.name: wrk(s.url, "list", args.connections, args.seconds, data)["rps"]
                for s in pair
            }
            ratios.append(rps["metrics on"] / rps["metrics off"])
            log(
                f"list c{args.connections}: on {rps['metrics on']:.0f} req/s,"
                f" off {rps['metrics off']:.0f} req/s, on/off {ratios[-1]:.3f}"
            )
        log(f"median on/off over {args.repeat} pairs: {statistics.median(ratios):.3f}")
    finally:
        for server in servers:
            server.stop()
        cluster.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
