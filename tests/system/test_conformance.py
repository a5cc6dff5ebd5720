"""Schemathesis against a real server: no 5xx, responses match the document, bad input is refused.

One user fuzzes every operation with a real token; a second user's tasks sit
in the same database and must come out of it untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from devtools.liveserver import LiveServer
from tests.support.database import settings_env
from tests.support.signing import bearer, frontend_token

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# positive_data_acceptance is left out on purpose: the contract has rules a schema
# cannot state (If-Match must name the current version, updated_since excludes
# filters, a random task id is a 404), so schema-valid requests may rightly get
# 412 or 422. Everything else schemathesis knows is checked.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
]


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["standard", "compatible"])
def test_schemathesis_finds_nothing(database_url, db, tmp_path, dialect):
    """In each dialect, the document the server serves is the one it keeps to."""
    env = settings_env(database_url, DB_POOL_MAX="8", API_DIALECT=dialect)
    with LiveServer(env) as server, httpx2.Client(base_url=server.base_url) as http:
        bystander = bearer(frontend_token("bystander", email="b@example.com"))
        for i in range(3):
            assert (
                http.post("/api/tasks", json={"title": f"b{i}"}, headers=bystander).status_code
                == 201
            )
        before = http.get("/api/tasks", headers=bystander).json()

        token = frontend_token("fuzzer", email="fuzzer@example.com")
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                server.base_url + "/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                os.environ.get("SCHEMATHESIS_EXAMPLES", "12"),
                "--seed",
                "20261123",
                "--workers",
                "2",
                "--generation-database",
                "none",
                "--request-timeout",
                "10",
                "--no-color",
                "--warnings",
                "off",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        summary = result.stdout[-6000:]
        assert result.returncode == 0, summary
        assert " passed" in summary or "No issues found" in summary, summary

        assert http.get("/api/tasks", headers=bystander).json() == before
    assert db.execute("SELECT count(*) FROM tasks WHERE user_id = 'bystander'").fetchone()[0] == 3
