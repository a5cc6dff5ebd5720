"""GET /health: no authentication, reports the database."""

from __future__ import annotations

from datetime import datetime


def test_health_reports_database_ok(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body == {"status": "ok", "timestamp": body["timestamp"], "database": "ok"}
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
