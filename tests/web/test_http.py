"""Cross-cutting HTTP behaviour: the error body, request ids, CORS, body limits, 500s."""

from __future__ import annotations

import logging

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.support.assertions import assert_error
from tests.support.signing import bearer, frontend_token
from todo_server.app import create_app
from todo_server.logs import RequestIdFilter

AUTH = bearer(frontend_token("http-tests"))


def test_unknown_route_is_404_in_the_error_format(client):
    body = assert_error(client.get("/no/such/thing", headers=AUTH), 404, "not_found")
    assert body["details"] is None


def test_unknown_route_without_a_token_is_404_too(client):
    """Authentication applies to routes that exist: the router's 404 first."""
    assert_error(client.get("/no/such/thing"), 404, "not_found")
    assert_error(client.get("/api/tasks"), 401, "unauthorized")  # a route: a token first


def test_unknown_method_is_405_in_the_error_format(client):
    r = client.delete("/health")
    assert_error(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]


def test_request_id_is_echoed_when_sane(client):
    r = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/nope", headers={**AUTH, "X-Request-ID": "trace-7"})
    assert r.json()["request_id"] == "trace-7"


@pytest.mark.parametrize("bad", ["x" * 129, "tab\there", ""])
def test_request_id_is_generated_when_missing_or_insane(client, bad):
    r = client.get("/health", headers={"X-Request-ID": bad})
    generated = r.headers["x-request-id"]
    assert generated != bad
    assert len(generated) == 32
    assert client.get("/health").headers["x-request-id"] != generated


def test_cors_allows_configured_origin(client):
    r = client.options(
        "/health",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "Authorization, If-Match, Idempotency-Key",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert r.headers["access-control-allow-credentials"] == "true"
    allowed = r.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "content-type", "if-match", "idempotency-key", "x-request-id"):
        assert header in allowed
    r = client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = r.headers["access-control-expose-headers"].lower()
    for header in ("etag", "location", "x-request-id", "retry-after"):
        assert header in exposed


def test_cors_ignores_other_origins(client):
    r = client.get("/health", headers={"Origin": "https://evil.example.com"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    r = client.options(
        "/health",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in r.headers


def test_refused_preflight_is_403_in_the_error_format(client):
    r = client.options(
        "/api/tasks",
        headers={
            "Origin": "https://evil.example.com",
            "Access-Control-Request-Method": "TRACE",
            "X-Request-ID": "cors-1",
        },
    )
    assert_error(r, 403, "forbidden")
    assert r.json() == {
        "code": "forbidden",
        "message": "CORS preflight refused",
        "details": [
            {"field": "Origin", "message": "is not an allowed origin"},
            {"field": "Access-Control-Request-Method", "message": "is not an allowed method"},
        ],
        "request_id": "cors-1",
        "detail": "CORS preflight refused",
    }
    assert "access-control-allow-origin" not in r.headers
    assert "Origin" in r.headers["vary"]


def test_preflight_from_an_allowed_origin_asking_for_other_headers_is_403(client):
    r = client.options(
        "/api/tasks",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, X-Secret",
        },
    )
    assert assert_error(r, 403, "forbidden")["details"] == [
        {"field": "Access-Control-Request-Headers", "message": "names a header that is not allowed"}
    ]
    # A refusal grants nothing, not even to an allowed origin (tests/web/test_cors.py).
    assert "access-control-allow-origin" not in r.headers


def test_body_over_64_kib_is_refused_with_413(client):
    r = client.post(
        "/health", content=b"x" * (64 * 1024 + 1), headers={"Content-Type": "application/json"}
    )
    assert_error(r, 413, "payload_too_large")


def test_streamed_body_over_64_kib_is_refused_with_413(make_settings, db):
    seen: list[int] = []

    async def echo_length(request):
        body = await request.body()
        seen.append(len(body))
        from starlette.responses import JSONResponse

        return JSONResponse({"length": len(body)})

    app = create_app(make_settings())
    app.router.routes.append(Route("/echo", echo_length, methods=["POST"]))

    def chunks(total: int):
        for _ in range(total // 4096):
            yield b"x" * 4096

    with TestClient(app, raise_server_exceptions=False) as client:
        # No Content-Length: the limit is enforced while reading.
        r = client.post("/echo", content=chunks(64 * 1024 + 4096), headers=AUTH)
        assert_error(r, 413, "payload_too_large")
        r = client.post("/echo", content=chunks(64 * 1024), headers=AUTH)
        assert r.json() == {"length": 64 * 1024}
    assert seen == [64 * 1024]


def test_unexpected_error_is_500_without_a_stack_trace(make_settings, db, caplog):
    async def explode(request):
        raise RuntimeError("secret internal detail")

    app = create_app(make_settings())
    app.router.routes.append(Route("/explode", explode))
    caplog.handler.addFilter(RequestIdFilter())
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        r = client.get("/explode", headers={**AUTH, "X-Request-ID": "boom-1"})
    body = assert_error(r, 500, "internal_error")
    assert body == {
        "code": "internal_error",
        "message": "Internal server error",
        "details": None,
        "request_id": "boom-1",
        "detail": "Internal server error",
    }
    assert "secret internal detail" not in r.text
    assert "Traceback" not in r.text
    # ...but the log has it, with the request id.
    logged = [rec for rec in caplog.records if rec.name == "todo_server.errors"]
    assert logged and logged[0].exc_info is not None
    assert logged[0].request_id == "boom-1"
