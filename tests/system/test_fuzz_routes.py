"""Property: whatever a client sends to any route, the answer is never a 5xx.

Hypothesis draws a route and method (allowed or not), path segments, query
parameters (the contract's names and junk; values with Unicode digits,
newlines, extreme dates), the headers a client controls (Authorization with
tokens carrying odd claims, If-Match, Idempotency-Key, Origin) and bodies (JSON
objects with the contract's field names and arbitrary values, or raw bytes).
Every error must be the one JSON error shape, and every header sendable.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.signing import TEST_SECRET, claims, hs256
from tests.support.task_users import PREFIXES
from todo_server.auth import passwords
from todo_server.tasks.page_tokens import CursorCodec, PageToken
from todo_server.tasks.validation import LIST_PARAMETERS

USER = "fuzz"
EXISTING = "existing"  # stands for the id of a task the user really has

ROUTES = [
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/signup"),
    ("POST", "/auth/signin"),
    ("GET", "/auth/me"),
]
for _prefix in PREFIXES:
    ROUTES += [
        ("GET", _prefix),
        ("POST", _prefix),
        ("GET", _prefix + "/{task}"),
        ("PUT", _prefix + "/{task}"),
        ("PATCH", _prefix + "/{task}"),
        ("DELETE", _prefix + "/{task}"),
        ("PATCH", _prefix + "/{task}/complete"),
        ("POST", _prefix + "/{task}/restore"),
    ]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Values that once got past validation, or might: Unicode digits, trailing
# newlines, NULs, dates that overflow in UTC, numbers past any range.
TRICKY_TEXT = ["", " ", "²", "١٠", "1" * 5000, "-1", "1e400", "NaN", "\x00", "%", "*"]
TRICKY_TEXT += ["9999-12-31T23:59:00-00:01", "0001-01-01T00:00:00+00:01", "ユーザー"]
SUFFIXES = ["\n", "\r\n", "\x00", "²", " ", "\u2028", "0" * 30]
TIMES = ["2026-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z", "0001-01-01T00:00:00Z"]
tricky = st.sampled_from(TRICKY_TEXT)
text = st.one_of(tricky, st.text(max_size=40))


def spiced(*usual: str) -> st.SearchStrategy[str]:
    """A plausible value, the same with a tricky suffix, a tricky value, or any text."""
    plausible = st.sampled_from(usual)
    with_suffix = st.builds(str.__add__, plausible, st.sampled_from(SUFFIXES))
    return st.one_of(plausible, with_suffix, tricky, st.text(max_size=40))


def mostly(usual: Any, strategy: st.SearchStrategy) -> st.SearchStrategy:
    """``usual`` four times in five, so most requests get past the first check."""
    return st.integers(0, 4).flatmap(lambda n: strategy if n == 0 else st.just(usual))


json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**400, -(10**400), 1e308, -0.0]),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=8,
)
# The contract's fields with values that are often valid, and sometimes anything.
task_fields = st.fixed_dictionaries(
    {},
    optional={
        "title": st.one_of(spiced("a task"), json_value),
        "description": st.one_of(spiced("words"), json_value),
        "completed": st.one_of(st.booleans(), json_value),
        "priority": st.one_of(spiced("low", "medium", "high"), json_value),
        "due_at": st.one_of(spiced(*TIMES), json_value),
        "tags": st.one_of(st.lists(spiced("home"), max_size=3), json_value),
        "email": spiced("fuzz@example.com"),
        "password": spiced("password-1"),
        "name": st.one_of(spiced("Fuzz"), json_value),
        "username": spiced("fuzz@example.com"),
        "user_id": text,
        "id": text,
    },
)
json_object = st.one_of(task_fields, st.dictionaries(text, json_value, max_size=4))
as_json = json_object.map(lambda data: ("application/json", json.dumps(data).encode()))
body = st.one_of(
    as_json,
    as_json,
    st.none(),
    st.tuples(
        st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]),
        st.binary(max_size=64),
    ),
)
# Signed by the server's own key, so only the values inside are odd.
_codec = CursorCodec(TEST_SECRET)
SIGNED_ODDITIES = [
    _codec.encode(PageToken(sort, value, last_id))
    for sort in ("sync-token", "changes", "-created_at")
    for value in (
        "0",
        "12:34",
        "99999999999999999999999",
        "-1",
        "x:y",
        "1:99999999999999999999",
        None,
    )
    for last_id in ("", "00000000-0000-0000-0000-000000000001", "zz")
]
QUERY_VALUES = {
    "limit": spiced("1", "50", "200"),
    "cursor": spiced("abc.def", *SIGNED_ODDITIES),
    "sort": spiced("-created_at", "due_at", "title", "created", "due_date"),
    "sort_by": spiced("created", "updated", "title", "due_at"),
    "order": spiced("asc", "desc"),
    "status": spiced("all", "pending", "active", "completed"),
    "completed": spiced("true", "false"),
    "priority": spiced("low", "high"),
    "tag": spiced("home"),
    "q": spiced("milk"),
    "due_before": spiced(*TIMES),
    "due_after": spiced(*TIMES),
    "updated_since": spiced(*TIMES),
    "sync_token": spiced(*SIGNED_ODDITIES),
}
assert set(QUERY_VALUES) == LIST_PARAMETERS  # every parameter of the contract is fuzzed
query = st.lists(
    st.one_of(
        *(st.tuples(st.just(name), values) for name, values in QUERY_VALUES.items()),
        st.tuples(text, text),
    ),
    max_size=3,
)
claim = st.one_of(
    st.sampled_from([10**400, 1e300, 2**63, 253402300800, -1, "4102444800", None]), json_scalar
)
now_claims = claims(USER)
token = st.one_of(
    st.builds(
        lambda sub, exp, iat: hs256({"sub": sub, "exp": exp, "iat": iat}),
        mostly(USER, text),
        mostly(now_claims["exp"], claim),
        mostly(now_claims["iat"], claim),
    ),
    text,
)
header_value = text.map(lambda value: value.encode("utf-8"))
headers = st.fixed_dictionaries(
    {},
    optional={
        "authorization": st.one_of(token.map(lambda t: f"Bearer {t}".encode()), header_value),
        "if-match": st.one_of(st.sampled_from([b'"1"', b'"2", W/"1"', b"*"]), header_value),
        "idempotency-key": header_value,
        "origin": st.sampled_from([b"http://localhost:3000", b"https://evil.example.com"]),
        "access-control-request-method": st.sampled_from([b"GET", b"PATCH", b"TRACE"]),
        "x-request-id": header_value,
    },
)
# An allowed method and route mostly; sometimes any method on any route.
route = st.one_of(
    st.sampled_from(ROUTES),
    st.sampled_from(ROUTES),
    st.sampled_from(ROUTES),
    st.tuples(st.sampled_from(METHODS), st.sampled_from([path for _, path in ROUTES])),
)
segment = mostly(
    EXISTING,
    st.one_of(
        st.uuids().map(str),
        st.builds(str.__add__, st.just(EXISTING), st.sampled_from(SUFFIXES)),
        text,
    ),
)


@pytest.fixture
def fuzz_client(client, monkeypatch):
    """The app with cheap password hashing: scrypt's cost is not what is fuzzed here."""
    monkeypatch.setattr(passwords, "SCRYPT_N", 2**4)
    r = client.post("/api/tasks", json={"title": "t"}, headers={"Authorization": _bearer()})
    assert r.status_code == 201
    client.existing_task = r.json()["id"]
    return client


