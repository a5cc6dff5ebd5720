"""Better Auth JWT-plugin tokens from a real Better Auth, checked by a real server process.

Better Auth (the npm package, jwt and bearer plugins) signs the tokens and
serves its JWKS; the tests rotate keys the way it does (the plugin generates a
new key and signs with the newest) and withdraw one the way an operator does
(a DELETE from its ``jwks`` table), then watch the service follow within the
same second, never answering 500.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx2
import jwt
import psycopg
import pytest
from jwt.utils import base64url_encode

from devtools.liveserver import LiveServer, free_port
from tests.support.better_auth import BetterAuthServer
from tests.support.database import DatabaseServer, settings_env
from tests.support.signing import TEST_SECRET, bearer


@pytest.fixture
def better_auth_db(pg_server: DatabaseServer) -> str:
    """A database of Better Auth's own, fresh per test: its keys are the test's."""
    return pg_server.create_database("better_auth_jwt")


def service_env(database_url: str, better_auth_origin: str, jwks_url: str, algorithm: str):
    """The service told where the JWKS is, and the origin Better Auth writes in iss and aud."""
    return settings_env(
        database_url,
        JWT_JWKS_URL=jwks_url,
        JWT_JWKS_ISSUER=better_auth_origin,
        JWT_JWKS_AUDIENCE=better_auth_origin,
        JWT_ALGORITHMS=f"{algorithm},HS256",
    )


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def me(http: httpx2.Client, token: str) -> httpx2.Response:
    r = http.get("/auth/me", headers=bearer(token))
    assert r.status_code != 500, r.text
    return r


@pytest.fixture
def started() -> Iterator[list]:
    """Servers to stop at the end, whatever happens."""
    servers: list = []
    yield servers
    for server in reversed(servers):
        server.stop()


@pytest.mark.parametrize(
    ("algorithm", "base_path"),
    [("EdDSA", "/myapp/"), ("RS256", None), ("ES256", "/myapp/api/auth/")],
)
def test_a_rotated_key_is_followed_within_seconds_of_a_fetch_without_a_401(
    database_url, better_auth_db, started, algorithm, base_path
):
    ba = BetterAuthServer(better_auth_db, TEST_SECRET, jwt_algorithm=algorithm, base_path=base_path)
    started.append(ba)
    if base_path:  # a base URL with a trailing slash and a path; iss/aud are its origin
        assert ba.jwks_url == ba.url + base_path.rstrip("/") + "/jwks"
    env = service_env(database_url, ba.url, ba.jwks_url, algorithm)
    server = LiveServer(env).start()
    started.append(server)
    http = httpx2.Client(base_url=server.base_url, timeout=10)
    user = ba.sign_up("Ada")

    first = ba.jwt(user.token)
    assert jwt.get_unverified_header(first)["alg"] == algorithm
    assert jwt.decode(first, options={"verify_signature": False})["iss"] == ba.url
    r = me(http, first)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": user.user_id, "email": user.email, "name": "Ada"}

    for _ in range(2):  # twice within a second or two, well inside the 30 s interval
        kid = ba.rotate_key()
        rotated = ba.jwt(user.token)
        assert kid_of(rotated) == kid
        r = me(http, rotated)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == user.user_id
    assert me(http, first).status_code == 200  # the old key is still listed, so still good
    http.close()


def test_a_deleted_key_is_refused_right_after_the_next_fetch(database_url, better_auth_db, started):
    ba = BetterAuthServer(better_auth_db, TEST_SECRET, jwt_algorithm="EdDSA")
    started.append(ba)
    server = LiveServer(service_env(database_url, ba.url, ba.jwks_url, "EdDSA")).start()
    started.append(server)
    http = httpx2.Client(base_url=server.base_url, timeout=10)
    user = ba.sign_up("Bob")
    old_token = ba.jwt(user.token)
    for _ in range(3):  # accepted, and remembered by the service
        assert me(http, old_token).status_code == 200

    # The operator rotates and withdraws the old key at once.
    new_kid = ba.rotate_key()
    with psycopg.connect(better_auth_db, autocommit=True) as conn:
        deleted = conn.execute("DELETE FROM jwks WHERE id = %s", (kid_of(old_token),))
        assert deleted.rowcount == 1
    new_token = ba.jwt(user.token)
    assert kid_of(new_token) == new_kid
    assert me(http, new_token).status_code == 200  # this request's fetch sees the old key gone
    r = me(http, old_token)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert me(http, new_token).status_code == 200
    http.close()
    log = server.stop()
    assert "no longer lists key(s) " + kid_of(old_token) in log


@pytest.mark.slow
@pytest.mark.timing
def test_a_service_started_before_better_auth_serves_within_seconds_of_it(
    database_url, better_auth_db, started
):
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    env = service_env(database_url, origin, origin + "/api/auth/jwks", "EdDSA")
    server = LiveServer(env).start()
    started.append(server)
    http = httpx2.Client(base_url=server.base_url, timeout=10)
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json()["jwks"] == {"state": "unavailable", "age_seconds": None}
    # The behaviour under test, not a wait for something: the frontend is late, so the
    # service has failed a few fetches and backed off (0.5, 1, 2 s) by the time it comes.
    time.sleep(3)

    ba = BetterAuthServer(better_auth_db, TEST_SECRET, jwt_algorithm="EdDSA", port=port)
    started.append(ba)
    token = ba.jwt(ba.sign_up("Cy").token)
    up = time.monotonic()  # Better Auth is up and serving its keys, at the latest now
    while (r := me(http, token)).status_code == 503:
        assert time.monotonic() - up < 8, "still 503 eight seconds after Better Auth came up"
        time.sleep(0.1)
    waited = time.monotonic() - up
    assert r.status_code == 200, r.text
    assert waited < 6.0  # the backoff is at most 5 s, well under the 30 s refresh interval
    health = http.get("/health").json()["jwks"]
    assert health["state"] == "ok"
    assert 0 <= health["age_seconds"] < 6

    # Better Auth goes away again: the keys it served still work, /health says stale, 200.
    ba.stop()
    header = f'{{"alg":"EdDSA","kid":"{uuid.uuid4().hex}"}}'.encode()
    unknown_kid = ".".join([base64url_encode(header).decode(), *token.split(".")[1:]])
    assert me(http, unknown_kid).status_code == 401  # its refetch fails
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["jwks"]["state"] == "stale"
    assert me(http, token).status_code == 200
    http.close()
    print(f"served {waited:.2f} s after Better Auth came up")
