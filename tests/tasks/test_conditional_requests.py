"""Conditional requests: polling frontends ask "changed?" and get 304 without a page.

A list answers an ``ETag`` made of the user's newest change and the query; the
same request with ``If-None-Match`` is 304 until any of the user's tasks
changes. A single task's ETag is its version, as for If-Match.
"""

from __future__ import annotations

import psycopg
import pytest

from devtools.postgres import as_role
from tests.support.task_users import PREFIXES, User


def poll(user: User, tag: str, suffix: str = "", **params: str):
    return user.request("GET", suffix, params=params, headers={"If-None-Match": tag})


@pytest.mark.parametrize("prefix", PREFIXES)
def test_an_unchanged_list_is_304_without_a_body(client, prefix):
    ada = User(client, "ada", prefix)
    ada.create(title="one")
    first = ada.request("GET", params={"limit": 10})
    tag = first.headers["etag"]
    assert tag.startswith('"L') and tag.endswith('"')
    again = poll(ada, tag, limit="10")
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == tag
    for form in (f"W/{tag}", f'"other", {tag}', "*"):  # weak comparison; lists; any
        assert poll(ada, form, limit="10").status_code == 304
    assert poll(ada, '"other"', limit="10").status_code == 200


@pytest.mark.parametrize(
    "write",
    [
        lambda ada, task: ada.create(title="two"),
        lambda ada, task: ada.request("PATCH", f"/{task['id']}", json={"title": "renamed"}),
        lambda ada, task: ada.request("PATCH", f"/{task['id']}/complete"),
        lambda ada, task: ada.request("DELETE", f"/{task['id']}"),
    ],
    ids=["create", "update", "complete", "delete"],
)
def test_any_write_of_the_user_changes_the_list_etag(ada, write):
    task = ada.create(title="one")
    tag = ada.request("GET").headers["etag"]
    write(ada, task)
    r = poll(ada, tag)
    assert r.status_code == 200
    assert r.headers["etag"] != tag
    assert poll(ada, r.headers["etag"]).status_code == 304


def test_a_restore_changes_it_too(ada):
    task = ada.create(title="one")
    ada.request("DELETE", f"/{task['id']}")
    tag = ada.request("GET").headers["etag"]
    assert ada.request("POST", f"/{task['id']}/restore").status_code == 200
    assert poll(ada, tag).status_code == 200


def test_the_etag_belongs_to_the_query_and_the_user(client, ada):
    bob = User(client, "bob")
    ada.create(title="one")
    bob.create(title="bob's")
    tag = ada.request("GET", params={"limit": 5}).headers["etag"]
    assert ada.request("GET", params={"limit": 6}).headers["etag"] != tag
    assert poll(ada, tag, limit="6").status_code == 200  # another page shape
    assert poll(bob, tag, limit="5").status_code == 200  # another user's
    bob.create(title="another of bob's")  # someone else's write changes nothing of ada's
    assert poll(ada, tag, limit="5").status_code == 304


def test_a_change_that_commits_late_still_changes_the_etag(ada, database_url, db):
    """Transaction ids commit out of order: a poll must not answer 304 past a late commit."""
    ada.create(title="first")
    with psycopg.connect(as_role(database_url)) as late:
        late.execute("SELECT set_config('app.user_id', 'ada', true)")
        # This transaction's id is older than the create's below, which commits first.
        late.execute("INSERT INTO tasks (user_id, title) VALUES ('ada', 'late')")
        ada.create(title="early")
        tag = ada.request("GET").headers["etag"]
        assert poll(ada, tag).status_code == 304
        late.commit()
    r = poll(ada, tag)
    assert r.status_code == 200
    assert "late" in {task["title"] for task in r.json()["tasks"]}


def test_a_task_with_its_version_is_304(ada):
    task = ada.create(title="one")
    r = ada.request("GET", f"/{task['id']}")
    tag = r.headers["etag"]
    assert poll(ada, tag, f"/{task['id']}").status_code == 304
    assert poll(ada, f"W/{tag}", f"/{task['id']}").headers["etag"] == tag
    ada.request("PATCH", f"/{task['id']}", json={"title": "renamed"})
    r = poll(ada, tag, f"/{task['id']}")
    assert r.status_code == 200 and r.json()["title"] == "renamed"


def test_conditional_requests_change_nothing_about_errors(client, ada):
    bob = User(client, "bob")
    task = bob.create(title="bob's")
    assert poll(ada, "*", f"/{task['id']}").status_code == 404  # not ada's: 404 as ever
    r = ada.request("GET", params={"limit": "0"}, headers={"If-None-Match": "*"})
    assert r.status_code == 422  # bad input first


def test_a_late_commit_changes_the_etag_while_an_older_transaction_is_open(ada, database_url, db):
    """An older transaction holds the snapshot's xmin below both changes; the ETag still moves."""
    ada.create(title="first")
    with psycopg.connect(database_url) as older, psycopg.connect(as_role(database_url)) as late:
        older.execute("SELECT pg_current_xact_id()")  # unrelated, open throughout
        late.execute("SELECT set_config('app.user_id', 'ada', true)")
        # Takes its transaction id now, before the create below, and commits after it.
        late.execute("INSERT INTO tasks (user_id, title) VALUES ('ada', 'late')")
        ada.create(title="early")
        tag = ada.request("GET").headers["etag"]
        assert poll(ada, tag).status_code == 304
        late.commit()
        r = poll(ada, tag)
        assert r.status_code == 200
        assert "late" in {task["title"] for task in r.json()["tasks"]}
        plain = ada.request("GET")
        assert plain.headers["etag"] != tag
        assert "late" in {task["title"] for task in plain.json()["tasks"]}
