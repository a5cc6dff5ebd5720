"""GET /health: no authentication, reports the database."""

from __future__ import annotations

from datetime import datetime

from tests.support.signing import bearer
from tests.support.timekeeping import wait_until


def test_health_reports_database_ok(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "status": "ok",
        "timestamp": body["timestamp"],
        "database": "ok",
        "jwks": {"state": "not_configured", "age_seconds": None},
    }
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None


# --- the JWKS's state: reported, never failing liveness -----------------------------


def jwks_health(client, until: str) -> dict:
    """/health's jwks part once it reaches ``until`` (the start-up fetch runs in the background)."""

    def reached() -> dict | None:
        r = client.get("/health")
        assert r.status_code == 200, r.text
        return r.json()["jwks"] if r.json()["jwks"]["state"] == until else None

    return wait_until(reached, f"/health to report the JWKS {until}")


def test_health_reports_a_fetched_jwks_and_its_age(make_client, jwks):
    client = make_client(JWT_JWKS_URL=jwks.url, JWT_ALGORITHMS="EdDSA")
    state = jwks_health(client, "ok")
    assert state["state"] == "ok"
    assert 0 <= state["age_seconds"] < 5
    assert jwks.fetches == 1  # fetched at start-up, before any token arrived


def test_an_unreachable_jwks_is_reported_and_health_stays_200(make_client):
    client = make_client(JWT_JWKS_URL="http://127.0.0.1:9/jwks", JWT_ALGORITHMS="EdDSA")
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["jwks"] == {"state": "unavailable", "age_seconds": None}


def test_a_jwks_that_went_away_after_a_fetch_is_stale(make_client, jwks):
    client = make_client(JWT_JWKS_URL=jwks.url, JWT_ALGORITHMS="EdDSA")
    assert jwks_health(client, "ok")["state"] == "ok"
    jwks.close()
    token = jwks.keys[0].sign(jwks.claims(), kid="rotated-while-down")
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401  # refetch failed
    state = jwks_health(client, "stale")
    assert state["state"] == "stale"
    assert state["age_seconds"] >= 0
    r = client.get("/auth/me", headers=bearer(jwks.keys[0].sign(jwks.claims())))
    assert r.status_code == 200  # the keys it had still work
