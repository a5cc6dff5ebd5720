"""Every way to a 422, each answered with its whole body: ``details`` names what was refused.

One case per place in the package that raises ``ValidationFailed`` (the tasks
API's and the accounts' alike), so a client can always tell which field, query
parameter, header or limit refused it, and
``test_every_validation_failed_in_the_package_names_what_it_refused`` keeps new
ones from arriving without ``details``.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import todo_server
from tests.support.assertions import assert_error
from tests.support.signing import TEST_SECRET
from tests.support.task_users import User
from todo_server.tasks.page_tokens import CursorCodec, PageToken

REQUEST_ID = {"X-Request-ID": "why-422"}
Case = Callable[..., Any]
CASES: dict[str, Case] = {}


def case(function: Case) -> Case:
    CASES[function.__name__] = function
    return function


def body(message: str, *details: tuple[str, str]) -> dict[str, Any]:
    return {
        "code": "validation_error",
        "message": message,
        "details": [{"field": field, "message": text} for field, text in details],
        "request_id": REQUEST_ID["X-Request-ID"],
        "detail": message,
    }


INVALID = "Invalid input"


# --- limits of the user's account --------------------------------------------------------


@case
def create_over_the_live_task_quota(make_client, db):
    ada = User(make_client(MAX_TASKS_PER_USER="2"), "ada")
    ada.create(), ada.create()
    r = ada.request("POST", json={"title": "third"}, headers=REQUEST_ID)
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 2
    return r, body(
        "Task limit reached: at most 2 tasks per user; delete some before creating more",
        ("MAX_TASKS_PER_USER", "is 2: the user has that many live tasks; delete some first"),
    )


@case
def restore_over_the_live_task_quota(make_client, db):
    ada = User(make_client(MAX_TASKS_PER_USER="1"), "ada")
    deleted = ada.create()
    ada.request("DELETE", f"/{deleted['id']}")
    ada.create()
    r = ada.request("POST", f"/{deleted['id']}/restore", headers=REQUEST_ID)
    assert assert_error(ada.request("GET", f"/{deleted['id']}"), 404, "not_found")
    return r, body(
        "Task limit reached: at most 1 tasks per user; delete some before creating more",
        ("MAX_TASKS_PER_USER", "is 1: the user has that many live tasks; delete some first"),
    )


@case
def delete_over_the_deleted_task_cap(make_client, db):
    ada = User(make_client(MAX_DELETED_TASKS_PER_USER="1", TASK_RETENTION_DAYS="7"), "ada")
    ada.request("DELETE", f"/{ada.create()['id']}")
    kept = ada.create()
    r = ada.request("DELETE", f"/{kept['id']}", headers=REQUEST_ID)
    assert ada.request("GET", f"/{kept['id']}").status_code == 200  # nothing changed
    return r, body(
        "Too many deleted tasks kept for restore: at most 1; deleted tasks are purged 7 days"
        " after deletion",
        (
            "MAX_DELETED_TASKS_PER_USER",
            "is 1: the user keeps that many deleted tasks for restore, each until it is"
            " purged 7 days after its deletion",
        ),
    )


# --- the body ----------------------------------------------------------------------------


@case
def create_with_an_invalid_field(ada, db):
    r = ada.request("POST", json={"title": " ", "tags": "x"}, headers=REQUEST_ID)
    return r, body(
        INVALID,
        ("title", "must be 1 to 255 characters (after trimming)"),
        ("tags", "must be a list of strings"),
    )


@case
def update_with_no_field(ada, db):
    task = ada.create()
    r = ada.request("PATCH", f"/{task['id']}", json={}, headers=REQUEST_ID)
    return r, body(INVALID, ("body", "must contain at least one field to change"))


@case
def body_that_is_not_an_object(ada, db):
    r = ada.request("POST", json=["title"], headers=REQUEST_ID)
    return r, body(INVALID, ("body", "must be a JSON object"))


@case
def completion_that_is_not_a_boolean(ada, db):
    task = ada.create()
    r = ada.request(
        "PATCH", f"/{task['id']}/complete", json={"completed": "yes", "x": 1}, headers=REQUEST_ID
    )
    return r, body(INVALID, ("x", "unknown field"), ("completed", "must be true or false"))


# --- Idempotency-Key ---------------------------------------------------------------------


@case
def idempotency_key_too_long(ada, db):
    r = ada.request(
        "POST", json={"title": "t"}, headers={**REQUEST_ID, "Idempotency-Key": "k" * 256}
    )
    return r, body(INVALID, ("Idempotency-Key", "must be 1 to 255 printable ASCII characters"))


@case
def idempotency_key_with_another_body(ada, db):
    ada.request("POST", json={"title": "first"}, headers={"Idempotency-Key": "k"})
    r = ada.request("POST", json={"title": "other"}, headers={**REQUEST_ID, "Idempotency-Key": "k"})
    return r, body(INVALID, ("Idempotency-Key", "was already used with a different request body"))


@case
def idempotency_key_claimed_but_not_answered(ada, db):
    # What a create still running under this key looks like from outside it.
    ada.create()
    db.execute(
        "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ('ada', 'busy', 'h')"
    )
    r = ada.request("POST", json={"title": "t"}, headers={**REQUEST_ID, "Idempotency-Key": "busy"})
    return r, body(INVALID, ("Idempotency-Key", "is in use; retry shortly"))


# --- the list's query string -------------------------------------------------------------


@case
def list_parameter_out_of_range(ada, db):
    r = ada.request("GET", params={"limit": "0", "status": "done"}, headers=REQUEST_ID)
    return r, body(
        INVALID,
        ("limit", "must be a whole number from 1 to 200"),
        ("status", "must be one of all, pending, active, completed"),
    )


@case
def sync_with_a_sort(ada, db):
    r = ada.request(
        "GET", params={"updated_since": "2000-01-01T00:00:00Z", "sort": "title"}, headers=REQUEST_ID
    )
    return r, body(
        INVALID,
        ("updated_since", "cannot be combined with filters or sort (changes come oldest first)"),
    )


@case
def cursor_not_issued_here(ada, db):
    r = ada.request("GET", params={"cursor": "forged.cursor"}, headers=REQUEST_ID)
    return r, body(INVALID, ("cursor", "is not a cursor this server issued"))


@case
def cursor_of_another_sort(ada, db):
    ada.create(), ada.create()
    cursor = ada.list(limit=1, sort="title")["next_cursor"]
    r = ada.request("GET", params={"cursor": cursor}, headers=REQUEST_ID)
    return r, body(INVALID, ("cursor", "belongs to another sort order"))


@case
def signed_cursor_whose_value_the_database_refuses(ada, db):
    ada.create()
    odd = PageToken("due_at", "not a date", "00000000-0000-0000-0000-000000000001")
    cursor = CursorCodec(TEST_SECRET).encode(odd)
    r = ada.request("GET", params={"cursor": cursor, "sort": "due_at"}, headers=REQUEST_ID)
    return r, body(INVALID, ("cursor", "is not a cursor this server issued"))


@case
def sync_token_not_issued_here(ada, db):
    r = ada.request("GET", params={"sync_token": "forged.token"}, headers=REQUEST_ID)
    return r, body(INVALID, ("sync_token", "is not a sync_token this server issued"))


@case
def sync_token_with_an_odd_floor(ada, db):
    token = CursorCodec(TEST_SECRET).encode(PageToken("sync-token", "-1", ""))
    r = ada.request("GET", params={"sync_token": token}, headers=REQUEST_ID)
    return r, body(INVALID, ("sync_token", "is not a sync_token this server issued"))


@case
def sync_page_cursor_with_odd_insides(ada, db):
    token = ada.list(updated_since="2000-01-01T00:00:00Z")["sync_token"]
    cursor = CursorCodec(TEST_SECRET).encode(PageToken("changes", "x", ""))
    r = ada.request("GET", params={"sync_token": token, "cursor": cursor}, headers=REQUEST_ID)
    return r, body(INVALID, ("cursor", "is not a cursor this server issued"))


# --- accounts ----------------------------------------------------------------------------


@case
def register_with_invalid_fields(client, db):
    r = client.post(
        "/auth/register",
        json={"email": "not an address", "password": "short", "role": "admin"},
        headers=REQUEST_ID,
    )
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    return r, body(
        INVALID,
        ("role", "unknown field"),
        ("email", "must be an email address like name@example.com"),
        ("password", "must be 8 to 1024 characters"),
    )


@case
def login_form_without_a_password(client, db):
    r = client.post("/auth/login", data={"username": "ada@example.com"}, headers=REQUEST_ID)
    return r, body(INVALID, ("password", "is required"))


@pytest.mark.parametrize("name", CASES)
def test_a_422_names_what_it_refused(name, request):
    function = CASES[name]
    fixtures = {arg: request.getfixturevalue(arg) for arg in inspect.signature(function).parameters}
    r, expected = function(**fixtures)
    assert_error(r, 422, "validation_error")
    assert r.json() == expected


def test_every_validation_failed_in_the_package_names_what_it_refused():
    """``ValidationFailed(...)`` always with ``details``; ``ValidationFailed.field`` names one."""
    package = Path(todo_server.__file__).parent
    bare = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called_bare = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "ValidationFailed"
                and not any(keyword.arg == "details" for keyword in node.keywords)
            )
            raised_bare = (
                isinstance(node, ast.Raise)
                and isinstance(node.exc, ast.Name)
                and node.exc.id == "ValidationFailed"
            )
            if called_bare or raised_bare:
                bare.append(f"{path.relative_to(package)}:{node.lineno}")
    assert bare == []
