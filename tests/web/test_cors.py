"""CORS: only allowed origins get CORS headers, and a refusal grants nothing.

A refused preflight is 403 in the error format with no ``Access-Control-*``
header at all (a browser never shows a preflight's body to the page, so there
is nothing to let it read); a request from an origin that is not allowed is
served as if it had no ``Origin``, plus ``Vary: Origin``.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.support.assertions import assert_error
from tests.support.signing import bearer, frontend_token
from todo_server.app import create_app
from todo_server.auth.guard import ApiRoute

ALLOWED = "http://localhost:3000"  # the test settings' ALLOWED_ORIGINS
FOREIGN = "https://evil.example"
PREFLIGHT_VARY = (
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers,"
    " Access-Control-Request-Private-Network"
)


def cors_headers(r) -> dict[str, str]:
    return {name: value for name, value in r.headers.items() if name.startswith("access-control-")}


REFUSED_PREFLIGHTS = {
    "foreign origin": (
        {"Origin": FOREIGN, "Access-Control-Request-Method": "GET"},
        [{"field": "Origin", "message": "is not an allowed origin"}],
    ),
    "foreign origin asking for allowed headers": (
        {
            "Origin": FOREIGN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "Authorization, If-Match",
        },
        [{"field": "Origin", "message": "is not an allowed origin"}],
    ),
    "allowed origin, method not allowed": (
        {"Origin": ALLOWED, "Access-Control-Request-Method": "TRACE"},
        [{"field": "Access-Control-Request-Method", "message": "is not an allowed method"}],
    ),
    "allowed origin, header not allowed": (
        {
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, X-Secret",
        },
        [
            {
                "field": "Access-Control-Request-Headers",
                "message": "names a header that is not allowed",
            }
        ],
    ),
    "allowed origin, private network": (
        {
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Private-Network": "true",
        },
        [{"field": "Access-Control-Request-Private-Network", "message": "is not allowed"}],
    ),
}


@pytest.mark.parametrize("case", REFUSED_PREFLIGHTS)
def test_a_refused_preflight_is_403_and_carries_no_cors_header(client, case):
    headers, details = REFUSED_PREFLIGHTS[case]
    r = client.options("/api/tasks", headers={**headers, "X-Request-ID": "cors-refused"})
    assert_error(r, 403, "forbidden")
    assert r.json() == {
        "code": "forbidden",
        "message": "CORS preflight refused",
        "details": details,
        "request_id": "cors-refused",
        "detail": "CORS preflight refused",
    }
    assert cors_headers(r) == {}
    # What a cache needs: the answer depends on these request headers.
    assert r.headers["vary"] == PREFLIGHT_VARY


def test_an_allowed_preflight_gets_every_cors_header(client):
    r = client.options(
        "/api/tasks/1",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "Authorization, If-Match, Idempotency-Key",
        },
    )
    assert (r.status_code, r.text) == (200, "OK")
    assert cors_headers(r) == {
        "access-control-allow-origin": ALLOWED,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "access-control-allow-headers": (
            "Accept, Accept-Language, Authorization, Content-Language, Content-Type,"
            " Idempotency-Key, If-Match, X-Request-ID, traceparent, tracestate"
        ),
        "access-control-max-age": "600",
    }
    assert r.headers["vary"] == PREFLIGHT_VARY


EXPOSED = "ETag, Location, X-Request-ID, Retry-After, Link, X-Count, traceparent"


def simple_requests(client: TestClient, origin: str) -> dict[str, object]:
    """Requests that are not preflights, answered by the service or refused by it."""
    auth = bearer(frontend_token("cors-tests"))
    return {
        "200": client.get("/health", headers={"Origin": origin}),
        "200 with a token": client.get("/api/tasks", headers={**auth, "Origin": origin}),
        "401": client.get("/api/tasks", headers={"Origin": origin}),
        "404": client.get("/nowhere", headers={**auth, "Origin": origin}),
        "405": client.delete("/health", headers={"Origin": origin}),
        "OPTIONS without Access-Control-Request-Method": client.options(
            "/api/tasks", headers={"Origin": origin}
        ),
    }


@pytest.mark.parametrize("origin", [FOREIGN, "null", ALLOWED + ".evil.example"])
def test_a_request_from_an_origin_not_allowed_gets_no_cors_header(client, origin):
    for kind, r in simple_requests(client, origin).items():
        assert cors_headers(r) == {}, kind
        assert "Origin" in r.headers["vary"], kind  # the answer differs for allowed origins


def test_a_request_from_an_allowed_origin_gets_its_cors_headers(client):
    for kind, r in simple_requests(client, ALLOWED).items():
        assert cors_headers(r) == {
            "access-control-allow-origin": ALLOWED,
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": EXPOSED,
        }, kind
        assert "Origin" in r.headers["vary"], kind


def test_a_last_resort_500_grants_nothing_to_an_origin_not_allowed(make_settings):
    async def boom(request):
        raise RuntimeError("a bug")

    app = create_app(make_settings())
    app.router.routes.append(ApiRoute("/boom", boom, methods=["GET"], public=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"Origin": FOREIGN})
        assert_error(r, 500, "internal_error")
        assert cors_headers(r) == {}
        r = client.get("/boom", headers={"Origin": ALLOWED})
        assert_error(r, 500, "internal_error")
        assert cors_headers(r) == {
            "access-control-allow-origin": ALLOWED,
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": EXPOSED,
        }
