"""Existing frontends, unchanged: what they send and how they read the answers.

Each test replays requests that public Next.js + Better Auth todo frontends
make (their API-client code, translated from fetch to httpx) against a real
server in both dialects: ``API_DIALECT=standard`` (the contract) and
``compatible`` (lists as bare arrays with paging in ``Link``, DELETE answers the
task). Parameter aliases, error ``detail``, 404 for unknown paths and the
``/auth/signup``/``/auth/signin`` aliases hold in both.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from devtools.liveserver import LiveServer
from tests.support.database import settings_env
from tests.support.signing import bearer, frontend_token
from tests.support.task_users import PREFIXES

DIALECTS = ("standard", "compatible")


@pytest.fixture(scope="module", params=DIALECTS)
def server(request, database_url) -> Iterator[tuple[str, LiveServer]]:
    env = settings_env(database_url, API_DIALECT=request.param, REGISTRATIONS_PER_IP="1000")
    with LiveServer(env) as live:
        yield request.param, live


_open: list[httpx2.Client] = []


def client(live: LiveServer, **kwargs: Any) -> httpx2.Client:
    """An HTTP client closed after the test."""
    http = httpx2.Client(base_url=live.base_url, **kwargs)
    _open.append(http)
    return http


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


class Frontend:
    """One signed-in user of a frontend, calling the API under one prefix."""

    def __init__(self, live: LiveServer, prefix: str = PREFIXES[1]) -> None:
        self.user = "fe-" + uuid.uuid4().hex[:12]
        self.http = client(
            live, headers=bearer(frontend_token(self.user, email=f"{self.user}@example.com"))
        )
        self.tasks = prefix.format(user=self.user)

    def create(self, title: str, **fields: Any) -> dict[str, Any]:
        r = self.http.post(self.tasks, json={"title": title, **fields})
        assert r.status_code == 201, r.text
        return r.json()

    def titles(self, answer: Any) -> list[str]:
        """``(await res.json()).map(t => t.title)``, or ``.tasks.map(...)`` for the envelope."""
        tasks = answer if isinstance(answer, list) else answer["tasks"]
        return [task["title"] for task in tasks]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_the_list_is_a_bare_array_only_in_the_compatible_dialect(server, prefix):
    dialect, live = server
    fe = Frontend(live, prefix)
    for title in ("one", "two", "three"):
        fe.create(title)
    r = fe.http.get(fe.tasks)
    assert r.status_code == 200
    if dialect == "compatible":
        assert isinstance(r.json(), list)
        assert r.headers["x-count"] == "3"
        assert "link" not in r.headers  # one page
    else:
        assert set(r.json()) == {"tasks", "count", "next_cursor"}
        assert "x-count" not in r.headers
    assert fe.titles(r.json()) == ["three", "two", "one"]


def pages(fe: Frontend, dialect: str, url: str) -> Iterator[list[dict[str, Any]]]:
    """Every page, following Link rel="next" (compatible) or next_cursor (standard)."""
    next_url: str | None = url
    while next_url is not None:
        r = fe.http.get(next_url)
        assert r.status_code == 200, r.text
        if dialect == "compatible":
            assert len(r.json()) == int(r.headers["x-count"])
            match = re.fullmatch(r'<([^>]+)>; rel="next"', r.headers.get("link", ""))
            next_url = match.group(1) if match else None
            yield r.json()
        else:
            assert "link" not in r.headers
            body = r.json()
            cursor = body["next_cursor"]
            next_url = None if cursor is None else f"{url}&cursor={cursor}"
            yield body["tasks"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_paging_reaches_every_task_once_and_keeps_the_query(server, prefix):
    dialect, live = server
    fe = Frontend(live, prefix)
    made = [fe.create(f"t{n}", completed=n % 2 == 0)["id"] for n in range(7)]
    everything = list(pages(fe, dialect, f"{fe.tasks}?limit=2&status=all"))
    assert [len(page) for page in everything] == [2, 2, 2, 1]
    seen = [task["id"] for page in everything for task in page]
    assert seen == made[::-1]
    pending = [
        task for page in pages(fe, dialect, f"{fe.tasks}?limit=1&status=pending") for task in page
    ]
    assert [task["id"] for task in pending] == made[1::2][::-1]  # the filter held on every page
    if dialect == "compatible":
        r = fe.http.get(fe.tasks, params={"limit": 2, "status": "all"})
        link = re.fullmatch(r'<([^>]+)>; rel="next"', r.headers["link"]).group(1)
        assert link.startswith(live.base_url + fe.tasks + "?limit=2&status=all&cursor=")


def test_status_and_sort_spellings_of_existing_frontends(server):
    _, live = server
    fe = Frontend(live)
    fe.create("b", due_at="2030-01-02T00:00:00Z")
    fe.create("a", completed=True, due_at="2030-01-01T00:00:00Z")
    fe.create("c")

    def titles(**params: str) -> list[str]:
        r = fe.http.get(fe.tasks, params=params)
        assert r.status_code == 200, r.text
        return fe.titles(r.json())

    assert titles(status="all") == ["c", "a", "b"]
    assert titles(status="pending") == titles(status="active") == ["c", "b"]
    assert titles(status="completed") == ["a"]
    assert titles(sort_by="created") == ["c", "a", "b"]
    assert titles(sort_by="created", order="asc") == ["b", "a", "c"]
    assert titles(sort_by="title") == ["a", "b", "c"]
    assert titles(sort_by="title", order="desc") == ["c", "b", "a"]
    assert titles(sort_by="updated") == ["c", "a", "b"]
    assert titles(sort="created") == ["c", "a", "b"]
    assert titles(sort="title") == ["a", "b", "c"]
    assert titles(sort="due_date") == ["a", "b", "c"]  # soonest first, none last
    assert titles(sort="-title") == ["c", "b", "a"]  # the contract's own spelling
    # What frontends add on their own is ignored...
    assert titles(status="all", page="1", _t="1700000000", filter="x") == ["c", "a", "b"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "done"}, "status"),
        ({"sort_by": "colour"}, "sort_by"),
        ({"order": "up"}, "order"),
        ({"sort": "newest"}, "sort"),
        ({"sort": "title", "sort_by": "created"}, "sort_by"),
        ({"status": "all", "completed": "true"}, "status"),
        ({"sort": "-title", "order": "asc"}, "order"),
        ({"limit": "lots", "unknown": "ignored"}, "limit"),
    ],
)
def test_bad_values_of_known_parameters_stay_422(server, params, field):
    _, live = server
    fe = Frontend(live)
    r = fe.http.get(fe.tasks, params=params)
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["details"]] == [field]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_delete_answers_what_res_json_can_read_in_the_compatible_dialect(server, prefix):
    dialect, live = server
    fe = Frontend(live, prefix)
    task = fe.create("to go")
    r = fe.http.delete(f"{fe.tasks}/{task['id']}")
    if dialect == "compatible":
        assert r.status_code == 200
        gone = r.json()  # `await res.json()` no longer throws
        assert gone["id"] == task["id"] and gone["title"] == "to go"
        assert r.headers["etag"]
    else:
        assert r.status_code == 204 and r.content == b""
    assert fe.http.get(f"{fe.tasks}/{task['id']}").status_code == 404
    assert fe.titles(fe.http.get(fe.tasks).json()) == []


def test_every_error_carries_detail_for_frontends_that_read_it(server):
    _, live = server
    fe = Frontend(live)
    anonymous = client(live)
    answers = [
        fe.http.get(f"{fe.tasks}/{uuid.uuid4()}"),  # 404
        fe.http.post(fe.tasks, json={"title": ""}),  # 422
        fe.http.get("/api/someone-else/tasks"),  # 403
        anonymous.get("/api/tasks"),  # 401
        fe.http.post(fe.tasks, content=b"{", headers={"content-type": "application/json"}),
        fe.http.put(fe.tasks, json={}),  # 405
        anonymous.get("/no/such/path"),  # 404
    ]
    assert [r.status_code for r in answers] == [404, 422, 403, 401, 400, 405, 404]
    for r in answers:
        body = r.json()
        assert body["detail"] == body["message"] and body["detail"], body
        assert set(body) == {"code", "message", "details", "request_id", "detail"}


@pytest.mark.parametrize("token", [True, False])
@pytest.mark.parametrize(
    "path", ["/auth/unknown", "/api/task", "/api/tasks/x/y/z", "/tasks", "/", "/api"]
)
def test_unknown_paths_are_404_with_or_without_a_token(server, path, token):
    _, live = server
    fe = Frontend(live)
    http = fe.http if token else client(live)
    r = http.get(path)
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "not_found"


def test_a_wrong_method_is_405_with_or_without_a_token(server):
    _, live = server
    fe = Frontend(live)
    for http in (fe.http, client(live)):
        r = http.delete("/api/tasks")
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    # A route that exists still needs a token.
    assert client(live).get("/api/tasks").status_code == 401


def test_signup_and_signin_answer_a_token_that_works(server):
    _, live = server
    http = client(live)
    email = f"fe-{uuid.uuid4().hex[:8]}@example.com"
    account = {"email": email, "password": "a long enough password", "name": "Fe"}
    signed_up = http.post("/auth/signup", json=account)
    assert signed_up.status_code == 201, signed_up.text
    assert signed_up.json()["token"] == signed_up.json()["access_token"]
    signed_in = http.post("/auth/signin", json={"email": email, "password": account["password"]})
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["token"]
    assert token == signed_in.json()["access_token"]
    r = http.post("/api/tasks", json={"title": "mine"}, headers=bearer(token))
    assert r.status_code == 201
    wrong = http.post("/auth/signin", json={"email": email, "password": "not it at all"})
    assert wrong.status_code == 401 and wrong.json()["detail"]


def test_the_served_document_describes_the_dialect_served(server):
    dialect, live = server
    document = client(live).get("/openapi.json").json()
    item = document["paths"]["/api/tasks/{task_id}"]["delete"]["responses"]
    listing = document["paths"]["/api/tasks"]["get"]["responses"]["200"]
    schema = listing["content"]["application/json"]["schema"]
    if dialect == "compatible":
        assert "200" in item and "204" not in item
        assert {"Link", "X-Count"} <= set(listing["headers"])
        assert {"type": "array", "items": {"$ref": "#/components/schemas/Task"}} in schema["oneOf"]
    else:
        assert "204" in item and "200" not in item
        assert schema == {"$ref": "#/components/schemas/TaskList"}
    assert {"/auth/signup", "/auth/signin"} <= set(document["paths"])


def test_a_browser_frontend_may_read_the_paging_headers(server):
    _, live = server
    fe = Frontend(live)
    r = fe.http.get(fe.tasks, headers={"Origin": "http://localhost:3000"})
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"link", "x-count", "etag"} <= exposed


@pytest.mark.parametrize("user", ["ユーザー", "a b", "a>b;c", "é-user"])
def test_link_is_plain_ascii_whatever_the_user_id(server, user):
    dialect, live = server
    http = client(live, headers=bearer(frontend_token(user, email="u@example.com")))
    tasks = "/api/" + quote(user, safe="") + "/tasks"
    for n in range(3):
        assert http.post(tasks, json={"title": f"t{n}"}).status_code == 201
    r = http.get(tasks, params={"limit": 1})
    assert r.status_code == 200, r.text
    if dialect == "compatible":
        link = r.headers["link"]
        assert link.isascii() and link.count("<") == 1 and link.count(">") == 1
        target = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1)
        assert target.startswith(live.base_url + tasks + "?limit=1&cursor=")
        assert http.get(target).status_code == 200


def test_a_trailing_slash_is_an_unknown_path_not_a_redirect(server):
    _, live = server
    fe = Frontend(live)
    r = fe.http.get(fe.tasks + "/", headers={"Host": "evil.example.com"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert "location" not in r.headers
