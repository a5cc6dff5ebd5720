"""Conditional requests (RFC 9110 section 13): entity tags, If-Match, If-None-Match, 304.

A versioned resource's entity tag is its version number, quoted (``"7"``).
If-Match guards a write with strong comparison: only such tags count, a weak
one (``W/"7"``) never matches. If-None-Match asks "changed?" with weak
comparison: ``W/`` is dropped before comparing. What the tags of a particular
resource are made of is the caller's business.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

ETAG_VERSION = re.compile(r'"([0-9]{1,9})"')


def etag(version: int) -> str:
    """The strong entity tag of a resource's version."""
    return f'"{version}"'


def if_match_versions(request: Request) -> list[int] | None:
    """Versions named by If-Match; None when absent or ``*`` (any current version)."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    versions = []
    for tag in header.split(","):
        match = ETAG_VERSION.fullmatch(tag.strip())  # weak tags never match (strong comparison)
        if match:
            versions.append(int(match.group(1)))
    return versions


def if_none_match(request: Request) -> set[str] | None:
    """The entity tags If-None-Match names, weak or not (RFC 9110: weak comparison).

    ``*`` stands for any current representation; None when the header is absent.
    """
    header = request.headers.get("if-none-match")
    if header is None:
        return None
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def is_current(wanted: set[str], tag: str) -> bool:
    """Whether the tags If-None-Match names hold ``tag``, or ``*``: the client's copy is current."""
    return tag in wanted or "*" in wanted


def not_modified(tag: str) -> Response:
    """304: the client's copy is current; no body, its ETag again."""
    return Response(status_code=304, headers={"ETag": tag})
