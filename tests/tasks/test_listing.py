"""Listing: order, sorting, filters, keyset pagination, incremental sync."""

from __future__ import annotations

import base64
import json

import pytest

from tests.support.assertions import assert_error
from tests.support.task_users import User

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2}


def ids(tasks) -> list[str]:
    return [t["id"] for t in tasks]


def walk(user: User, limit: int, **params) -> list[dict]:
    """Every page, following next_cursor to the end."""
    seen: list[dict] = []
    cursor = None
    while True:
        page = user.list(limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert page["count"] == len(page["tasks"]) <= limit
        seen += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def expected_order(tasks: list[dict], sort: str) -> list[str]:
    field = sort.lstrip("-")
    descending = sort.startswith("-")

    def key(task):
        value = task[field]
        if field == "priority":
            value = PRIORITY_RANK[value]
        return (value, task["id"])

    present = sorted((t for t in tasks if t[field] is not None), key=key, reverse=descending)
    nulls = sorted(
        (t for t in tasks if t[field] is None), key=lambda t: t["id"], reverse=descending
    )
    return ids(present + nulls)


def test_default_order_is_newest_first(ada):
    created = [ada.create(title=f"t{i}") for i in range(5)]
    assert ids(ada.list()["tasks"]) == ids(reversed(created))


def test_default_limit_is_100(ada, db):
    for i in range(105):
        ada.create(title=f"t{i}")
    page = ada.list()
    assert page["count"] == 100
    assert page["next_cursor"] is not None


@pytest.fixture
def varied(ada, db):
    """Tasks with every sortable field varied, including ties and NULL due dates."""
    specs = [
        ("delta", "high", "2027-01-03T00:00:00Z"),
        ("alpha", "low", None),
        ("charlie", "medium", "2027-01-01T00:00:00Z"),
        ("bravo", "high", "2027-01-01T00:00:00Z"),
        ("echo", "low", "2027-01-02T00:00:00Z"),
        ("alpha", "medium", None),
        ("foxtrot", "medium", "2027-01-05T00:00:00Z"),
    ]
    for title, priority, due_at in specs:
        ada.create(title=title, priority=priority, due_at=due_at)
    # Some identical creation times, so ties are broken by id.
    db.execute(
        "UPDATE tasks SET created_at = '2026-01-01T00:00:00Z' WHERE title IN ('alpha', 'bravo')"
    )
    ada.request("PATCH", f"/{ada.list(sort='title')['tasks'][3]['id']}", json={"tags": ["x"]})
    return ada.list(limit=200)["tasks"]


@pytest.mark.parametrize(
    "sort",
    [
        "created_at",
        "-created_at",
        "updated_at",
        "-updated_at",
        "due_at",
        "-due_at",
        "priority",
        "-priority",
        "title",
        "-title",
    ],
)
@pytest.mark.parametrize("limit", [200, 2, 1])
def test_every_sort_orders_and_pages_correctly(ada, varied, sort, limit):
    walked = walk(ada, limit, sort=sort)
    assert ids(walked) == expected_order(varied, sort)


def test_walk_returns_every_task_once_while_tasks_are_added(ada):
    originals = [ada.create(title=f"t{i}") for i in range(10)]
    seen: list[dict] = []
    cursor = None
    while True:
        page = ada.list(limit=3, **({"cursor": cursor} if cursor else {}))
        seen += page["tasks"]
        ada.create(title="added while walking")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    seen_ids = ids(seen)
    assert len(seen_ids) == len(set(seen_ids))
    assert set(ids(originals)) <= set(seen_ids)


def test_filters(ada):
    done = ada.create(title="Pay rent", completed=True, priority="high", tags=["home", "money"])
    call = ada.create(
        title="Call mum", description="About the RENT", tags=["home"], due_at="2026-12-01T12:00:00Z"
    )
    pct = ada.create(title="100% done_ish", priority="low", due_at="2027-06-01T00:00:00Z")

    assert ids(ada.list(completed="true")["tasks"]) == [done["id"]]
    assert ids(ada.list(completed="false")["tasks"]) == [pct["id"], call["id"]]
    assert ids(ada.list(priority="high")["tasks"]) == [done["id"]]
    assert ids(ada.list(tag="home")["tasks"]) == [call["id"], done["id"]]
    assert ids(ada.list(tag=["home", "money"])["tasks"]) == [done["id"]]
    assert ids(ada.list(tag=["home", "nope"])["tasks"]) == []
    assert ids(ada.list(q="rent")["tasks"]) == [call["id"], done["id"]]  # title or description
    assert ids(ada.list(q="%")["tasks"]) == [pct["id"]]  # wildcards are literal
    assert ids(ada.list(q="_")["tasks"]) == [pct["id"]]
    assert ids(ada.list(due_before="2027-01-01T00:00:00Z")["tasks"]) == [call["id"]]
    assert ids(ada.list(due_after="2027-01-01T00:00:00+00:00")["tasks"]) == [pct["id"]]
    assert ids(ada.list(completed="false", tag="home", q="MUM")["tasks"]) == [call["id"]]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"limit": "0"}, "limit", "must be a whole number from 1 to 200"),
        ({"limit": "201"}, "limit", "must be a whole number from 1 to 200"),
        ({"limit": "ten"}, "limit", "must be a whole number from 1 to 200"),
        ({"limit": "-1"}, "limit", "must be a whole number from 1 to 200"),
        ({"limit": ["5", "6"]}, "limit", "must be given at most once"),
        ({"sort": "colour"}, "sort", None),
        ({"completed": "yes"}, "completed", "must be true or false"),
        ({"priority": "urgent"}, "priority", "must be one of low, medium, high"),
        ({"tag": ""}, "tag", "must be 1 to 50 characters"),
        ({"q": ""}, "q", "must be 1 to 100 characters"),
        ({"q": "x" * 101}, "q", "must be 1 to 100 characters"),
        ({"due_before": "soon"}, "due_before", "must be an RFC 3339 date-time with offset"),
        ({"due_after": "2026-01-01"}, "due_after", "must be an RFC 3339 date-time with offset"),
        (
            {"updated_since": "yesterday"},
            "updated_since",
            "must be an RFC 3339 date-time with offset",
        ),
        ({"colour": "red", "limit": "0"}, "limit", None),  # the unknown one is ignored
        ({"cursor": "garbage"}, "cursor", "is not a cursor this server issued"),
    ],
)
def test_bad_query_values_are_422(ada, params, field, message):
    r = ada.request("GET", params=params)
    details = assert_error(r, 422, "validation_error")["details"]
    assert [d["field"] for d in details] == [field]
    if message:
        assert details[0]["message"] == message


