"""The report: progress on stderr, the results table on stdout and in bench/results/.

Each figure is the median over the alternating repeats, and the ratio to the bare
ceiling is taken within each repeat, so the machine's drift between repeats
cancels out of it.
Each run writes ``<timestamp>.json`` (``smoke-<timestamp>.json`` for --smoke)
with every wrk run in it, and, when it is not a smoke, ``latest.md``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import SCENARIOS


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per workers, scenario and connections: medians, errors, ratio to bare."""
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
    """The results table, then the list beside the floor, the seed stack and pgbench."""
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
    """The machine the run measured on: cores, CPU model, Python, kernel."""
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


def publish(output: Path, meta: dict[str, Any], runs: list[dict[str, Any]]) -> Path:
    """Print the table and write the results; returns the JSON file written."""
    summary = summarize(runs)
    table = markdown(summary, meta)
    print(table)
    output.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    smoke = meta["config"]["smoke"]
    target = output / (f"smoke-{stamp}.json" if smoke else f"{stamp}.json")
    target.write_text(json.dumps({**meta, "summary": summary, "runs": runs}, indent=2) + "\n")
    if not smoke:
        (output / "latest.md").write_text(table)
    log(f"wrote {target}")
    return target
