"""The benchmark harness still runs end to end (a 2-second smoke; numbers are not judged here)."""

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
