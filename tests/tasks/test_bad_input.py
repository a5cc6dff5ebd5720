"""Every validation rule: 422 with field details (or 400/415), and nothing written."""

from __future__ import annotations

import pytest

from tests.support.assertions import assert_error


def task_count(db) -> int:
    return db.execute("SELECT count(*) FROM tasks").fetchone()[0]


def details_of(r) -> list[dict[str, str]]:
    return assert_error(r, 422, "validation_error")["details"]


INVALID_FIELDS = [
    ({"title": None}, "title", "must be a string"),
    ({"title": 5}, "title", "must be a string"),
    ({"title": ""}, "title", "must be 1 to 255 characters (after trimming)"),
    ({"title": "   "}, "title", "must be 1 to 255 characters (after trimming)"),
    ({"title": "t" * 256}, "title", "must be 1 to 255 characters (after trimming)"),
    ({"title": "a\x00b"}, "title", "must not contain NUL characters"),
    ({"description": "d" * 2001}, "description", "must be at most 2000 characters"),
    ({"description": 1}, "description", "must be a string or null"),
    ({"description": "a\x00"}, "description", "must not contain NUL characters"),
    ({"completed": "true"}, "completed", "must be true or false"),
    ({"completed": 1}, "completed", "must be true or false"),
    ({"completed": None}, "completed", "must be true or false"),
    ({"priority": "urgent"}, "priority", "must be one of low, medium, high"),
    ({"priority": None}, "priority", "must be one of low, medium, high"),
    ({"priority": "HIGH"}, "priority", "must be one of low, medium, high"),
    ({"due_at": "2026-12-01"}, "due_at", "must be an RFC 3339 date-time with offset, or null"),
    (
        {"due_at": "2026-12-01T10:00:00"},
        "due_at",
        "must be an RFC 3339 date-time with offset, or null",
    ),
    ({"due_at": "tomorrow"}, "due_at", "must be an RFC 3339 date-time with offset, or null"),
    (
        {"due_at": "2026-13-01T00:00:00Z"},
        "due_at",
        "must be an RFC 3339 date-time with offset, or null",
    ),
    ({"due_at": 1764547200}, "due_at", "must be an RFC 3339 date-time with offset, or null"),
    ({"tags": "home"}, "tags", "must be a list of strings"),
    ({"tags": None}, "tags", "must be a list of strings"),
    ({"tags": [f"t{i}" for i in range(21)]}, "tags", "must have at most 20 tags"),
    ({"tags": ["ok", 5]}, "tags[1]", "must be a string"),
    ({"tags": [""]}, "tags[0]", "must be 1 to 50 characters (after trimming)"),
    ({"tags": ["x" * 51]}, "tags[0]", "must be 1 to 50 characters (after trimming)"),
    ({"tags": ["a\x00"]}, "tags[0]", "must not contain NUL characters"),
    ({"tags": ["home", " home"]}, "tags[1]", "repeats an earlier tag"),
    ({"colour": "red"}, "colour", "unknown field"),
    ({"id": "3f7c5e9e-1111-4111-8111-111111111111"}, "id", "is read-only"),
    ({"user_id": "someone-else"}, "user_id", "is read-only"),
    ({"created_at": "2026-01-01T00:00:00Z"}, "created_at", "is read-only"),
    ({"updated_at": "2026-01-01T00:00:00Z"}, "updated_at", "is read-only"),
    ({"completed_at": "2026-01-01T00:00:00Z"}, "completed_at", "is read-only"),
    ({"deleted_at": None}, "deleted_at", "is read-only"),
]


@pytest.mark.parametrize(("fields", "field", "message"), INVALID_FIELDS)
def test_create_refuses_invalid_fields(ada, db, fields, field, message):
    body = {"title": "valid", **fields}
    assert details_of(ada.request("POST", json=body)) == [{"field": field, "message": message}]
    assert task_count(db) == 0


@pytest.mark.parametrize(("fields", "field", "message"), INVALID_FIELDS)
def test_update_refuses_invalid_fields_and_changes_nothing(ada, fields, field, message):
    task = ada.create(title="before")
    for method in ("PUT", "PATCH"):
        r = ada.request(method, f"/{task['id']}", json=fields)
        assert details_of(r) == [{"field": field, "message": message}]
    assert ada.request("GET", f"/{task['id']}").json() == task


@pytest.mark.parametrize(
    "fields",
    [
        {"title": "t" * 255},
        {"title": "t" * 200},
        {"title": "  padded to 255 " + "t" * 239 + "  "},
        {"description": "d" * 2000},
        {"description": ""},
        {"tags": [f"t{i}" for i in range(20)]},
        {"tags": ["x" * 50]},
        {"due_at": "2026-12-01T10:00:00.123456789Z"},
        {"due_at": "2026-12-01t10:00:00z"},
        {"due_at": "2026-12-01 10:00:00-05:30"},
        {"priority": "low"},
    ],
)
def test_limits_of_the_older_contracts_are_accepted(ada, fields):
    ada.create(**{"title": "valid", **fields})


