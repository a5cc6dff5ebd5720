"""What the metrics cost a request: the middleware path timed with them on and off.

``python -m bench.metrics_cost`` runs ``ServiceMiddleware`` in-process around an
app that answers at once, alternating rounds with the metrics' per-request calls
(``request_started``, ``request_done``) replaced by no-ops and restored, and
prints the median time per request of each and the difference; then the same
in a child process with ``PROMETHEUS_MULTIPROC_DIR`` set, as each worker of
``serve`` with WORKERS > 1 runs (values written to shared files).
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from todo_server import metrics
from todo_server.web.middleware import ServiceMiddleware

REQUESTS_PER_ROUND = 5_000
ROUNDS = 31


class Route:
    path = "/api/tasks/{task_id}"


ROUTE = Route()


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = ROUTE
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def send(message: dict[str, Any]) -> None:
    pass


async def one_round(middleware: ServiceMiddleware) -> float:
    """Seconds per request over one round."""
    start = time.perf_counter()
    for _ in range(REQUESTS_PER_ROUND):
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/api/tasks/0b6f6a4e",
            "headers": [(b"x-request-id", b"bench")],
        }
        await middleware(scope, receive, send)
    return (time.perf_counter() - start) / REQUESTS_PER_ROUND


def no_op(*args: object) -> None:
    pass


async def measure() -> tuple[float, float]:
    middleware = ServiceMiddleware(answer)
    started, done = metrics.request_started, metrics.request_done
    on: list[float] = []
    off: list[float] = []
    await one_round(middleware)  # warm-up
    for _ in range(ROUNDS):
        metrics.request_started, metrics.request_done = no_op, no_op  # type: ignore[assignment]
        off.append(await one_round(middleware))
        metrics.request_started, metrics.request_done = started, done
        on.append(await one_round(middleware))
    return statistics.median(on), statistics.median(off)


def report(mode: str) -> None:
    on, off = asyncio.run(measure())
    print(
        f"{mode}: on {on * 1e6:.2f} us, off {off * 1e6:.2f} us per request;"
        f" metrics {(on - off) * 1e6:.2f} us"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        report("multiprocess (WORKERS > 1)")
        return
    print(f"{platform.python_version()}, {os.cpu_count()} cores, {platform.processor() or '?'}")
    report("one process")
    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        subprocess.run([sys.executable, "-m", "bench.metrics_cost", "--child"], env=env, check=True)


if __name__ == "__main__":
    main()
