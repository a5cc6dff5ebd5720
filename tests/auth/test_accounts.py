"""Local accounts: register, login (JSON and OAuth2 form), me, and login throttling."""

from __future__ import annotations

import pytest

from tests.support.signing import bearer, frontend_token
from todo_server.auth import passwords
from todo_server.auth.tokens import own_signing_key

PASSWORD = "correct horse battery"


def register(client, email="ada@example.com", password=PASSWORD, **extra):
    return client.post("/auth/register", json={"email": email, "password": password, **extra})


def login(client, email="ada@example.com", password=PASSWORD):
    return client.post("/auth/login", json={"email": email, "password": password})


def test_register_creates_account_and_returns_a_working_token(client, db):
    r = register(client, email="  Ada@Example.COM ", name=" Ada Lovelace ")
    assert r.status_code == 201
    body = r.json()
    user = body["user"]
    assert body == {
        "user": {
            "id": user["id"],
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "created_at": user["created_at"],
        },
        "access_token": body["access_token"],
        "token": body["access_token"],
        "token_type": "bearer",
        "expires_in": 86400,
    }
    assert user["created_at"].endswith("+00:00")
    me = client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json() == user
    stored = db.execute(
        "SELECT email, password_hash FROM users WHERE id = %s", (user["id"],)
    ).fetchone()
    assert stored[0] == "ada@example.com"
    assert stored[1].startswith("scrypt$16384$8$5$")
    assert PASSWORD not in stored[1]


def test_issued_token_carries_the_contract_claims(make_client):
    import jwt

    from tests.support.signing import TEST_SECRET

    client = make_client(
        JWT_ISSUER="https://api.example.com", JWT_AUDIENCE="todo", ACCESS_TOKEN_TTL="600"
    )
    body = register(client, name="Ada").json()
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": "todo-server-1"}
    claims = jwt.decode(token, own_signing_key(TEST_SECRET), algorithms=["HS256"], audience="todo")
    assert claims == {
        "sub": body["user"]["id"],
        "email": "ada@example.com",
        "name": "Ada",
        "iat": claims["iat"],
        "exp": claims["iat"] + 600,
        "iss": "https://api.example.com",
        "aud": "todo",
        "token_use": "todo-server-access",
    }
    # Signed with a key of its own: the shared secret itself does not verify it.
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, TEST_SECRET, algorithms=["HS256"], audience="todo")
    assert body["expires_in"] == 600


def test_issued_tokens_carry_the_hs256_source_issuer_and_audience(make_client):
    """Issued tokens are verified as HS256 tokens, so they carry that source's iss/aud."""
    import jwt

    from tests.support.signing import TEST_SECRET, bearer

    client = make_client(
        JWT_ISSUER="https://shared.example.com",
        JWT_AUDIENCE="shared",
        JWT_HS256_ISSUER="https://api.example.com",
        JWT_HS256_AUDIENCE="todo",
    )
    token = register(client).json()["access_token"]
    claims = jwt.decode(token, own_signing_key(TEST_SECRET), algorithms=["HS256"], audience="todo")
    assert (claims["iss"], claims["aud"]) == ("https://api.example.com", "todo")
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200


