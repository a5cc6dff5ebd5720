"""./run.sh on a fresh checkout: set-up that is safe to start twice at once."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fresh_checkout(target: Path) -> Path:
    """The files a user clones, without .venv or .data."""
    target.mkdir()
    for name in ("run.sh", "pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    for name in ("todo_server", "sql", "devtools"):
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.mark.slow
def test_two_first_runs_at_once_both_set_up(tmp_path):
    project = fresh_checkout(tmp_path / "project")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BETTER_AUTH_SECRET", "VIRTUAL_ENV")
    }
    runs = [
        subprocess.Popen(
            ["./run.sh", "setup"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
    # One of them waited for the other, then used what it made.
    assert sum("waiting for another ./run.sh" in output for output in outputs) == 1, outputs
    assert sum("installing the project into .venv" in output for output in outputs) == 1, outputs
    assert sum("creating a private PostgreSQL cluster" in output for output in outputs) == 1
    assert (project / ".data" / "postgres" / "PG_VERSION").exists()
