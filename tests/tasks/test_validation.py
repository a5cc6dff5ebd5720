"""Checked list queries are remembered by their raw query string, within a bound."""

from __future__ import annotations

import pytest

from todo_server.errors import ValidationFailed
from todo_server.tasks import validation


@pytest.fixture(autouse=True)
def empty_memory():
    validation._checked_query.cache_clear()
    yield
    validation._checked_query.cache_clear()


def kept() -> int:
    return validation._checked_query.cache_info().currsize


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
    assert kept() == 0


def test_endless_new_query_strings_cost_a_bounded_memory():
    polled = validation.list_query_from(b"limit=50&sort=-updated_at")
    for n in range(validation.CHECKED_QUERIES_MAX + 50):
        validation.list_query_from(f"cursor=c{n}".encode())
        validation.list_query_from(b"limit=50&sort=-updated_at")
    assert kept() == validation.CHECKED_QUERIES_MAX
    # The string polled all along is still the one remembered; the oldest others made room.
    assert validation.list_query_from(b"limit=50&sort=-updated_at") is polled
    misses = validation._checked_query.cache_info().misses
    validation.list_query_from(b"cursor=c0")
    assert validation._checked_query.cache_info().misses == misses + 1


def test_a_long_query_string_is_checked_but_never_kept():
    long = b"cursor=" + b"x" * validation.CHECKED_QUERY_MAX_BYTES
    query = validation.list_query_from(long)
    assert query.cursor == "x" * validation.CHECKED_QUERY_MAX_BYTES
    junk = b"zz=" + b"y" * 15_000  # an unknown parameter: ignored, and not kept either
    validation.list_query_from(junk)
    assert kept() == 0
