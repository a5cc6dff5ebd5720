"""Cost budget: where a request's Python time goes, layer by layer (``bench/profile.py``).

Starts the same durable PostgreSQL, seed and production-configured service as
the harness (``bench/run.py``), drives one scenario at a time with wrk (64 connections) and
samples the worker with py-spy at 500 Hz meanwhile (every thread: the log
writer's too). Each sample is charged to the innermost layer on its stack
(the table below, matched by file), so the layers add up to the whole; the
microseconds per request are that share of the worker's sampled CPU time
divided by the requests served.

py-spy is a development tool, not a dependency: it is installed into
``.data/py-spy`` on first use.

    .venv/bin/python -m bench.profile [--scenarios list,create,get] [--seconds 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.load import seed, write_lua_data, wrk
from bench.peers import start_service
from devtools.liveserver import ROOT
from devtools.postgres import DURABLE_SETTINGS, PostgresCluster, ensure_runtime_role

RATE = 500
PY_SPY_VENV = ROOT / ".data" / "py-spy"

#: Layers, innermost first: a sample goes to the first whose file is on its stack.
LAYERS = [
    # Writing the response to the socket is uvicorn's, whichever layer's send called it.
    (
        "uvicorn HTTP protocol and socket writes",
        ["uvicorn/", "web/http_protocol.py", "web/coalescing.py", "httptools"],
    ),
    ("access log", ["logging/__init__", "todo_server/logs.py"]),
    ("SQL round trip (executor, psycopg)", ["storage/row_security.py", "psycopg/"]),
    ("pool checkout and return", ["psycopg_pool"]),
    ("per-user connection slot", ["storage/user_slots.py"]),
    (
        "query string parsing and checks",
        ["tasks/list_query.py", "tasks/validation.py", "datastructures.py", "urllib/parse"],
    ),
    ("body reading and checks", ["web/bodies.py", "json/"]),
    ("cursor codec", ["tasks/page_tokens.py"]),
    ("response building", ["starlette/responses.py"]),
    ("authentication", ["todo_server/auth/", "jwt/"]),
    ("CORS middleware", ["web/cors.py"]),
    ("routing", ["starlette/routing.py"]),
    (
        "Starlette exception middleware",
        [
            "middleware/exceptions.py",
            "middleware/errors.py",
            "_exception_handler.py",
            "starlette/_utils.py",
        ],
    ),
    ("request middleware (ids, headers, body limit, errors)", ["todo_server/web/middleware.py"]),
    (
        "handler code",
        [
            "todo_server/tasks/",
            "todo_server/storage/db.py",
        ],
    ),
    ("Starlette app and request objects", ["starlette/"]),
]
#: Matched only when no layer above is on the stack.
OUTER = [
    ("asyncio event loop", ["asyncio/", "selectors.py"]),
]


def py_spy() -> Path:
    binary = PY_SPY_VENV / "bin" / "py-spy"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PY_SPY_VENV)], check=True)
        subprocess.run([str(PY_SPY_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return binary


def layer_of(stack: str) -> str:
    frames = stack.split(";")
    if any("todo_server/logs.py" in frame for frame in frames):
        return "access log"  # the loop's append and all of the writer thread (its json too)
    for table in (LAYERS, OUTER):
        for frame in reversed(frames):
            for name, files in table:
                if any(part in frame for part in files):
                    return name
    return "other"


def budget(samples: Path, requests: int) -> tuple[float, dict[str, float]]:
    """Microseconds of Python per request, in all and per layer."""
    counts: dict[str, int] = {}
    for line in samples.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[layer_of(stack)] = counts.get(layer_of(stack), 0) + int(n)
    total = sum(counts.values())
    per_request = total / RATE / requests * 1e6
    return per_request, {name: n / total * per_request for name, n in counts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="list,create,get")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--users", type=int, default=300)
    args = parser.parse_args()
    spy = py_spy()
    work = Path(tempfile.mkdtemp(prefix="todo-profile-"))
    cluster = PostgresCluster(settings=DURABLE_SETTINGS)
    cluster.start()
    results = {}
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        ensure_runtime_role(cluster.url())
        data = work / "data.lua"
        write_lua_data(seed(url, args.users, 50), data)
        service = start_service(url, 1, work / "service.log")
        try:
            pid = service.worker_pids()[0]
            for scenario in args.scenarios.split(","):
                wrk(service.url, scenario, 64, 3, data)  # warm-up
                out = work / f"{scenario}.txt"
                recorder = subprocess.Popen(
                    [
                        str(spy),
                        "record",
                        "-p",
                        str(pid),
                        "-d",
                        str(round(args.seconds)),
                        "-r",
                        str(RATE),
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(0.5)
                load = wrk(service.url, scenario, 64, args.seconds + 1, data)
                recorder.wait()
                requests = round(load["rps"] * round(args.seconds))
                results[scenario] = (load["rps"], *budget(out, requests))
        finally:
            service.stop()
    finally:
        cluster.remove()

    names = [name for name, _ in LAYERS + OUTER] + ["other"]
    scenarios = list(results)
    print("| layer | " + " | ".join(f"{s} us" for s in scenarios) + " |")
    print("|---|" + "---|" * len(scenarios))
    for name in names:
        cells = [f"{results[s][2].get(name, 0):.0f}" for s in scenarios]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        "| **all Python, per request** | "
        + " | ".join(f"**{results[s][1]:.0f}**" for s in scenarios)
        + " |"
    )
    print("| (throughput, req/s) | " + " | ".join(f"{results[s][0]:.0f}" for s in scenarios) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