def _bearer() -> str:
    return f"Bearer {hs256(claims(USER))}"


def _path(template: str, user: str, task: str, existing: str) -> str:
    task = task.replace(EXISTING, existing)
    return template.format(user=quote(user, safe=""), task=quote(task, safe=""))


@pytest.mark.slow
@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method_and_template=route,
    user=mostly(USER, text),
    task=segment,
    params=query,
    sent_headers=headers,
    sent_body=body,
)
def test_no_request_gets_a_5xx(
    fuzz_client,
    method_and_template: tuple[str, str],
    user: str,
    task: str,
    params: list[tuple[str, str]],
    sent_headers: dict[str, bytes],
    sent_body: tuple[str, bytes] | None,
) -> None:
    method, template = method_and_template
    request_headers: dict[str, Any] = {"authorization": _bearer().encode(), **sent_headers}
    content = None
    if sent_body is not None:
        request_headers["content-type"], content = sent_body
    r = fuzz_client.request(
        method,
        _path(template, user, task, fuzz_client.existing_task),
        params=params,
        headers=request_headers,
        content=content,
    )
    event(f"{method} {r.status_code}")
    assert r.status_code < 500, r.text
    for name, value in r.headers.raw:
        assert all(0x20 <= byte < 0x7F for byte in name + value), (name, value)
    if r.status_code >= 400 and method != "HEAD":
        assert r.headers["content-type"] == "application/json", r.text
        assert set(r.json()) == {"code", "message", "details", "request_id", "detail"}
