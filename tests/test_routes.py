"""Routes say where they are declared whether they need a token; the one layer keeps the order."""

from __future__ import annotations

from starlette.routing import Mount

from todo_server.app import create_app
from todo_server.auth import ApiRoute

PUBLIC = {
    "/health",
    "/auth/register",
    "/auth/login",
    "/auth/signup",
    "/auth/signin",
    "/openapi.json",
    "/docs",
    "/redoc",
}


def test_exactly_the_public_routes_are_declared_public(make_settings):
    app = create_app(make_settings())
    routes = [route for route in app.routes if not isinstance(route, Mount)]
    assert all(isinstance(route, ApiRoute) for route in routes)
    assert {route.path for route in routes if route.public} == PUBLIC
    assert all(
        "tasks" in route.path or route.path == "/auth/me" for route in routes if not route.public
    )


def test_every_declared_route_refuses_a_request_without_a_token_unless_public(client):
    for route in client.app.routes:
        if isinstance(route, Mount) or route.public:
            continue
        path = route.path.replace("{user_id}", "someone").replace(
            "{task_id}", "00000000-0000-0000-0000-000000000000"
        )
        for method in route.methods - {"HEAD"}:
            r = client.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"


def test_a_declared_body_over_the_limit_is_refused_before_the_token_is_read(client):
    r = client.post(
        "/api/tasks",
        content=b"{}",
        headers={"Content-Length": str(64 * 1024 + 1), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