def test_title_is_required_on_create(ada, db):
    r = ada.request("POST", json={"description": "no title"})
    assert details_of(r) == [{"field": "title", "message": "is required"}]
    assert task_count(db) == 0


def test_all_problems_are_reported_together(ada):
    r = ada.request("POST", json={"title": "", "priority": "x", "id": "y", "tags": "z"})
    assert details_of(r) == [
        {"field": "id", "message": "is read-only"},
        {"field": "title", "message": "must be 1 to 255 characters (after trimming)"},
        {"field": "priority", "message": "must be one of low, medium, high"},
        {"field": "tags", "message": "must be a list of strings"},
    ]


def test_update_with_no_fields_is_422(ada):
    task = ada.create()
    for method in ("PUT", "PATCH"):
        r = ada.request(method, f"/{task['id']}", json={})
        assert details_of(r) == [
            {"field": "body", "message": "must contain at least one field to change"}
        ]


@pytest.mark.parametrize("body", [b"[]", b'["title"]', b'"title"', b"42", b"null", b"true"])
def test_body_that_is_not_an_object_is_422(ada, db, body):
    r = ada.request("POST", content=body, headers={"Content-Type": "application/json"})
    assert details_of(r) == [{"field": "body", "message": "must be a JSON object"}]
    assert task_count(db) == 0


@pytest.mark.parametrize(
    "content",
    [b'{"title": ', b"{'title': 'x'}", b'{"title": "x"} extra', b"", b'{"title": NaN}'],
)
def test_malformed_json_is_400(ada, db, content):
    r = ada.request("POST", content=content, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")
    assert task_count(db) == 0


def test_invalid_utf8_is_400(ada, db):
    r = ada.request(
        "POST", content=b'{"title": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert assert_error(r, 400, "bad_request")["message"] == "Request body is not valid UTF-8"
    assert task_count(db) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_body_that_is_not_json_is_415(ada, db, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = ada.request("POST", content=b'{"title": "x"}', headers=headers)
    assert_error(r, 415, "unsupported_media_type")
    task = ada.create()
    r = ada.request("PATCH", f"/{task['id']}", content=b'{"title": "y"}', headers=headers)
    assert_error(r, 415, "unsupported_media_type")
    r = ada.request(
        "PATCH", f"/{task['id']}/complete", content=b'{"completed": true}', headers=headers
    )
    assert_error(r, 415, "unsupported_media_type")
    assert task_count(db) == 1


def test_json_with_charset_and_json_suffix_types_are_accepted(ada):
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = ada.request("POST", content=b'{"title": "x"}', headers={"Content-Type": content_type})
        assert r.status_code == 201


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"completed": "yes"}, [{"field": "completed", "message": "must be true or false"}]),
        ({"done": True}, [{"field": "done", "message": "unknown field"}]),
        ([True], [{"field": "body", "message": "must be a JSON object"}]),
    ],
)
def test_complete_body_is_validated(ada, body, details):
    task = ada.create()
    r = ada.request("PATCH", f"/{task['id']}/complete", json=body)
    assert details_of(r) == details
    assert ada.request("GET", f"/{task['id']}").json() == task


def test_user_id_in_a_body_never_changes_ownership(ada, client, db):
    task = ada.create()
    r = ada.request("PATCH", f"/{task['id']}", json={"user_id": "mallory"})
    assert details_of(r) == [{"field": "user_id", "message": "is read-only"}]
    r = ada.request("POST", json={"title": "x", "user_id": "mallory"})
    assert r.status_code == 422
    assert db.execute("SELECT DISTINCT user_id FROM tasks").fetchall() == [("ada",)]


def test_overlong_idempotency_key_is_422(ada, db):
    r = ada.request("POST", json={"title": "x"}, headers={"Idempotency-Key": "k" * 256})
    assert details_of(r) == [
        {"field": "Idempotency-Key", "message": "must be 1 to 255 printable ASCII characters"}
    ]
    assert task_count(db) == 0


def test_lone_surrogate_is_400_but_escaped_pairs_are_fine(ada, db):
    r = ada.request(
        "POST", content=b'{"title": "bad \\ud800"}', headers={"Content-Type": "application/json"}
    )
    assert_error(r, 400, "bad_request")
    assert task_count(db) == 0
    r = ada.request(
        "POST",
        content=b'{"title": "ok \\ud83d\\ude00"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 201
    assert r.json()["title"] == "ok \U0001f600"


def test_deeply_nested_json_is_400(ada, db):
    r = ada.request(
        "POST", content=b"[" * 30000 + b"]" * 30000, headers={"Content-Type": "application/json"}
    )
    assert_error(r, 400, "bad_request")
