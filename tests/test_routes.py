"""Routes say where they are declared whether they need a token; the one layer keeps the order."""

from __future__ import annotations

from starlette.routing import Mount

from todo_server.app import create_app
from todo_server.auth.guard import ApiRoute

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


def test_a_last_resort_500_carries_cors_headers_for_an_allowed_origin(make_settings):
    from starlette.testclient import TestClient

    async def boom(request):
        raise RuntimeError("a bug")

    app = create_app(make_settings())
    app.router.routes.append(ApiRoute("/boom", boom, methods=["GET"], public=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


def test_an_error_on_a_cacheable_path_is_never_stored(client):
    for method, path in (("POST", "/openapi.json"), ("GET", "/docs/static/nothing-here.js")):
        r = client.request(method, path)
        assert r.status_code in (404, 405)
        assert r.headers["cache-control"] == "no-store", path
    assert client.get("/openapi.json").headers["cache-control"] == "no-cache"


def test_a_long_path_under_a_mount_is_cut_short_in_the_access_log():
    from todo_server.web.middleware import MAX_LOGGED_PATH, path_template

    path = "/docs/static/" + "a/" * 5000 + "x"
    scope = {"path": path, "endpoint": object(), "path_params": {"path": path[13:]}}
    assert len(path_template(scope)) == MAX_LOGGED_PATH
