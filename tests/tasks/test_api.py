"""Every row of the routes table, on all three prefixes."""

from __future__ import annotations

import uuid

import pytest

from tests.support.assertions import assert_error
from tests.support.task_users import PREFIXES, TASK_KEYS, ts


@pytest.fixture(params=PREFIXES)
def api_prefix(request):
    """Every test here runs under each prefix."""
    return request.param


def test_create_returns_201_task_with_location_and_etag(ada, db):
    r = ada.request(
        "POST",
        json={
            "title": "  Buy milk  ",
            "description": "2 litres",
            "priority": "high",
            "due_at": "2026-12-01T09:30:00+01:00",
            "tags": ["home", " errands "],
        },
    )
    assert r.status_code == 201
    task = r.json()
    assert set(task) == TASK_KEYS
    assert task == {
        "id": task["id"],
        "user_id": "ada",
        "title": "Buy milk",
        "description": "2 litres",
        "completed": False,
        "completed_at": None,
        "priority": "high",
        "due_at": "2026-12-01T08:30:00+00:00",
        "tags": ["home", "errands"],
        "created_at": task["created_at"],
        "updated_at": task["created_at"],
    }
    uuid.UUID(task["id"])
    assert ts(task["created_at"]).utcoffset().total_seconds() == 0
    assert r.headers["location"] == f"{ada.base}/{task['id']}"
    assert r.headers["etag"] == '"1"'
    row = db.execute("SELECT user_id, title FROM tasks WHERE id = %s", (task["id"],)).fetchone()
    assert row == ("ada", "Buy milk")


def test_create_defaults(ada):
    task = ada.create(title="Only a title")
    assert (
        task["description"],
        task["completed"],
        task["priority"],
        task["due_at"],
        task["tags"],
    ) == (
        None,
        False,
        "medium",
        None,
        [],
    )


def test_create_completed_sets_completed_at(ada):
    task = ada.create(completed=True)
    assert task["completed"] is True
    assert task["completed_at"] is not None


def test_first_create_by_a_frontend_user_creates_their_user_row(ada, db):
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    ada.list()  # a read writes nothing
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    ada.create()
    ada.create()
    assert db.execute("SELECT id, email, live_tasks FROM users").fetchall() == [
        ("ada", "ada@example.com", 2)
    ]


def test_get_returns_task_with_etag(ada):
    task = ada.create()
    r = ada.request("GET", f"/{task['id']}")
    assert r.status_code == 200
    assert r.json() == task
    assert r.headers["etag"] == '"1"'


def test_list_returns_tasks_count_and_cursor(ada):
    first = ada.create(title="first")
    second = ada.create(title="second")
    assert ada.list() == {"tasks": [second, first], "count": 2, "next_cursor": None}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_put_and_patch_change_only_the_given_fields(ada, method):
    task = ada.create(title="old", description="keep me", tags=["x"])
    r = ada.request(method, f"/{task['id']}", json={"title": "new", "priority": "low"})
    assert r.status_code == 200
    updated = r.json()
    assert updated == {
        **task,
        "title": "new",
        "priority": "low",
        "updated_at": updated["updated_at"],
    }
    assert ts(updated["updated_at"]) > ts(task["updated_at"])
    assert r.headers["etag"] == '"2"'
    assert ada.request("GET", f"/{task['id']}").json() == updated


def test_put_accepts_a_full_body(ada):
    task = ada.create()
    full = {
        "title": "Full",
        "description": None,
        "completed": True,
        "priority": "medium",
        "due_at": None,
        "tags": [],
    }
    r = ada.request("PUT", f"/{task['id']}", json=full)
    assert r.status_code == 200
    assert {k: r.json()[k] for k in full} == full


def test_update_can_clear_nullable_fields(ada):
    task = ada.create(description="d", due_at="2030-01-01T00:00:00Z")
    r = ada.request("PATCH", f"/{task['id']}", json={"description": None, "due_at": None})
    assert (r.json()["description"], r.json()["due_at"]) == (None, None)


def test_completing_sets_and_reopening_clears_completed_at(ada):
    task = ada.create()
    done = ada.request("PATCH", f"/{task['id']}", json={"completed": True}).json()
    assert done["completed"] is True and done["completed_at"] is not None
    again = ada.request("PATCH", f"/{task['id']}", json={"completed": True}).json()
    assert again["completed_at"] == done["completed_at"]  # already done: keeps when
    reopened = ada.request("PATCH", f"/{task['id']}", json={"completed": False}).json()
    assert reopened["completed"] is False and reopened["completed_at"] is None


