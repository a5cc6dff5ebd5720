"""Authentication end to end: real server processes, a real JWKS endpoint, one database."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from devtools.liveserver import LiveServer
from tests.support.database import settings_env
from tests.support.signing import SigningKey, bearer, frontend_token
from tests.support.timekeeping import wait_until

PASSWORD = "correct horse battery"


def test_all_three_token_sources_and_key_rotation(database_url, db, jwks):
    env = settings_env(
        database_url,
        JWT_JWKS_URL=jwks.url,
        JWT_ALGORITHMS="EdDSA,RS256,HS256",
        JWT_FRONTEND_HS256="on",
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
            token = key.sign(jwks.claims("ba-user", email="ba@x.io", name="Ba"))
            me = http.get("/auth/me", headers=bearer(token))
            assert me.json() == {"id": "ba-user", "email": "ba@x.io", "name": "Ba"}
        assert jwks.fetches == 1

        # The frontend rotates its key: the new kid is fetched and accepted at once.
        rotated = SigningKey.ed25519("ed-2")
        jwks.keys = [rotated]
        me = http.get("/auth/me", headers=bearer(rotated.sign(jwks.claims("ba-user"))))
        assert me.status_code == 200
        assert jwks.fetches == 2


def test_unknown_kid_flood_is_not_a_fetch_flood(database_url, db, jwks):
    env = settings_env(database_url, JWT_JWKS_URL=jwks.url, JWT_ALGORITHMS="EdDSA")
    ed = jwks.keys[0]
    with LiveServer(env) as server, httpx2.Client(base_url=server.base_url) as http:
        assert http.get("/auth/me", headers=bearer(ed.sign(jwks.claims()))).status_code == 200
        for _ in range(100):
            token = ed.sign(jwks.claims(), kid=uuid.uuid4().hex)
            r = http.get("/auth/me", headers=bearer(token))
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == (
                'Bearer error="invalid_token", error_description="unknown key"'
            )
    assert jwks.fetches == 2  # start-up, then the first made-up kid; then the cooldown


@pytest.mark.slow
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


def _post_all(requests: list[tuple[str, dict]]) -> list[httpx2.Response]:
    """POST every (url, json) at once, from as many threads, released together."""
    barrier = threading.Barrier(len(requests))

    def post(url: str, body: dict) -> httpx2.Response:
        with httpx2.Client(timeout=60) as http:
            barrier.wait()
            return http.post(url, json=body)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda item: post(*item), requests))


@pytest.mark.slow
def test_concurrent_wrong_passwords_check_at_most_the_limit_across_processes(database_url, db):
    env = settings_env(database_url, LOGIN_MAX_FAILURES="5")
    with LiveServer(env) as one, LiveServer(env) as two:
        urls = [one.base_url, two.base_url]
        r = httpx2.post(
            urls[0] + "/auth/register", json={"email": "c@example.com", "password": PASSWORD}
        )
        assert r.status_code == 201
        wrong = {"email": "c@example.com", "password": "wrong password"}
        responses = _post_all([(urls[n % 2] + "/auth/login", wrong) for n in range(30)])
        statuses = sorted(r.status_code for r in responses)
        # Exactly five passwords were checked; the other 25 were refused before hashing.
        assert statuses == [401] * 5 + [429] * 25
        for url in urls:
            right = {"email": "c@example.com", "password": PASSWORD}
            assert httpx2.post(url + "/auth/login", json=right).status_code == 429
    failures = db.execute(
        "SELECT count(*) FROM login_failures WHERE scope = 'email' AND key = 'c@example.com'"
    ).fetchone()[0]
    assert failures == 5


@pytest.mark.slow
def test_forwarded_for_is_believed_only_from_trusted_proxies(database_url, db):
    def failures_with_rotating_forwarded_for(server: LiveServer) -> list[int]:
        statuses = []
        with httpx2.Client(base_url=server.base_url) as http:
            for n in range(4):
                r = http.post(
                    "/auth/login",
                    json={"email": f"x{n}@example.com", "password": "wrong password"},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                )
                statuses.append(r.status_code)
        return statuses

    env = settings_env(database_url, LOGIN_MAX_FAILURES_PER_IP="3")
    with LiveServer(env) as server:
        assert failures_with_rotating_forwarded_for(server) == [401, 401, 401, 429]
    db.execute("DELETE FROM login_failures")
    trusting = settings_env(
        database_url, LOGIN_MAX_FAILURES_PER_IP="3", TRUSTED_PROXIES="127.0.0.1"
    )
    with LiveServer(trusting) as server:
        assert failures_with_rotating_forwarded_for(server) == [401, 401, 401, 401]
    addresses = {row[0] for row in db.execute("SELECT key FROM login_failures WHERE scope = 'ip'")}
    assert addresses == {f"203.0.113.{n}" for n in range(4)}


@pytest.mark.timing
def test_a_login_is_not_queued_behind_a_flood_of_registrations(database_url, db):
    env = settings_env(database_url, REGISTRATIONS_PER_IP="100")
    with LiveServer(env) as server:
        url = server.base_url
        httpx2.post(url + "/auth/register", json={"email": "l@example.com", "password": PASSWORD})
        finished: dict[str, float] = {}

        def register(n: int) -> None:
            body = {"email": f"flood{n}@example.com", "password": PASSWORD}
            assert httpx2.post(url + "/auth/register", json=body, timeout=60).status_code == 201
            finished[f"register {n}"] = time.monotonic()

        def login() -> None:
            body = {"email": "l@example.com", "password": PASSWORD}
            assert httpx2.post(url + "/auth/login", json=body, timeout=60).status_code == 200
            finished["login"] = time.monotonic()

        threads = [threading.Thread(target=register, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        # One registration hashed: the other eleven, sent with it, are queued for slots now.
        wait_until(lambda: finished, "a registration to finish")
        threads.append(threading.Thread(target=login))
        threads[-1].start()
        for thread in threads:
            thread.join()
    # Twelve registrations in two slots take six hashing rounds; the login needs one.
    order = sorted(finished, key=finished.__getitem__)
    assert order.index("login") < len(order) - 4, order
