"""Conditional-request helpers: how If-Match and If-None-Match are read, and the 304.

The HTTP behaviour (412, 304 on the task routes) is in tests/tasks/test_conditional_requests.py;
these pin the parsing itself, malformed values included.
"""

from __future__ import annotations

import pytest
from starlette.requests import Request

from todo_server.web.conditional import (
    etag,
    if_match_versions,
    if_none_match,
    is_current,
    not_modified,
)


def request_with(*headers: tuple[str, str]) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


def test_a_version_s_etag_is_the_number_quoted():
    assert etag(7) == '"7"'
    assert if_match_versions(request_with(("If-Match", etag(7)))) == [7]


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"3"', [3]),
        ('"1", "2"', [1, 2]),
        (' "1" ,"2",,', [1, 2]),  # spaces around tags and empty members are skipped
        ('"007"', [7]),
        ('"123456789"', [123456789]),
        ('W/"3"', []),  # weak tags never match: If-Match compares strongly
        ('W/"3", "4"', [4]),
        ('"1234567890"', []),  # ten digits: not a version this server issues
        ('"abc"', []),
        ('"L0123abcd"', []),  # a list's ETag is no task version
        ("3", []),  # unquoted
        ('"٣"', []),  # only ASCII digits (here as UTF-8 bytes, read as Latin-1)
        ('"-1"', []),
        ("", []),  # present but empty: names no version, so nothing matches
        ('"1", *', [1]),  # "*" means any only when it stands alone
    ],
)
def test_if_match_names_strong_version_tags(header, versions):
    assert if_match_versions(request_with(("If-Match", header))) == versions


@pytest.mark.parametrize("header", ["*", " * "])
def test_if_match_star_means_any_current_version(header):
    assert if_match_versions(request_with(("If-Match", header))) is None


def test_no_if_match_means_no_condition():
    assert if_match_versions(request_with()) is None


def test_only_the_first_if_match_header_is_read():
    headers = (("If-Match", '"1"'), ("If-Match", '"2"'))
    assert if_match_versions(request_with(*headers)) == [1]


@pytest.mark.parametrize(
    ("header", "tags"),
    [
        ('"a"', {'"a"'}),
        ('W/"a"', {'"a"'}),  # weak comparison: W/ is dropped
        ('"a", W/"b" ,,"c"', {'"a"', '"b"', '"c"'}),
        ('"a", "a"', {'"a"'}),
        ("*", {"*"}),
        ('"a", *', {'"a"', "*"}),
        ('w/"a"', {'w/"a"'}),  # the prefix is case-sensitive, as RFC 9110 writes it
        ("abc", {"abc"}),  # malformed tags are kept as sent; they match nothing we issue
        ("", set()),
        (" , ", set()),
    ],
)
def test_if_none_match_names_tags_weak_or_not(header, tags):
    assert if_none_match(request_with(("If-None-Match", header))) == tags


def test_no_if_none_match_is_none():
    assert if_none_match(request_with()) is None


def test_the_copy_is_current_when_its_tag_or_star_is_named():
    assert is_current({'"1"', '"2"'}, '"2"')
    assert is_current({"*"}, '"2"')
    assert is_current({'"9"', "*"}, '"2"')
    assert not is_current({'"1"'}, '"2"')
    assert not is_current(set(), '"2"')


def test_a_weak_tag_in_if_none_match_makes_the_copy_current():
    wanted = if_none_match(request_with(("If-None-Match", f"W/{etag(5)}")))
    assert wanted is not None and is_current(wanted, etag(5))


def test_not_modified_is_304_with_the_etag_and_nothing_else():
    response = not_modified('"3"')
    assert response.status_code == 304
    assert response.body == b""
    assert response.raw_headers == [(b"etag", b'"3"')]
