"""Which bearer tokens open the API, and the exact 401 for every one that does not."""

from __future__ import annotations

import logging
import time
import uuid
import warnings

import jwt
import pytest

from tests.support.assertions import assert_401
from tests.support.signing import TEST_SECRET, SigningKey, bearer, claims, frontend_token, hs256
from todo_server.auth.tokens import own_signing_key


@pytest.fixture
def jwks_client(make_client, jwks):
    # iss/aud are the subject of their own tests below; here, the keys.
    return make_client(
        JWT_JWKS_URL=jwks.url,
        JWT_ALGORITHMS="EdDSA,RS256,HS256",
        JWT_FRONTEND_HS256="on",
        JWT_JWKS_ISSUER="any",
        JWT_JWKS_AUDIENCE="any",
    )


# --- tokens that work ---------------------------------------------------------


def test_frontend_shared_secret_token_opens_the_api(client):
    token = frontend_token("user_abc", email="a@example.com", name="Ada")
    r = client.get("/auth/me", headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == {"id": "user_abc", "email": "a@example.com", "name": "Ada"}


def test_minimal_shared_secret_token_needs_only_sub_and_exp(client):
    token = hs256({"sub": "opaque-id-42", "exp": int(time.time()) + 60})
    r = client.get("/auth/me", headers=bearer(token))
    assert r.json() == {"id": "opaque-id-42", "email": None, "name": None}


def test_better_auth_eddsa_and_rs256_tokens_verify_against_the_jwks(jwks_client, jwks):
    ed, rsa_key = jwks.keys
    payload = claims("ba_user_1", email="b@example.com", name="Bea", emailVerified=True)
    for key in (ed, rsa_key):
        r = jwks_client.get("/auth/me", headers=bearer(key.sign(payload)))
        assert r.status_code == 200, r.text
        assert r.json() == {"id": "ba_user_1", "email": "b@example.com", "name": "Bea"}


def test_expiry_has_thirty_seconds_leeway(client):
    token = hs256({"sub": "u", "exp": int(time.time()) - 10})
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200


def test_subject_of_255_characters_is_accepted(client):
    token = frontend_token("s" * 255)
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200


def test_issuer_and_audience_are_checked_when_configured(make_client):
    client = make_client(
        JWT_ISSUER="https://app.example.com", JWT_AUDIENCE="https://app.example.com"
    )
    good = frontend_token(iss="https://app.example.com", aud="https://app.example.com")
    assert client.get("/auth/me", headers=bearer(good)).status_code == 200
    for bad in (
        frontend_token(iss="https://evil.example.com", aud="https://app.example.com"),
        frontend_token(iss="https://app.example.com", aud="https://evil.example.com"),
        frontend_token(aud="https://app.example.com"),
        frontend_token(iss="https://app.example.com"),
    ):
        assert_401(client.get("/auth/me", headers=bearer(bad)))


APP = "https://app.example.com"


def test_one_server_serves_a_jwks_frontend_and_an_hs256_frontend(make_client, jwks):
    """The JWT plugin's tokens carry iss/aud; a minting frontend's carry none."""
    client = make_client(
        JWT_JWKS_URL=jwks.url,
        JWT_ALGORITHMS="EdDSA,HS256",
        JWT_FRONTEND_HS256="on",
        JWT_JWKS_ISSUER=APP,
        JWT_JWKS_AUDIENCE=APP,
    )
    ed = jwks.keys[0]
    plugin_token = ed.sign(claims("ba_user", iss=APP, aud=APP))
    r = client.get("/auth/me", headers=bearer(plugin_token))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "ba_user"
    r = client.get("/auth/me", headers=bearer(frontend_token("minted_user")))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "minted_user"
    # The JWKS source keeps its own checks.
    for bad, why in (
        (claims("x"), "missing claim"),
        (claims("x", iss=APP), "missing claim"),
        (claims("x", iss="https://evil", aud=APP), "wrong issuer"),
        (claims("x", iss=APP, aud="https://evil"), "wrong audience"),
    ):
        assert_401(client.get("/auth/me", headers=bearer(ed.sign(bad))), why)


def test_hs256_issuer_and_audience_apply_to_hs256_tokens_only(make_client, jwks):
    client = make_client(
        JWT_JWKS_URL=jwks.url,
        JWT_ALGORITHMS="EdDSA,HS256",
        JWT_FRONTEND_HS256="on",
        JWT_HS256_ISSUER="next-app",
        JWT_HS256_AUDIENCE="todo-api",
    )
    good = frontend_token("minted", iss="next-app", aud="todo-api")
    assert client.get("/auth/me", headers=bearer(good)).status_code == 200
    for bad in (
        frontend_token(),
        frontend_token(iss="next-app"),
        frontend_token(iss=APP, aud="todo-api"),
    ):
        assert_401(client.get("/auth/me", headers=bearer(bad)))
    # A JWKS token is not held to the HS256 source's settings.
    plain = jwks.keys[0].sign(jwks.claims("ba_user"))
    assert client.get("/auth/me", headers=bearer(plain)).status_code == 200


def test_jwt_issuer_and_audience_alone_still_apply_to_both_sources(make_client, jwks):
    """A deployment configured before the per-source settings behaves as it did."""
    client = make_client(
        JWT_JWKS_URL=jwks.url,
        JWT_ALGORITHMS="EdDSA,HS256",
        JWT_FRONTEND_HS256="on",
        JWT_ISSUER=APP,
        JWT_AUDIENCE=APP,
    )
    ed = jwks.keys[0]
    assert (
        client.get("/auth/me", headers=bearer(frontend_token(iss=APP, aud=APP))).status_code == 200
    )
    assert (
        client.get("/auth/me", headers=bearer(ed.sign(claims(iss=APP, aud=APP)))).status_code == 200
    )
    assert_401(client.get("/auth/me", headers=bearer(frontend_token())))
    assert_401(client.get("/auth/me", headers=bearer(ed.sign(claims()))))


def test_per_source_settings_override_the_shared_ones(make_client, jwks):
    client = make_client(
        JWT_JWKS_URL=jwks.url,
        JWT_ALGORITHMS="EdDSA,HS256",
        JWT_FRONTEND_HS256="on",
        JWT_ISSUER=APP,
        JWT_AUDIENCE=APP,
        JWT_HS256_ISSUER="next-app",
        JWT_JWKS_AUDIENCE="todo-api",
    )
    ed = jwks.keys[0]
    hs = frontend_token(iss="next-app", aud=APP)
    assert client.get("/auth/me", headers=bearer(hs)).status_code == 200
    assert_401(client.get("/auth/me", headers=bearer(frontend_token(iss=APP, aud=APP))))
    jw = ed.sign(claims(iss=APP, aud="todo-api"))
    assert client.get("/auth/me", headers=bearer(jw)).status_code == 200
    assert_401(client.get("/auth/me", headers=bearer(ed.sign(claims(iss=APP, aud=APP)))))


def test_own_signing_key_is_the_same_hkdf_output_as_ever():
    """Known answers: a changed derivation would log every local account out."""
    assert own_signing_key("a-test-secret-that-is-long-enough-for-hs256") == bytes.fromhex(
        "82e9f0bdbe28089edfb6861017eb75ae1219f86bdcaa64547907a1da19e00ddf"
    )
    assert own_signing_key("s\u00e9cret-\u30e6\u30fc\u30b6\u30fc-" + "x" * 40) == bytes.fromhex(
        "4c5db971fec80c0b7fc19b2b1c0cae365e25909d65bd9fc15bc254bccd4b2cd6"
    )


# --- tokens that do not -----------------------------------------------------------


def test_missing_header_is_401_with_plain_bearer_challenge(client):
    assert_401(client.get("/auth/me"), www_authenticate="Bearer")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc", "Bearer", "Bearer   "])
def test_other_schemes_and_empty_bearer_are_401(client, header):
    assert_401(client.get("/auth/me", headers={"Authorization": header}), www_authenticate="Bearer")


@pytest.mark.parametrize(
    "token",
    [
        b"not-a-jwt",
        b"a.b.c",
        b"eyJhbGciOiJIUzI1NiJ9.e30",  # two parts
        "\u00e9t\u00e9.x.y".encode(),  # not ASCII
    ],
)
def test_garbage_is_401(client, token):
    assert_401(client.get("/auth/me", headers={"Authorization": b"Bearer " + token}))


def test_bad_signature_is_401(client):
    forged = hs256(claims(), secret="another-secret-that-is-long-enough-1234")
    assert_401(client.get("/auth/me", headers=bearer(forged)))


def test_alg_none_is_401(client):
    unsigned = jwt.encode(claims(), key=None, algorithm="none")
    assert_401(client.get("/auth/me", headers=bearer(unsigned)))


def test_algorithm_outside_the_allow_list_is_401(client):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        hs512 = jwt.encode(claims(), TEST_SECRET, algorithm="HS512")
    assert_401(client.get("/auth/me", headers=bearer(hs512)))
    ed = SigningKey.ed25519("ed-x")
    assert_401(client.get("/auth/me", headers=bearer(ed.sign(claims()))))


def test_hs256_is_refused_when_only_jwks_algorithms_are_allowed(make_client, jwks):
    client = make_client(JWT_JWKS_URL=jwks.url, JWT_ALGORITHMS="EdDSA,RS256")
    assert_401(client.get("/auth/me", headers=bearer(frontend_token())), "algorithm not allowed")
    ed = jwks.keys[0]
    assert client.get("/auth/me", headers=bearer(ed.sign(jwks.claims()))).status_code == 200


def test_public_key_presented_as_hs256_secret_is_401(jwks_client, jwks):
    """Algorithm confusion: the attacker HMACs with the public key everybody can fetch."""
    rsa_key = jwks.keys[1]
    from cryptography.hazmat.primitives import serialization

    public_pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac
    import json

    from jwt.utils import base64url_encode

    header = base64url_encode(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    body = base64url_encode(json.dumps(claims()).encode())
    signature = base64url_encode(
        hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest()
    )
    forged = b".".join([header, body, signature]).decode()
    assert_401(jwks_client.get("/auth/me", headers=bearer(forged)))


def test_token_signed_by_jwks_key_under_another_algorithm_is_401(jwks_client, jwks):
    rsa_key = jwks.keys[1]
    # Signed with the right private key, but claiming PS256 where the JWK says RS256.
    token = rsa_key.sign(claims(), algorithm="PS256")
    assert_401(jwks_client.get("/auth/me", headers=bearer(token)))


def test_expired_token_is_401(client):
    token = hs256({"sub": "u", "exp": int(time.time()) - 31})
    r = client.get("/auth/me", headers=bearer(token))
    assert_401(r)
    assert r.json()["message"] == "Token has expired"


def test_token_not_yet_valid_is_401(client):
    assert_401(client.get("/auth/me", headers=bearer(frontend_token(nbf=int(time.time()) + 120))))


@pytest.mark.parametrize("missing", ["exp", "sub"])
def test_token_without_exp_or_sub_is_401(client, missing):
    payload = claims()
    del payload[missing]
    assert_401(client.get("/auth/me", headers=bearer(hs256(payload))))


def test_jwks_token_without_iat_is_401(jwks_client, jwks):
    payload = claims()
    del payload["iat"]
    assert_401(jwks_client.get("/auth/me", headers=bearer(jwks.keys[0].sign(payload))))


@pytest.mark.parametrize("sub", ["", "   ", "s" * 256, "bad\x00sub", 42])
def test_empty_overlong_or_odd_subject_is_401(client, sub):
    assert_401(client.get("/auth/me", headers=bearer(hs256(claims(sub=sub)))))


def test_token_over_8_kib_is_401_even_when_signed(client):
    token = frontend_token(padding="x" * 8200)
    assert len(token) > 8 * 1024
    assert_401(client.get("/auth/me", headers=bearer(token)))


def test_failures_are_logged_with_reason_and_request_id_but_never_the_token(client, caplog):
    from todo_server.logs import RequestIdFilter

    caplog.handler.addFilter(RequestIdFilter())
    token = hs256({"sub": "u", "exp": int(time.time()) - 3600})
    with caplog.at_level(logging.INFO, logger="todo_server.auth"):
        client.get("/auth/me", headers={**bearer(token), "X-Request-ID": "req-401"})
    records = [r for r in caplog.records if r.name == "todo_server.auth"]
    assert [r.getMessage() for r in records] == ["authentication failed: expired"]
    assert records[0].request_id == "req-401"
    assert all(token not in r.getMessage() for r in caplog.records)


def test_public_routes_need_no_token(client):
    assert client.get("/health").status_code == 200
    r = client.post("/auth/login", json={"email": "nobody@example.com", "password": "whatever1"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


# --- the JWKS cache -------------------------------------------------------------


def test_rotated_key_is_picked_up_at_once(make_client, jwks):
    client = make_client(JWT_JWKS_URL=jwks.url, JWT_ALGORITHMS="EdDSA")
    old = jwks.keys[0]
    assert client.get("/auth/me", headers=bearer(old.sign(jwks.claims()))).status_code == 200
    new = SigningKey.ed25519("ed-2")
    jwks.keys = [new]
    # Within the default 30 s refresh interval: the first unknown kid refetches.
    assert client.get("/auth/me", headers=bearer(new.sign(jwks.claims()))).status_code == 200
    assert jwks.fetches == 2


def test_flood_of_unknown_kids_fetches_the_jwks_once_then_once_per_interval(jwks_client, jwks):
    ed = jwks.keys[0]
    assert jwks_client.get("/auth/me", headers=bearer(ed.sign(claims()))).status_code == 200
    assert jwks.fetches == 1
    for _ in range(50):
        token = ed.sign(claims(), kid=uuid.uuid4().hex)
        assert_401(jwks_client.get("/auth/me", headers=bearer(token)))
    assert jwks.fetches == 2  # the first made-up kid refetched; it was not there: cooldown


def test_unreachable_jwks_answers_503_until_keys_are_known(make_client):
    client = make_client(JWT_JWKS_URL="http://127.0.0.1:9/jwks", JWT_ALGORITHMS="EdDSA")
    token = SigningKey.ed25519("ed-1").sign(claims())
    r = client.get("/auth/me", headers=bearer(token))
    assert r.status_code == 503
    assert r.json()["code"] == "service_unavailable"
    assert r.headers["retry-after"] == "2"


def test_subject_with_a_lone_surrogate_is_401(client):
    assert_401(client.get("/auth/me", headers=bearer(hs256(claims(sub="u\ud800")))))


def test_unstorable_profile_claims_are_dropped_not_fatal(client):
    token = frontend_token("odd-claims", email="e\ud800@x.io", name="bad\x00name")
    assert client.get("/auth/me", headers=bearer(token)).json() == {
        "id": "odd-claims",
        "email": None,
        "name": None,
    }
    r = client.post("/api/tasks", json={"title": "still works"}, headers=bearer(token))
    assert r.status_code == 201


# --- the verified-token cache ----------------------------------------------------------


def test_verified_tokens_are_remembered_until_they_expire(make_settings, monkeypatch):
    import asyncio

    from todo_server.auth import tokens as tokens_module
    from todo_server.auth.tokens import TokenVerifier

    verifier = TokenVerifier(make_settings())
    calls = []
    real_decode = jwt.decode
    monkeypatch.setattr(
        tokens_module.jwt, "decode", lambda *a, **k: calls.append(1) or real_decode(*a, **k)
    )
    now = time.time()
    token = hs256({"sub": "cached", "exp": int(now) + 60})

    async def run():
        first = await verifier.verify(token)
        second = await verifier.verify(token)
        assert first == second
        assert len(calls) == 1  # the signature was checked once
        # Past exp plus the leeway the cache no longer answers: the token is checked
        # afresh (PyJWT's own clock then decides; here it is still valid for it).
        monkeypatch.setattr(tokens_module.time, "time", lambda: now + 60 + 31)
        await verifier.verify(token)
        assert len(calls) == 2

    asyncio.run(run())


def test_refused_tokens_are_not_remembered(client, monkeypatch):
    """A refused token is checked afresh every time (a refusal is never cached), while an
    accepted one is checked once."""
    from todo_server.auth import tokens as tokens_module

    checked: list[str] = []
    real_decode = jwt.decode
    monkeypatch.setattr(
        tokens_module.jwt,
        "decode",
        lambda token, *a, **k: checked.append(token) or real_decode(token, *a, **k),
    )
    bad = hs256(claims(), secret="another-secret-that-is-long-enough-1234")
    good = frontend_token("remembered")
    for attempt in (1, 2, 3):
        assert_401(client.get("/auth/me", headers=bearer(bad)), "bad signature")
        assert client.get("/auth/me", headers=bearer(good)).status_code == 200
        assert checked.count(bad) == attempt  # its signature checked again each time
        assert checked.count(good) == 1  # the cache answers after the first time


# --- every refusal names its reason ----------------------------------------------


def reasons_cases(jwks) -> list[tuple[str, str, dict[str, str]]]:
    ed = jwks.keys[0]
    now = int(time.time())
    own_key_token = jwt.encode(
        {"sub": "u", "exp": now + 60, "token_use": "something-else"},
        own_signing_key(TEST_SECRET),
        algorithm="HS256",
        headers={"kid": "todo-server-1"},
    )
    with_jwks = {"JWT_JWKS_URL": jwks.url, "JWT_ALGORITHMS": "EdDSA,HS256"}
    minting = {**with_jwks, "JWT_FRONTEND_HS256": "on"}
    return [
        (hs256({"sub": "u", "exp": now - 3600}), "expired", {}),
        (jwt.encode(claims(), "w" * 40, algorithm="HS256"), "bad signature", {}),
        (
            ed.sign(claims(iss="https://evil.example.com", aud=jwks.origin)),
            "wrong issuer",
            with_jwks,
        ),
        (
            ed.sign(claims(iss=jwks.origin, aud="https://evil.example.com")),
            "wrong audience",
            with_jwks,
        ),
        (ed.sign(claims()), "missing claim", with_jwks),
        (frontend_token(nbf=now + 600), "not yet valid", {}),
        (jwt.encode(claims(), "k" * 64, algorithm="HS512"), "algorithm not allowed", {}),
        (ed.sign(jwks.claims(), kid="made-up"), "unknown key", with_jwks),
        ("x.y.z", "not a JWT", {}),
        ("a" * 9000 + ".b.c", "too large", {}),
        (hs256(claims(sub="")), "bad subject", {}),
        (hs256(claims(sub="a\u0085b")), "bad subject", {}),  # C1: NEXT LINE
        (hs256({**claims(), "sub": 123}), "bad subject", {}),
        (hs256({**claims(), "iat": "abc"}), "bad claim", {}),
        (hs256({**claims(), "exp": 253402300800}), "bad expiry", {}),
        (frontend_token(), "HS256 tokens from the frontend are not accepted", with_jwks),
        (own_key_token, "not an access token", {}),
        (
            hs256({**claims(), "session": {"id": "s"}, "user": {"id": "u"}}),
            "not an access token",
            minting,
        ),
        (hs256({**claims(), "email": "a@b.c", "userId": "u"}), "not an access token", minting),
    ]


def test_every_refusal_says_why_in_the_challenge_and_the_message(make_client, jwks):
    for token, why, settings in reasons_cases(jwks):
        client = make_client(**settings)
        r = client.get("/auth/me", headers=bearer(token))
        assert_401(r, why)
        assert token not in r.text and token not in r.headers["www-authenticate"]
