"""Better Auth in production: issuer/audience as it writes them, key separation, reasons.

A real Better Auth (npm, jwt + bearer plugins, PostgreSQL adapter) signs the
tokens. The service must take its base URL however ops copy it (trailing
slash, a path), must never take one of Better Auth's own HS256 tokens (the
session-data cookie cache, e-mail verification) for an access token, even
re-signed with a ``sub`` added, and says why it refuses a token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx2
import jwt
import pytest

from devtools.liveserver import LiveServer
from tests.support.better_auth import BetterAuthServer
from tests.support.database import DatabaseServer, settings_env
from tests.support.signing import TEST_SECRET, bearer

SESSION_DATA_COOKIE = "better-auth.session_data"


@pytest.fixture
def better_auth(pg_server: DatabaseServer) -> Iterator[BetterAuthServer]:
    """Better Auth at a base URL with a path, its cookie cache as JWTs."""
    ba = BetterAuthServer(
        pg_server.create_database("better_auth_prod"),
        TEST_SECRET,
        jwt_algorithm="EdDSA",
        base_path="/myapp/",
        cookie_cache="jwt",
    )
    yield ba
    ba.stop()


@pytest.fixture
def serve(database_url, db) -> Iterator:
    """Start the service with extra settings, on emptied tables; stopped at the end.

    Emptied because registrations are throttled per client address: the rows other
    tests left for 127.0.0.1 must not decide whether this module may register.
    """
    servers: list[LiveServer] = []
    clients: list[httpx2.Client] = []

    def start(**settings: str) -> tuple[LiveServer, httpx2.Client]:
        server = LiveServer(settings_env(database_url, **settings)).start()
        servers.append(server)
        clients.append(httpx2.Client(base_url=server.base_url, timeout=10))
        return server, clients[-1]

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def challenge(r: httpx2.Response) -> str:
    assert r.status_code == 401, r.text
    value = r.headers["www-authenticate"]
    prefix = 'Bearer error="invalid_token", error_description="'
    assert value.startswith(prefix), value
    why = value[len(prefix) : -1]
    assert r.json()["message"] in (f"Invalid token: {why}", "Token has expired")
    return why


def test_only_the_jwks_url_is_needed_iss_and_aud_default_to_its_origin(better_auth, serve):
    assert better_auth.jwks_url == better_auth.url + "/myapp/jwks"
    _, http = serve(JWT_JWKS_URL=better_auth.jwks_url)
    user = better_auth.sign_up("Ada")
    token = better_auth.jwt(user.token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == claims["aud"] == better_auth.url  # the origin, not the base URL
    r = http.get("/auth/me", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == user.user_id


def test_a_base_url_copied_with_its_path_and_slash_counts_by_its_origin(better_auth, serve):
    copied = better_auth.url.upper().replace("HTTP://", "http://") + "/myapp/"
    server, http = serve(
        JWT_JWKS_URL=better_auth.jwks_url, JWT_JWKS_ISSUER=copied, JWT_JWKS_AUDIENCE=copied
    )
    token = better_auth.jwt(better_auth.sign_up("Bo").token)
    assert http.get("/auth/me", headers=bearer(token)).status_code == 200
    # Another origin is still refused, and says which check failed.
    _, other = serve(
        JWT_JWKS_URL=better_auth.jwks_url, JWT_JWKS_ISSUER="https://app.example.com/myapp/"
    )
    assert challenge(other.get("/auth/me", headers=bearer(token))) == "wrong issuer"
    http.close()
    other.close()
    log = server.stop()
    assert f"is taken as its origin {better_auth.url!r}" in log


def resigned_with_a_sub(token: str, sub: str) -> str:
    """The token's own claims plus ``sub``, signed as Better Auth signs them: HS256, the secret."""
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"], options={"verify_aud": False})
    return jwt.encode({**claims, "sub": sub}, TEST_SECRET, algorithm="HS256")


