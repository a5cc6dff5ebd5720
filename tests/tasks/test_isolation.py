"""The one rule that must never break: a user sees and changes only their own tasks."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from tests.support.assertions import assert_error
from tests.support.task_users import PREFIXES, User

ROUTES = [
    ("GET", "/{id}", None),
    ("PUT", "/{id}", {"title": "hijacked"}),
    ("PATCH", "/{id}", {"title": "hijacked"}),
    ("PATCH", "/{id}/complete", {"completed": True}),
    ("PATCH", "/{id}/complete", None),
    ("DELETE", "/{id}", None),
    ("POST", "/{id}/restore", None),
]


def without_request_id(r) -> dict:
    return {k: v for k, v in r.json().items() if k != "request_id"}


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_another_users_task_is_indistinguishable_from_a_missing_one(
    client, ada, db, prefix, method, path, body
):
    bob = User(client, "bob", prefix)
    task = ada.create(title="ada's secret")
    deleted = ada.create(title="ada's deleted")
    ada.request("DELETE", f"/{deleted['id']}")
    kwargs = {"json": body} if body is not None else {}

    theirs = bob.request(method, path.format(id=task["id"]), **kwargs)
    missing = bob.request(method, path.format(id=uuid.uuid4()), **kwargs)
    assert_error(theirs, 404, "not_found")
    assert without_request_id(theirs) == without_request_id(missing)
    # The random request id may contain "ada" as hex; the rest must not name her.
    assert "ada" not in json.dumps(without_request_id(theirs))

    # Nothing of Ada's changed.
    assert ada.request("GET", f"/{task['id']}").json() == task
    row = db.execute("SELECT deleted_at FROM tasks WHERE id = %s", (deleted["id"],)).fetchone()
    assert row[0] is not None


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_own_deleted_task_looks_missing_except_to_restore(ada, method, path, body):
    task = ada.create()
    ada.request("DELETE", f"/{task['id']}")
    kwargs = {"json": body} if body is not None else {}
    r = ada.request(method, path.format(id=task["id"]), **kwargs)
    if path.endswith("/restore"):
        assert r.status_code == 200
    else:
        missing = ada.request(method, path.format(id=uuid.uuid4()), **kwargs)
        assert_error(r, 404, "not_found")
        assert without_request_id(r) == without_request_id(missing)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_lists_show_only_own_tasks(client, prefix):
    ada, bob = User(client, "ada", prefix), User(client, "bob", prefix)
    mine = [ada.create(title=f"task of ada {i}", tags=["shared"]) for i in range(3)]
    bob.create(title="task of bob", tags=["shared"])
    listed = ada.list()
    assert {t["id"] for t in listed["tasks"]} == {t["id"] for t in mine}
    assert {t["user_id"] for t in ada.list(tag="shared", q="task")["tasks"]} == {"ada"}
    synced = ada.list(updated_since="2000-01-01T00:00:00Z")["tasks"]
    assert {t["user_id"] for t in synced} == {"ada"}


def test_tasks_are_created_for_the_token_user_only(client, db):
    ada = User(client, "ada", "/api/{user}/tasks")
    ada.create()
    assert db.execute("SELECT user_id FROM tasks").fetchall() == [("ada",)]


@pytest.mark.parametrize("prefix", ["/api/{user}/tasks", "/users/{user}/tasks"])
@pytest.mark.parametrize(
    ("method", "suffix", "kwargs"),
    [
        ("GET", "", {}),
        ("GET", "", {"params": {"limit": "0"}}),  # bad query: still 403 first
        ("POST", "", {"json": {"title": "x"}}),
        ("POST", "", {"content": b"not json"}),  # bad body: still 403 first
        ("GET", "/{id}", {}),
        ("GET", "/not-a-uuid", {}),
        ("PUT", "/{id}", {"json": {"title": "x"}}),
        ("PATCH", "/{id}", {"json": {}}),
        ("PATCH", "/{id}/complete", {}),
        ("DELETE", "/{id}", {}),
        ("POST", "/{id}/restore", {}),
    ],
)
def test_prefix_naming_another_user_is_403_before_anything_else(
    client, ada, db, caplog, prefix, method, suffix, kwargs
):
    task = ada.create()
    mallory = User(client, "mallory")
    url = prefix.format(user="ada") + suffix.format(id=task["id"])
    with caplog.at_level(logging.WARNING, logger="todo_server.tasks"):
        r = client.request(method, url, headers=mallory.headers, **kwargs)
    body = assert_error(r, 403, "forbidden")
    assert body["message"] == "You can only access your own tasks"
    assert [rec.getMessage() for rec in caplog.records if rec.name == "todo_server.tasks"] == [
        "authorization violation: user 'mallory' asked for tasks of user 'ada'"
    ]
    assert ada.request("GET", f"/{task['id']}").json() == task
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1
