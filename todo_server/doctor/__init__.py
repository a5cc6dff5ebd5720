"""``todo-server doctor``: a deployment's configuration checked against its database.

Each check gives one finding: ``ok``, ``warn`` or ``fail``, what was found and
the fix. Nothing is changed anywhere: the checks read settings, the catalog and
the JWKS, and the database connection only runs queries.

The exit status is 0 when every check is ok, 1 when some warn, 2 when one fails
(docs/deploy.md: Checking a deployment).

The checks live by what they read: ``configuration`` (the settings alone),
``database`` (the service's database, as its role) and ``frontend`` (the JWKS
and Better Auth's session store); ``findings`` is what each returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict

from todo_server.config import (
    ConfigError,
    DatabaseSettings,
    Settings,
    load_database_settings,
    load_settings,
)
from todo_server.doctor.configuration import settings_findings
from todo_server.doctor.database import database_findings
from todo_server.doctor.findings import FAIL, OK, WARN, Finding, exit_status
from todo_server.doctor.frontend import jwks_findings, session_store_findings

__all__ = ["FAIL", "OK", "WARN", "Finding", "diagnose", "exit_status", "run"]

#: Which variable a ConfigError names decides which check it fails.
CHECK_OF_VARIABLE = {"BETTER_AUTH_SECRET": "secret", "ALLOWED_ORIGINS": "cors"}


def run(as_json: bool, environ: Mapping[str, str] | None = None) -> int:
    """Print the findings, as lines or a JSON list; return the exit status."""
    findings = diagnose(environ)
    if as_json:
        print(json.dumps([asdict(finding) for finding in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
    return exit_status(findings)


def diagnose(
    environ: Mapping[str, str] | None = None, *, clock: Callable[[], float] = time.time
) -> list[Finding]:
    """Every check's finding, in order; ``clock`` is this host's (a test moves it)."""
    findings: list[Finding] = []
    settings: Settings | None = None
    database: DatabaseSettings | None = None
    try:
        settings = load_settings(environ)
        database = settings.database
        notes = "; ".join(settings.notes)
        findings.append(Finding("settings", WARN if notes else OK, notes or "all settings parse"))
    except ConfigError as exc:
        check = CHECK_OF_VARIABLE.get(exc.variable, "settings")
        if exc.variable == "JWT_JWKS_URL" or "production" in str(exc):
            check = "production"
        findings.append(
            Finding(check, FAIL, str(exc), f"fix {exc.variable} (docs/configuration.md)")
        )
        try:
            database = load_database_settings(environ)
        except ConfigError:
            database = None
    if settings is not None:
        findings += settings_findings(settings)
    if database is not None:
        findings += database_findings(database, clock)
    if settings is not None and settings.jwks_url is not None:
        findings += jwks_findings(settings)
    if settings is not None and settings.session_store is not None:
        findings += session_store_findings(settings.session_store)
    return findings