def better_auths_own_tokens(ba: BetterAuthServer) -> tuple[str, str, str]:
    user = ba.sign_up("Cy")
    signed_in = ba.sign_in(user.email)
    cache = ba.cookie(signed_in, SESSION_DATA_COOKIE)
    verification = ba.verification_token(user.email)
    for token in (cache, verification):  # what they are: HS256, the shared secret
        assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert set(json.loads(jwt.utils.base64url_decode(cache.split(".")[1]))) >= {"session", "user"}
    assert "email" in jwt.decode(verification, TEST_SECRET, algorithms=["HS256"])
    return user.user_id, cache, verification


@pytest.mark.parametrize(
    ("frontend_hs256", "why"),
    [
        (None, "HS256 tokens from the frontend are not accepted"),  # the default with a JWKS
        ("on", "not an access token"),  # frontend tokens on: refused by their claims
    ],
)
def test_better_auths_own_hs256_tokens_are_never_access_tokens(
    better_auth, serve, frontend_hs256, why
):
    settings = {"JWT_JWKS_URL": better_auth.jwks_url}
    if frontend_hs256:
        settings["JWT_FRONTEND_HS256"] = frontend_hs256
    _, http = serve(**settings)
    user_id, cache, verification = better_auths_own_tokens(better_auth)
    for token in (cache, verification):
        r = http.get("/auth/me", headers=bearer(resigned_with_a_sub(token, user_id)))
        assert challenge(r) == why
        r = http.get("/auth/me", headers=bearer(token))
        assert challenge(r) in (why, "missing claim")
    http.close()


def test_our_own_tokens_work_whatever_the_frontend_mode(better_auth, serve):
    _, http = serve(JWT_JWKS_URL=better_auth.jwks_url)  # frontend HS256 off
    account = {"email": f"own-{uuid.uuid4().hex[:8]}@example.com", "password": "a long enough pw"}
    token = http.post("/auth/register", json=account).json()["access_token"]
    assert http.get("/auth/me", headers=bearer(token)).status_code == 200
    # A token minted with the shared secret by a frontend is not one of ours.
    minted = jwt.encode({"sub": "x", "exp": 4102444800}, TEST_SECRET, algorithm="HS256")
    why = challenge(http.get("/auth/me", headers=bearer(minted)))
    assert why == "HS256 tokens from the frontend are not accepted"
    http.close()


def test_each_refusal_says_why_without_echoing_the_token(better_auth, serve):
    _, http = serve(JWT_JWKS_URL=better_auth.jwks_url, JWT_JWKS_AUDIENCE="todo-api")
    rs_server, rs_only = serve(JWT_JWKS_URL=better_auth.jwks_url, JWT_ALGORITHMS="RS256")
    token = better_auth.jwt(better_auth.sign_up("Di").token)
    head, body, signature = token.split(".")
    odd_kid = jwt.utils.base64url_encode(b'{"alg":"EdDSA","kid":"made-up"}').decode()
    # One character changed in the middle: the last ones also carry base64 padding bits,
    # and changing those can make the signature undecodable rather than wrong.
    middle = len(signature) // 2
    flipped = (
        signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    )
    cases = [
        (http, token, "wrong audience"),
        (rs_only, token, "algorithm not allowed"),
        (http, f"{odd_kid}.{body}.{signature}", "unknown key"),
        (http, f"{head}.{body}.{flipped}", "bad signature"),
        (http, "a.b.c", "not a JWT"),
        (http, "not-a-token-at-all", "not a JWT"),
    ]
    for client, presented, why in cases:
        r = client.get("/auth/me", headers=bearer(presented))
        assert challenge(r) == why, presented
        assert presented not in r.text and presented not in r.headers["www-authenticate"]
    http.close()
    rs_only.close()
    # The cause, for the operator: the frontend signs with EdDSA, the service expects RS256.
    log = rs_server.stop()
    assert (
        "JWT_ALGORITHMS names RS256, which no key of the JWKS signs with (it offers EdDSA)" in log
    )
