"""The suite's fixtures live in ``tests/support/`` and are loaded here as plugins.

Tests mirror the package: ``tests/web/``, ``tests/auth/``, ``tests/tasks/``,
``tests/storage/``, ``tests/config/``, with the composition root's tests at the
top. ``tests/system/`` holds the whole-system tests (the wheel, the container,
PgBouncer topologies, Better Auth from npm, a browser): every one of them is
marked ``slow``, so ``pytest -m "not slow"`` is the fast tier.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Dependencies first: a plugin imported by another before its own turn is not rewritten.
pytest_plugins = (
    "tests.support.signing",
    "tests.support.task_users",
    "tests.support.database",
    "tests.support.pgbouncer",
)

SYSTEM = Path(__file__).parent / "system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whole-system tests are slow by where they live."""
    for item in items:
        if SYSTEM in item.path.parents:
            item.add_marker(pytest.mark.slow)