def test_complete_with_body_sets_the_value(ada):
    task = ada.create()
    for value in (True, True, False):
        r = ada.request("PATCH", f"/{task['id']}/complete", json={"completed": value})
        assert r.status_code == 200
        assert r.json()["completed"] is value
        assert (r.json()["completed_at"] is not None) is value


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"content": b""},
        {"json": {}},
        {"content": b"  ", "headers": {"Content-Type": "text/plain"}},
    ],
)
def test_complete_without_a_value_toggles(ada, kwargs):
    task = ada.create()
    r = ada.request("PATCH", f"/{task['id']}/complete", **kwargs)
    assert r.status_code == 200
    toggled = r.json()
    assert toggled["completed"] is True and toggled["completed_at"] is not None
    assert ts(toggled["updated_at"]) > ts(task["updated_at"])
    assert r.headers["etag"] == '"2"'
    back = ada.request("PATCH", f"/{task['id']}/complete", **kwargs).json()
    assert back["completed"] is False and back["completed_at"] is None


def test_delete_is_soft_and_restore_undoes_it(ada, db):
    task = ada.create(title="keep my data", tags=["t"])
    r = ada.request("DELETE", f"/{task['id']}")
    assert r.status_code == 204
    assert r.content == b""
    row = db.execute("SELECT title, deleted_at FROM tasks WHERE id = %s", (task["id"],)).fetchone()
    assert row[0] == "keep my data" and row[1] is not None
    assert_error(ada.request("GET", f"/{task['id']}"), 404, "not_found")
    assert ada.list()["tasks"] == []
    assert_error(ada.request("DELETE", f"/{task['id']}"), 404, "not_found")

    r = ada.request("POST", f"/{task['id']}/restore")
    assert r.status_code == 200
    restored = r.json()
    assert restored == {**task, "updated_at": restored["updated_at"]}
    assert ts(restored["updated_at"]) > ts(task["updated_at"])
    assert r.headers["etag"] == '"3"'
    assert ada.list()["tasks"] == [restored]


def test_restoring_a_live_task_changes_nothing(ada):
    task = ada.create()
    r = ada.request("POST", f"/{task['id']}/restore")
    assert r.status_code == 200
    assert r.json() == task
    assert r.headers["etag"] == '"1"'


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("PUT", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("PATCH", "/complete"),
        ("POST", "/restore"),
    ],
)
@pytest.mark.parametrize(
    "task_id", [str(uuid.uuid4()), "not-a-uuid", "123", f"{{{uuid.uuid4()}}}", uuid.uuid4().hex]
)
def test_missing_or_malformed_task_id_is_404(ada, method, suffix, task_id):
    kwargs = {"json": {"title": "x"}} if method in ("PUT", "PATCH") and not suffix else {}
    body = assert_error(ada.request(method, f"/{task_id}{suffix}", **kwargs), 404, "not_found")
    assert body["message"] == "Task not found"


def test_uppercase_task_id_is_the_same_task(ada):
    task = ada.create()
    assert ada.request("GET", f"/{task['id'].upper()}").json() == task


def test_unsupported_methods_are_405_with_allow(ada):
    r = ada.request("DELETE")
    assert_error(r, 405, "method_not_allowed")
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    task = ada.create()
    r = ada.request("GET", f"/{task['id']}/complete")
    assert_error(r, 405, "method_not_allowed")


def test_every_task_route_needs_a_token(client):
    task_id = str(uuid.uuid4())
    for method, path in [
        ("GET", "/api/tasks"),
        ("POST", "/api/tasks"),
        ("GET", f"/api/tasks/{task_id}"),
        ("PUT", f"/api/tasks/{task_id}"),
        ("PATCH", f"/api/tasks/{task_id}"),
        ("DELETE", f"/api/tasks/{task_id}"),
        ("PATCH", f"/api/tasks/{task_id}/complete"),
        ("POST", f"/api/tasks/{task_id}/restore"),
        ("GET", "/api/ada/tasks"),
        ("GET", "/users/ada/tasks"),
    ]:
        assert_error(client.request(method, path), 401, "unauthorized")
