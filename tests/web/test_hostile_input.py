"""Input that once reached past validation and answered 500: now a 4xx in the error format."""

from __future__ import annotations

import pytest

from tests.support.assertions import assert_error
from tests.support.signing import bearer, claims, hs256
from tests.support.task_users import PREFIXES

# Valid RFC 3339, but outside what a datetime can hold once converted to UTC.
OVERFLOWING_TIMES = ["9999-12-31T23:59:00-00:01", "0001-01-01T00:00:00+00:01"]
# Not RFC 3339 although a lenient parser takes them: non-ASCII digits, a trailing newline.
LOOKALIKE_TIMES = ["٢٠٢٦-01-01T00:00:00Z", "2026-01-01T00:00:00Z\n", "2026-01-01T00:00:00+0١:00"]
NOT_A_TIME = "must be an RFC 3339 date-time with offset"
OUT_OF_RANGE = "must fall in years 0001 to 9999 once converted to UTC"
CASES = [(text, OUT_OF_RANGE) for text in OVERFLOWING_TIMES] + [
    (text, NOT_A_TIME) for text in LOOKALIKE_TIMES
]


@pytest.fixture(params=PREFIXES)
def api_prefix(request):
    """Every test here runs under each prefix."""
    return request.param


@pytest.mark.parametrize(("text", "message"), CASES)
def test_due_at_out_of_range_or_lookalike_is_422(ada, db, text, message):
    message = message + ", or null" if message == NOT_A_TIME else message
    r = ada.request("POST", json={"title": "t", "due_at": text})
    assert assert_error(r, 422, "validation_error")["details"] == [
        {"field": "due_at", "message": message}
    ]
    task = ada.create()
    r = ada.request("PATCH", f"/{task['id']}", json={"due_at": text})
    assert assert_error(r, 422, "validation_error")["details"] == [
        {"field": "due_at", "message": message}
    ]
    assert db.execute("SELECT count(*) FROM tasks WHERE due_at IS NOT NULL").fetchone() == (0,)


@pytest.mark.parametrize("name", ["due_before", "due_after", "updated_since"])
@pytest.mark.parametrize(("text", "message"), CASES)
def test_time_filters_out_of_range_or_lookalike_are_422(ada, name, text, message):
    r = ada.request("GET", params={name: text})
    assert assert_error(r, 422, "validation_error")["details"] == [
        {"field": name, "message": message}
    ]


def test_extreme_times_that_fit_are_accepted_and_read_back(ada):
    task = ada.create(due_at="9999-12-31T23:59:59.999999+00:00")
    assert task["due_at"] == "9999-12-31T23:59:59.999999+00:00"
    task = ada.create(due_at="0001-01-01T00:01:00+00:01")
    assert task["due_at"] == "0001-01-01T00:00:00+00:00"
    assert ada.list(due_after="0001-01-01T00:00:00Z", sort="due_at")["count"] == 1


@pytest.mark.parametrize("limit", ["²", "١٠", "1" * 5000, "10\n", " 10", "+10", "0x10", "1_0"])
def test_limit_that_is_not_ascii_digits_is_422(ada, limit):
    r = ada.request("GET", params={"limit": limit})
    assert assert_error(r, 422, "validation_error")["details"] == [
        {"field": "limit", "message": "must be a whole number from 1 to 200"}
    ]


@pytest.mark.parametrize(
    ("method", "suffix", "kwargs"),
    [
        ("GET", "", {}),
        ("PUT", "", {"json": {"title": "x"}}),
        ("PATCH", "", {"json": {"title": "x"}}),
        ("DELETE", "", {}),
        ("PATCH", "/complete", {}),
        ("POST", "/restore", {}),
    ],
)
@pytest.mark.parametrize("tail", ["%0A", "%0D%0A", "%00", "%E2%80%A8"])
def test_task_id_with_a_trailing_control_character_is_404(ada, method, suffix, kwargs, tail):
    task = ada.create()
    r = ada.request(method, f"/{task['id']}{tail}{suffix}", **kwargs)
    assert assert_error(r, 404, "not_found")["message"] == "Task not found"
    assert ada.request("GET", f"/{task['id']}").json() == task


@pytest.mark.parametrize("exp", [10**400, 1e300, 253402300800])
def test_token_expiring_after_year_9999_is_401(client, exp):
    token = hs256({**claims("ada"), "exp": exp})
    r = client.get("/api/tasks", headers=bearer(token))
    assert assert_error(r, 401, "unauthorized")["message"] == "Invalid token: bad expiry"


def test_token_expiring_in_year_9999_is_accepted(client):
    token = hs256({**claims("ada"), "exp": 253402300799})
    assert client.get("/api/tasks", headers=bearer(token)).status_code == 200
