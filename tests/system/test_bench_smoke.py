"""The benchmark harness still runs end to end (its smoke, 1-second runs; numbers not judged)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devtools.liveserver import ROOT


@pytest.mark.slow
def test_bench_harness_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| 1 | list | 8 |" in result.stdout
    assert "The seed stack (bench/seed_app.py) is not run in --smoke" in result.stdout
    [report] = tmp_path.glob("smoke-*.json")
    data = json.loads(report.read_text())
    scenarios = {row["scenario"]: row for row in data["summary"]}
    assert set(scenarios) == {"list", "create"}
    for row in scenarios.values():
        assert row["rps"] > 0
        assert row["errors"] == 0
        assert row["ratio_to_bare"] > 0
    assert data["pgbench_tps"] and data["pgbench_tps"][0] > 0
    assert data["peak_rss_mb"]["1"][0] > 0


def test_bench_report_states_the_list_as_a_multiple_of_the_seed_stack():
    # The seed peer needs its own virtualenv, too slow for the smoke: its report lines here.
    from bench.report import seed_lines

    def row(scenario, connections, rps):
        return {"workers": 1, "scenario": scenario, "connections": connections, "rps": rps}

    summary = [row("list", 64, 2000.0), row("list", 256, 1500.0)]
    summary += [row("seed", 64, 400.0), row("seed", 256, 0.0)]
    assert seed_lines(summary, smoke=False) == [
        "\nlist at 64 connections, 1 worker(s): 5.0× the seed stack"
        " (FastAPI + SQLModel + psycopg2, bench/seed_app.py, 400 req/s).",
        "\nlist at 256 connections, 1 worker(s): 1500 req/s; the seed stack answered no request"
        " (it stalls: pool connections held by sessions waiting to close, fastapi/fastapi#3205).",
    ]
    assert seed_lines(summary, smoke=True) == [
        "\nThe seed stack (bench/seed_app.py) is not run in --smoke: installing its"
        " virtualenv costs time. Run it with --scenarios list,seed."
    ]
