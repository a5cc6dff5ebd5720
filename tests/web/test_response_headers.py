"""Every response header can be sent: user ids outside ASCII, and the security headers."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest

from tests.support.task_users import PREFIXES, User

# Non-Latin-1 ids made the Location header unencodable (a 500 after the commit);
# the others made it an invalid URI reference.
ODD_USER_IDS = ["ユーザー", "użytkownik", "café", "a b", "100%", "x?y#z", "back\\slash", "emoji-🙂"]


def assert_sendable(r) -> None:
    """Every header is visible ASCII (what HTTP/1.1 can carry unambiguously)."""
    for name, value in r.headers.raw:
        assert all(0x20 <= byte < 0x7F for byte in name + value), (name, value)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("user_id", ODD_USER_IDS)
def test_every_task_route_answers_odd_user_ids_with_sendable_headers(client, db, prefix, user_id):
    user = User(client, user_id, prefix)
    base = user.base = prefix.format(user=quote(user_id, safe=""))

    r = user.request("POST", json={"title": "t"})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["user_id"] == user_id
    assert r.headers["location"] == f"{base}/{task['id']}"
    assert unquote(r.headers["location"]) == f"{prefix.format(user=user_id)}/{task['id']}"
    assert_sendable(r)

    # An idempotent create and its replay both carry the same, sendable Location.
    for replayed in (False, True):
        r = user.request("POST", json={"title": "k"}, headers={"Idempotency-Key": "key-1"})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == f"{base}/{r.json()['id']}"
        assert ("idempotent-replayed" in r.headers) is replayed
        assert_sendable(r)

    item = f"/{task['id']}"
    for method, suffix, kwargs, status in [
        ("GET", "", {}, 200),
        ("HEAD", "", {}, 200),
        ("GET", "?limit=1", {}, 200),
        ("PUT", item, {"json": {"title": "u"}}, 200),
        ("PATCH", item, {"json": {"title": "v"}}, 200),
        ("PATCH", item + "/complete", {}, 200),
        ("GET", item, {}, 200),
        ("DELETE", item, {}, 204),
        ("POST", item + "/restore", {}, 200),
        ("GET", item + "/nope", {}, 404),
        ("DELETE", "", {}, 405),
    ]:
        r = user.request(method, suffix, **kwargs)
        assert r.status_code == status, (method, suffix, r.text)
        assert_sendable(r)
    assert db.execute("SELECT count(*) FROM tasks WHERE user_id = %s", (user_id,)).fetchone() == (
        2,
    )


def responses_to_everything(client) -> dict[str, object]:
    """One response of each kind: data, tokens, errors of every layer, docs."""
    auth = User(client, "ada").headers
    account = {"email": "ada@example.com", "password": "correct horse"}
    return {
        "register": client.post("/auth/register", json=account),
        "login": client.post("/auth/login", json=account),
        "login refused": client.post("/auth/login", json={**account, "password": "wrong one"}),
        "health": client.get("/health"),
        "me": client.get("/auth/me", headers=auth),
        "create": client.post("/api/tasks", json={"title": "t"}, headers=auth),
        "list": client.get("/api/tasks", headers=auth),
        "422": client.get("/api/tasks?limit=0", headers=auth),
        "401": client.get("/api/tasks"),
        "404": client.get("/nowhere", headers=auth),
        "405": client.delete("/health"),
        "413": client.post("/api/tasks", content=b"x" * 70_000, headers=auth),
        "preflight": client.options(
            "/api/tasks",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
        ),
        "refused preflight": client.options(
            "/api/tasks",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        ),
    }


def test_every_response_is_nosniff_and_private_data_is_never_stored(client):
    for kind, r in responses_to_everything(client).items():
        assert r.headers.get_list("x-content-type-options") == ["nosniff"], kind
        assert r.headers.get_list("cache-control") == ["no-store"], kind
        assert_sendable(r)


def test_token_responses_also_say_pragma_no_cache(client):
    responses = responses_to_everything(client)
    assert responses["register"].status_code == 201
    assert responses["login"].status_code == 200
    for kind in ("register", "login", "login refused"):
        assert responses[kind].headers["pragma"] == "no-cache", kind
    assert "pragma" not in responses["list"].headers
    # The aliases answer the same tokens, with the same headers.
    account = {"email": "alias@example.com", "password": "a long enough password"}
    for path in ("/auth/signup", "/auth/signin"):
        r = client.post(path, json=account)
        assert r.status_code in (200, 201), r.text
        assert r.headers["pragma"] == "no-cache", path


def test_docs_may_be_cached_but_are_revalidated(client):
    for path in (
        "/openapi.json",
        "/docs",
        "/redoc",
        "/docs/static/docs-init.js",
        "/docs/static/vendor/swagger-ui/swagger-ui.css",
    ):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers.get_list("cache-control") == ["no-cache"], path
        assert r.headers["x-content-type-options"] == "nosniff", path
    asset = client.get("/docs/static/docs-init.js")
    again = client.get(
        "/docs/static/docs-init.js", headers={"If-None-Match": asset.headers["etag"]}
    )
    assert again.status_code == 304
