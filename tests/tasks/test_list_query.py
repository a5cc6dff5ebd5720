"""The list query: what one pass over the parameters keeps, and the memory of checked strings."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from todo_server.errors import ValidationFailed
from todo_server.tasks import list_query


@pytest.fixture(autouse=True)
def empty_memory():
    list_query._checked_query.cache_clear()
    yield
    list_query._checked_query.cache_clear()


def kept() -> int:
    return list_query._checked_query.cache_info().currsize


def test_the_same_query_string_is_checked_once():
    first = list_query.list_query_from(b"limit=5&tag=home&sort=-due_at")
    again = list_query.list_query_from(b"limit=5&tag=home&sort=-due_at")
    assert again is first
    assert (first.limit, first.tags, first.sort) == (5, ("home",), "-due_at")
    assert first.filters() == {"tags": ["home"]}


def test_a_refused_query_string_is_refused_every_time_and_not_kept():
    for _ in range(2):
        with pytest.raises(ValidationFailed):
            list_query.list_query_from(b"limit=0")
    assert kept() == 0


def test_endless_new_query_strings_cost_a_bounded_memory():
    polled = list_query.list_query_from(b"limit=50&sort=-updated_at")
    for n in range(list_query.CHECKED_QUERIES_MAX + 50):
        list_query.list_query_from(f"cursor=c{n}".encode())
        list_query.list_query_from(b"limit=50&sort=-updated_at")
    assert kept() == list_query.CHECKED_QUERIES_MAX
    # The string polled all along is still the one remembered; the oldest others made room.
    assert list_query.list_query_from(b"limit=50&sort=-updated_at") is polled
    misses = list_query._checked_query.cache_info().misses
    list_query.list_query_from(b"cursor=c0")
    assert list_query._checked_query.cache_info().misses == misses + 1


def test_a_long_query_string_is_checked_but_never_kept():
    long = b"cursor=" + b"x" * list_query.CHECKED_QUERY_MAX_BYTES
    query = list_query.list_query_from(long)
    assert query.cursor == "x" * list_query.CHECKED_QUERY_MAX_BYTES
    junk = b"zz=" + b"y" * 15_000  # an unknown parameter: ignored, and not kept either
    list_query.list_query_from(junk)
    assert kept() == 0


def test_unknown_names_are_ignored_a_repeat_is_refused_and_tag_may_repeat():
    query = list_query.parse_list_query(QueryParams("colour=red&tag=a&tag=b&colour=blue"))
    assert query == list_query.ListQuery(tags=("a", "b"))
    with pytest.raises(ValidationFailed) as refused:
        list_query.parse_list_query(QueryParams("limit=5&limit=6&limit=7&sort=title&sort=title"))
    assert refused.value.details == [
        {"field": "limit", "message": "must be given at most once"},
        {"field": "sort", "message": "must be given at most once"},
    ]