def test_unknown_query_parameters_are_ignored(ada):
    ada.create(title="kept")
    assert [t["title"] for t in ada.list(colour="red", page="2", _="1")["tasks"]] == ["kept"]


def test_tampered_cursor_is_422(ada):
    for i in range(3):
        ada.create(title=f"t{i}")
    cursor = ada.list(limit=1)["next_cursor"]
    body, signature = cursor.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload[2] = "00000000-0000-4000-8000-000000000000"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    for bad in (f"{forged}.{signature}", cursor[:-2] + "xx", cursor + "x"):
        r = ada.request("GET", params={"limit": 1, "cursor": bad})
        assert assert_error(r, 422, "validation_error")["details"][0]["field"] == "cursor"


def test_cursor_of_another_sort_is_422(ada):
    for i in range(3):
        ada.create(title=f"t{i}")
    cursor = ada.list(limit=1, sort="title")["next_cursor"]
    r = ada.request("GET", params={"limit": 1, "cursor": cursor, "sort": "-created_at"})
    assert assert_error(r, 422, "validation_error")["details"] == [
        {"field": "cursor", "message": "belongs to another sort order"}
    ]


def test_another_users_cursor_reveals_nothing(client, ada):
    bob = User(client, "bob")
    for i in range(3):
        ada.create(title=f"ada {i}")
        bob.create(title=f"bob {i}")
    cursor = ada.list(limit=1)["next_cursor"]
    page = bob.list(limit=10, cursor=cursor)
    assert {t["user_id"] for t in page["tasks"]} <= {"bob"}


def test_sync_returns_changes_since_with_tombstones(ada, db):
    kept = ada.create(title="kept")
    gone = ada.create(title="gone")
    since = ada.list()["tasks"][0]["updated_at"]  # the newest change so far
    assert ada.list(updated_since=since)["tasks"] == []

    edited = ada.request("PATCH", f"/{kept['id']}", json={"title": "edited"}).json()
    ada.request("DELETE", f"/{gone['id']}")
    deleted_at = db.execute("SELECT updated_at FROM tasks WHERE id = %s", (gone["id"],)).fetchone()[
        0
    ]
    page = ada.list(updated_since=since)
    assert page == {
        "tasks": [
            edited,
            {"id": gone["id"], "deleted": True, "updated_at": page["tasks"][1]["updated_at"]},
        ],
        "count": 2,
        "next_cursor": None,
        "sync_token": page["sync_token"],
    }
    from datetime import datetime

    assert datetime.fromisoformat(page["tasks"][1]["updated_at"]) == deleted_at


def test_sync_pages_oldest_change_first(ada):
    created = [ada.create(title=f"t{i}") for i in range(7)]
    walked = walk(ada, 2, updated_since="2000-01-01T00:00:00Z")
    assert ids(walked) == ids(created)


def test_sync_cannot_be_combined_with_filters_or_sort(ada):
    for extra in ({"completed": "true"}, {"sort": "title"}, {"q": "x"}):
        r = ada.request("GET", params={"updated_since": "2000-01-01T00:00:00Z", **extra})
        assert assert_error(r, 422, "validation_error")["details"][0]["field"] == "updated_since"


def test_sync_cursor_is_not_a_list_cursor(ada):
    for i in range(3):
        ada.create(title=f"t{i}")
    cursor = ada.list(limit=1, updated_since="2000-01-01T00:00:00Z")["next_cursor"]
    r = ada.request("GET", params={"limit": 1, "cursor": cursor})
    assert r.status_code == 422
