"""The OpenAPI document: valid 3.1, complete, and telling the truth about limits."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from tests.support.task_users import User
from todo_server import errors
from todo_server.app import create_app
from todo_server.openapi import build_document

#: Routes that are the docs themselves, not API operations.
UNDOCUMENTED = {"/docs", "/redoc"}
METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def document():
    return build_document()


def test_document_is_valid_openapi_3_1(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    document = r.json()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_and_every_documented_route_exists(make_settings, document):
    app = create_app(make_settings())
    served = set()
    for route in app.routes:
        if isinstance(route, Mount) or route.path in UNDOCUMENTED:
            continue
        assert isinstance(route, Route)
        served |= {(route.path, m.lower()) for m in route.methods if m != "HEAD"}
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    assert served == documented


def test_every_operation_documents_its_errors_with_the_error_schema(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/health":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
            if operation.get("security") != []:
                assert "401" in operation["responses"], (path, method)


def test_documented_error_codes_are_every_code_the_service_answers(document):
    def subclasses(cls: type) -> list[type]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]

    codes = {cls.code for cls in subclasses(errors.ApiError)}  # includes internal_error
    assert "database_timeout" in codes
    assert set(document["components"]["schemas"]["Error"]["properties"]["code"]["enum"]) == codes


def test_version_and_task_prefixes_are_their_owners(document):
    from importlib.metadata import version

    from todo_server import openapi
    from todo_server.tasks import endpoints

    assert document["info"]["version"] == version("todo-server")  # pyproject.toml's
    assert set(openapi.PREFIX_NAMES) == set(endpoints.PREFIXES), "name each prefix tasks serves"


def test_security_schemes(document):
    schemes = document["components"]["securitySchemes"]
    bearer = schemes["bearerAuth"]
    assert {k: bearer[k] for k in ("type", "scheme", "bearerFormat")} == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert "session token" in bearer["description"]  # opaque Better Auth tokens too
    assert schemes["oauth2"]["flows"]["password"]["tokenUrl"] == "/auth/login"


def _create_schema(document) -> dict:
    return document["components"]["schemas"]["TaskCreate"]["properties"]


@pytest.mark.parametrize("field", ["title", "description"])
def test_documented_string_limits_are_the_enforced_ones(client, document, field):
    ada = User(client, "ada")
    limit = _create_schema(document)[field]["maxLength"]
    body = {"title": "t", field: "x" * limit}
    assert ada.request("POST", json=body).status_code == 201
    body[field] = "x" * (limit + 1)
    r = ada.request("POST", json=body)
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == field


def test_documented_tag_limits_are_the_enforced_ones(client, document):
    ada = User(client, "ada")
    tags = _create_schema(document)["tags"]
    most, longest = tags["maxItems"], tags["items"]["maxLength"]
    ok = [f"{i}".rjust(longest, "x") for i in range(most)]
    assert ada.request("POST", json={"title": "t", "tags": ok}).status_code == 201
    assert ada.request("POST", json={"title": "t", "tags": [*ok, "one more"]}).status_code == 422
    assert (
        ada.request("POST", json={"title": "t", "tags": ["x" * (longest + 1)]}).status_code == 422
    )


def test_documented_enums_are_the_enforced_ones(client, document):
    ada = User(client, "ada")
    for priority in _create_schema(document)["priority"]["enum"]:
        assert ada.request("POST", json={"title": "t", "priority": priority}).status_code == 201
    sorts = document["components"]["parameters"]["Sort"]["schema"]["enum"]
    for sort in sorts:
        assert ada.request("GET", params={"sort": sort}).status_code == 200
    assert ada.request("GET", params={"sort": "nope"}).status_code == 422


def test_documented_page_limits_are_the_enforced_ones(client, document):
    ada = User(client, "ada")
    schema = document["components"]["parameters"]["Limit"]["schema"]
    for value, status in [
        (schema["minimum"], 200),
        (schema["maximum"], 200),
        (schema["minimum"] - 1, 422),
        (schema["maximum"] + 1, 422),
    ]:
        assert ada.request("GET", params={"limit": value}).status_code == status


def test_documented_password_limits_are_the_enforced_ones(client, document):
    schema = document["components"]["schemas"]["Registration"]["properties"]["password"]
    short = "p" * (schema["minLength"] - 1)
    r = client.post("/auth/register", json={"email": "a@b.co", "password": short})
    assert r.status_code == 422
    long = "p" * (schema["maxLength"] + 1)
    r = client.post("/auth/register", json={"email": "a@b.co", "password": long})
    assert r.status_code == 422


def test_docs_pages_are_served_offline_under_a_strict_csp(client):
    for path, asset in [
        ("/docs", "/docs/static/vendor/swagger-ui/swagger-ui-bundle.js"),
        ("/redoc", "/docs/static/vendor/redoc/redoc.standalone.js"),
    ]:
        r = client.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "http" not in csp
        assert "http://" not in r.text and "https://" not in r.text
        assert asset in r.text
        assert client.get(asset).status_code == 200
    for licence in ("swagger-ui/LICENSE", "redoc/LICENSE"):
        assert client.get(f"/docs/static/vendor/{licence}").status_code == 200