def test_duplicate_email_in_any_case_is_409(client, db):
    assert register(client).status_code == 201
    r = register(client, email="ADA@example.com")
    assert r.status_code == 409
    assert r.json()["code"] == "conflict"
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (
            {},
            [
                {"field": "email", "message": "is required"},
                {"field": "password", "message": "is required"},
            ],
        ),
        (
            {"email": "no-at-sign", "password": PASSWORD},
            [{"field": "email", "message": "must be an email address like name@example.com"}],
        ),
        (
            {"email": "a@b@c", "password": PASSWORD},
            [{"field": "email", "message": "must be an email address like name@example.com"}],
        ),
        (
            {"email": "x" * 250 + "@b.co", "password": PASSWORD},
            [{"field": "email", "message": "must be at most 254 characters"}],
        ),
        (
            {"email": "a@b.co", "password": "short"},
            [{"field": "password", "message": "must be 8 to 1024 characters"}],
        ),
        (
            {"email": "a@b.co", "password": "p" * 1025},
            [{"field": "password", "message": "must be 8 to 1024 characters"}],
        ),
        (
            {"email": "a@b.co", "password": 12345678},
            [{"field": "password", "message": "must be a string"}],
        ),
        (
            {"email": "a@b.co", "password": PASSWORD, "name": "n" * 101},
            [{"field": "name", "message": "must be at most 100 characters"}],
        ),
        (
            {"email": "a@b.co", "password": PASSWORD, "name": 7},
            [{"field": "name", "message": "must be a string or null"}],
        ),
        (
            {"email": "a@b.co", "password": PASSWORD, "name": "a\x1bb"},
            [{"field": "name", "message": "must not contain control characters"}],
        ),
        (
            {"email": "a@b.co", "password": PASSWORD, "name": "a\x00b"},
            [{"field": "name", "message": "must not contain control characters"}],
        ),
        (
            {"email": "a@b.co", "password": PASSWORD, "role": "admin"},
            [{"field": "role", "message": "unknown field"}],
        ),
    ],
)
def test_bad_registration_is_422_with_field_details(client, db, body, details):
    r = client.post("/auth/register", json=body)
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert r.json()["details"] == details
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_register_body_must_be_json(client):
    r = client.post("/auth/register", content=b"email=a", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.post(
        "/auth/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    r = client.post("/auth/register", json=["a", "list"])
    assert r.status_code == 422


def test_login_with_json_and_with_oauth2_form(client):
    user = register(client, name="Ada").json()["user"]
    r = login(client, email=" ADA@example.com")
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "access_token": body["access_token"],
        "token": body["access_token"],
        "token_type": "bearer",
        "expires_in": 86400,
        "user": user,
    }
    r = client.post("/auth/login", data={"username": "ada@example.com", "password": PASSWORD})
    assert r.status_code == 200
    assert client.get("/auth/me", headers=bearer(r.json()["access_token"])).json() == user


def test_wrong_password_and_unknown_email_look_the_same(client):
    register(client)
    wrong = login(client, password="not the password")
    unknown = login(client, email="nobody@example.com")
    for r in (wrong, unknown):
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
    strip = lambda r: {k: v for k, v in r.json().items() if k != "request_id"}  # noqa: E731
    assert (
        strip(wrong)
        == strip(unknown)
        == {
            "code": "unauthorized",
            "message": "Invalid email or password",
            "details": None,
            "detail": "Invalid email or password",
        }
    )


def test_wrong_password_and_unknown_email_cost_the_same_hash(client, monkeypatch):
    """An unknown email is checked against a dummy hash with today's parameters, so it
    costs exactly what a wrong password costs: one scrypt of the same work factor."""
    register(client)
    real_scrypt = passwords._scrypt
    hashed: list[tuple[int, int, int, int]] = []

    def counting_scrypt(password, salt, n, r, p, length):
        hashed.append((n, r, p, length))
        return real_scrypt(password, salt, n, r, p, length)

    monkeypatch.setattr(passwords, "_scrypt", counting_scrypt)
    work = (passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P, passwords.KEY_LENGTH)
    for email in ("ada@example.com", "nobody@example.com"):
        hashed.clear()
        assert login(client, email=email, password="wrong password").status_code == 401
        assert hashed == [work], email


def test_me_for_a_frontend_user_comes_from_the_claims(client):
    r = client.get(
        "/auth/me", headers=bearer(frontend_token("fe-1", email="f@example.com", name="Fe"))
    )
    assert r.json() == {"id": "fe-1", "email": "f@example.com", "name": "Fe"}


def test_local_accounts_are_refused_when_hs256_is_not_accepted(make_client):
    from tests.support.signing import JwksServer, SigningKey

    jwks = JwksServer([SigningKey.ed25519("k")])
    try:
        client = make_client(JWT_JWKS_URL=jwks.url, JWT_ALGORITHMS="EdDSA")
        for path in ("/auth/register", "/auth/login"):
            r = client.post(path, json={"email": "a@b.co", "password": PASSWORD})
            assert r.status_code == 403
            assert r.json()["code"] == "forbidden"
    finally:
        jwks.close()


@pytest.mark.slow
def test_ten_failures_lock_the_email_even_for_the_right_password(client):
    register(client)
    for _ in range(10):
        assert login(client, password="wrong password").status_code == 401
    r = login(client)
    assert r.status_code == 429
    assert r.json()["code"] == "rate_limited"
    retry_after = int(r.headers["retry-after"])
    assert 880 <= retry_after <= 900
    # Another email from the same client is not locked by this one.
    assert login(client, email="other@example.com").status_code == 401


@pytest.mark.slow
def test_success_resets_the_email_count(client):
    register(client)
    for _ in range(9):
        assert login(client, password="wrong password").status_code == 401
    assert login(client).status_code == 200
    for _ in range(9):
        assert login(client, password="wrong password").status_code == 401
    assert login(client).status_code == 200


def test_failures_per_client_address_are_capped(make_client):
    client = make_client(LOGIN_MAX_FAILURES_PER_IP="3")
    for n in range(3):
        assert login(client, email=f"user{n}@example.com").status_code == 401
    r = login(client, email="fresh@example.com")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0


@pytest.mark.parametrize("email", ["a\x00@example.com", "x" * 255 + "@example.com"])
def test_unusable_login_email_is_422_not_an_error(client, email):
    r = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "email"
    r = client.post("/auth/login", data={"username": email, "password": PASSWORD})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "username"


def test_registrations_per_client_address_are_capped(make_client, db):
    client = make_client(REGISTRATIONS_PER_IP="3")
    for n in range(3):
        assert register(client, email=f"r{n}@example.com").status_code == 201
    r = register(client, email="r3@example.com")
    assert r.status_code == 429
    assert r.json()["code"] == "rate_limited"
    assert 880 <= int(r.headers["retry-after"]) <= 900
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 3
