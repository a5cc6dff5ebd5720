"""Checked list queries are remembered by their raw query string, within a bound."""

from __future__ import annotations

import pytest

from todo_server.errors import ValidationFailed
from todo_server.tasks import validation


@pytest.fixture(autouse=True)
def empty_memory():
    validation._CHECKED_QUERIES.clear()
    yield
    validation._CHECKED_QUERIES.clear()


def test_the_same_query_string_is_checked_once():
    first = validation.list_query_from(b"limit=5&tag=home&sort=-due_at")
    again = validation.list_query_from(b"limit=5&tag=home&sort=-due_at")
    assert again is first
    assert (first.limit, first.tags, first.sort) == (5, ("home",), "-due_at")
    assert first.filters() == {"tags": ["home"]}


def test_a_refused_query_string_is_refused_every_time_and_not_kept():
    for _ in range(2):
        with pytest.raises(ValidationFailed):
            validation.list_query_from(b"limit=0")
    assert b"limit=0" not in validation._CHECKED_QUERIES


def test_endless_new_query_strings_cost_a_bounded_memory():
    for n in range(validation.CHECKED_QUERIES_MAX + 50):
        validation.list_query_from(f"cursor=c{n}".encode())
    assert len(validation._CHECKED_QUERIES) == validation.CHECKED_QUERIES_MAX
    assert b"cursor=c0" not in validation._CHECKED_QUERIES  # the oldest made room
    assert f"cursor=c{validation.CHECKED_QUERIES_MAX + 49}".encode() in validation._CHECKED_QUERIES


def test_a_long_query_string_is_checked_but_never_kept():
    long = b"cursor=" + b"x" * validation.CHECKED_QUERY_MAX_BYTES
    query = validation.list_query_from(long)
    assert query.cursor == "x" * validation.CHECKED_QUERY_MAX_BYTES
    assert long not in validation._CHECKED_QUERIES
    junk = b"zz=" + b"y" * 15_000  # an unknown parameter: ignored, and not kept either
    validation.list_query_from(junk)
    assert validation._CHECKED_QUERIES == {}
