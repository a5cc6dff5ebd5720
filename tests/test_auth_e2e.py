"""Authentication end to end: real server processes, a real JWKS endpoint, one database."""

from __future__ import annotations

import time
import uuid

import httpx2
import pytest

from tests.conftest import settings_env
from tests.liveserver import LiveServer
from tests.tokens import JwksServer, SigningKey, bearer, claims, frontend_token

PASSWORD = "correct horse battery"


@pytest.fixture
def jwks():
    server = JwksServer([SigningKey.ed25519("ed-1"), SigningKey.rsa("rsa-1")])
    yield server
    server.close()


def test_all_three_token_sources_and_key_rotation(database_url, db, jwks):
    env = settings_env(
        database_url,
        JWT_JWKS_URL=jwks.url,
        JWT_ALGORITHMS="EdDSA,RS256,HS256",
        JWT_JWKS_REFRESH_INTERVAL="1",
    )
    with LiveServer(env) as server, httpx2.Client(base_url=server.base_url) as http:
        # 1. A local account's token.
        r = http.post("/auth/register", json={"email": "e2e@example.com", "password": PASSWORD})
        assert r.status_code == 201
        local_user = r.json()["user"]
        r = http.post("/auth/login", data={"username": "e2e@example.com", "password": PASSWORD})
        me = http.get("/auth/me", headers=bearer(r.json()["access_token"]))
        assert me.json() == local_user

        # 2. A token minted by a frontend with the shared secret.
        me = http.get("/auth/me", headers=bearer(frontend_token("next-user-7", email="n@x.io")))
        assert me.json() == {"id": "next-user-7", "email": "n@x.io", "name": None}

        # 3. Better Auth JWT-plugin tokens, Ed25519 and RS256, from the JWKS.
        for key in jwks.keys:
            token = key.sign(claims("ba-user", email="ba@x.io", name="Ba"))
            me = http.get("/auth/me", headers=bearer(token))
            assert me.json() == {"id": "ba-user", "email": "ba@x.io", "name": "Ba"}
        assert jwks.fetches == 1

        # The frontend rotates its key: the new kid is fetched and accepted.
        rotated = SigningKey.ed25519("ed-2")
        jwks.keys = [rotated]
        time.sleep(1.05)
        me = http.get("/auth/me", headers=bearer(rotated.sign(claims("ba-user"))))
        assert me.status_code == 200
        assert jwks.fetches == 2


def test_unknown_kid_flood_is_not_a_fetch_flood(database_url, db, jwks):
    env = settings_env(database_url, JWT_JWKS_URL=jwks.url, JWT_ALGORITHMS="EdDSA")
    ed = jwks.keys[0]
    with LiveServer(env) as server, httpx2.Client(base_url=server.base_url) as http:
        assert http.get("/auth/me", headers=bearer(ed.sign(claims()))).status_code == 200
        for _ in range(100):
            token = ed.sign(claims(), kid=uuid.uuid4().hex)
            r = http.get("/auth/me", headers=bearer(token))
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert jwks.fetches == 1


def test_login_throttling_is_shared_by_two_server_processes(database_url, db):
    env = settings_env(database_url)
    with LiveServer(env) as one, LiveServer(env) as two:
        urls = [one.base_url, two.base_url]
        r = httpx2.post(
            urls[0] + "/auth/register", json={"email": "t@example.com", "password": PASSWORD}
        )
        assert r.status_code == 201
        for attempt in range(10):
            r = httpx2.post(
                urls[attempt % 2] + "/auth/login",
                json={"email": "t@example.com", "password": "wrong password"},
            )
            assert r.status_code == 401
        for url in urls:
            r = httpx2.post(
                url + "/auth/login", json={"email": "t@example.com", "password": PASSWORD}
            )
            assert r.status_code == 429
            assert int(r.headers["retry-after"]) > 0
