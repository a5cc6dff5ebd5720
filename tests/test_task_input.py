"""Checked list queries are remembered by their raw query string, within a bound."""

from __future__ import annotations

import pytest

from todo_server import task_input
from todo_server.errors import ValidationFailed


@pytest.fixture(autouse=True)
def empty_memory():
    task_input._CHECKED_QUERIES.clear()
    yield
    task_input._CHECKED_QUERIES.clear()


def test_the_same_query_string_is_checked_once():
    first = task_input.list_query_from(b"limit=5&tag=home&sort=-due_at")
    again = task_input.list_query_from(b"limit=5&tag=home&sort=-due_at")
    assert again is first
    assert (first.limit, first.tags, first.sort) == (5, ("home",), "-due_at")
    assert first.filters() == {"tags": ["home"]}


def test_a_refused_query_string_is_refused_every_time_and_not_kept():
    for _ in range(2):
        with pytest.raises(ValidationFailed):
            task_input.list_query_from(b"limit=0")
    assert b"limit=0" not in task_input._CHECKED_QUERIES


def test_endless_new_query_strings_cost_a_bounded_memory():
    for n in range(task_input.CHECKED_QUERIES_MAX + 50):
        task_input.list_query_from(f"cursor=c{n}".encode())
    assert len(task_input._CHECKED_QUERIES) == task_input.CHECKED_QUERIES_MAX
    assert b"cursor=c0" not in task_input._CHECKED_QUERIES  # the oldest made room
    assert f"cursor=c{task_input.CHECKED_QUERIES_MAX + 49}".encode() in task_input._CHECKED_QUERIES


def test_a_long_query_string_is_checked_but_never_kept():
    long = b"cursor=" + b"x" * task_input.CHECKED_QUERY_MAX_BYTES
    query = task_input.list_query_from(long)
    assert query.cursor == "x" * task_input.CHECKED_QUERY_MAX_BYTES
    assert long not in task_input._CHECKED_QUERIES
    junk = b"zz=" + b"y" * 15_000  # an unknown parameter: ignored, and not kept either
    task_input.list_query_from(junk)
    assert task_input._CHECKED_QUERIES == {}
