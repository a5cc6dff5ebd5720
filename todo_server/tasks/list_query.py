"""The ``GET .../tasks`` query: its parameters checked into a ``ListQuery``.

A list request names a page (``limit``, ``cursor``), a sort and filters, or
asks for changes instead (``sync_token``, ``updated_since``). The limits and
choices come from ``tasks.validation``, the single source the API document
reads too; ``tasks.listing`` and ``tasks.sync`` run what the query asks for.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.datastructures import QueryParams

from todo_server.errors import ValidationFailed
from todo_server.tasks.validation import (
    DEFAULT_SORT,
    LIMIT_DEFAULT,
    LIMIT_MAX,
    LIMIT_MIN,
    LIST_PARAMETERS,
    ORDERS,
    PRIORITIES,
    QUERY_MAX,
    SORT_ALIASES,
    SORTS,
    STATUSES,
    TAG_MAX,
    TAGS_MAX,
    parse_timestamp,
)
from todo_server.text_rules import contains_nul
from todo_server.web.bodies import FieldErrors

logger = logging.getLogger("todo_server.task_input")

# Matched whole, and "[0-9]" rather than "\d", which would also match "²" or "٣".
LIMIT_TEXT = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class ListQuery:
    """A validated ``GET .../tasks`` query."""

    limit: int = LIMIT_DEFAULT
    cursor: str | None = None
    sort: str = DEFAULT_SORT
    completed: bool | None = None
    priority: str | None = None
    tags: tuple[str, ...] = ()
    q: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    updated_since: datetime | None = None
    sync_token: str | None = None

    @property
    def syncing(self) -> bool:
        """Whether this asks for changes (an incremental sync) rather than a listing."""
        return self.updated_since is not None or self.sync_token is not None

    def filters(self) -> dict[str, Any]:
        """The filters this query asks for, by name (the keys of tasks.listing.LIST_FILTERS)."""
        candidates = {
            "completed": self.completed,
            "priority": self.priority,
            "tags": list(self.tags),  # a list: psycopg adapts lists to arrays
            "q": self.q,
            "due_before": self.due_before,
            "due_after": self.due_after,
        }
        return {name: value for name, value in candidates.items() if value not in (None, [])}


def _parse_sort(given: dict[str, str], values: dict[str, Any], errors: FieldErrors) -> None:
    """``sort`` (a sort, or a short name) or ``sort_by`` (a short name), with ``order``."""
    if "sort" in given and "sort_by" in given:
        errors.add("sort_by", "give sort or sort_by, not both")
        return
    name = "sort_by" if "sort_by" in given else "sort"
    text = given.get(name)
    order = given.get("order")
    if order is not None and order not in ORDERS:
        errors.add("order", "must be asc or desc")
        return
    if text is None:
        if order is not None:  # the default sort's field, in this order
            values["sort"] = ("-" if order == "desc" else "") + DEFAULT_SORT.lstrip("-")
        return
    if text.startswith("-") and text in SORTS and name == "sort":
        if order == "asc":
            errors.add("order", "contradicts the sort's '-' (descending)")
        else:
            values["sort"] = text
        return
    alias = SORT_ALIASES.get(text)
    if alias is None:
        allowed = [*SORTS, *(a for a in SORT_ALIASES if a not in SORTS)]
        choices = allowed if name == "sort" else list(SORT_ALIASES)
        errors.add(name, f"must be one of {', '.join(choices)}")
        return
    column, descending = alias
    if order is not None:
        descending = order == "desc"
    elif name == "sort" and text in SORTS:
        descending = False  # the contract's sort=title: ascending, as always
    values["sort"] = ("-" if descending else "") + column


#: Query strings remembered with what they meant. Bounded: client input.
CHECKED_QUERIES_MAX = 1024
#: Longer query strings are checked each time and never kept: the ones polled
#: again and again are short (``limit=50&sort=-updated_at``), and a page's
#: cursor or a client's junk would only push them out.
CHECKED_QUERY_MAX_BYTES = 128


def list_query_from(query_string: bytes) -> ListQuery:
    """``parse_list_query`` of a raw query string, remembered for the next time.

    A polling frontend sends the same few query strings again and again; the
    answer depends on nothing but the string, so it is checked once. Only
    short strings that pass are kept (a cursor or sync token in one is still
    verified on every request, by the handler), at most CHECKED_QUERIES_MAX of
    them, the least recently used making room. ``ListQuery`` is frozen and
    shared: handlers never change it.
    """
    if len(query_string) <= CHECKED_QUERY_MAX_BYTES:
        return _checked_query(query_string)
    return parse_list_query(QueryParams(query_string))


@functools.lru_cache(maxsize=CHECKED_QUERIES_MAX)
def _checked_query(query_string: bytes) -> ListQuery:
    """``list_query_from`` for a short query string (a refused one raises, and is not kept)."""
    return parse_list_query(QueryParams(query_string))


def parse_list_query(params: QueryParams) -> ListQuery:
    """Check every query parameter; 422 listing every problem."""
    errors = FieldErrors()
    values: dict[str, Any] = {}
    # One pass over what was sent (this runs on every list request): unknown
    # names are ignored, a name given twice is refused (but ``tag`` may repeat:
    # each one is a tag to filter by), the rest are checked below.
    given: dict[str, str] = {}
    repeated: set[str] = set()
    tags: list[str] = []
    for name, value in params.multi_items():
        if name == "tag":
            tags.append(value)
        elif name not in LIST_PARAMETERS:
            # Ignored, as FastAPI and most APIs do: frontends send their own extras.
            logger.debug("ignoring unknown query parameter %r", name)
        elif name not in given:
            given[name] = value
        elif name not in repeated:
            repeated.add(name)
            errors.add(name, "must be given at most once")

    if (limit := given.get("limit")) is not None:
        if not LIMIT_TEXT.fullmatch(limit) or not LIMIT_MIN <= int(limit) <= LIMIT_MAX:
            errors.add("limit", f"must be a whole number from {LIMIT_MIN} to {LIMIT_MAX}")
        else:
            values["limit"] = int(limit)
    if (cursor := given.get("cursor")) is not None:
        values["cursor"] = cursor
    if (sync_token := given.get("sync_token")) is not None:
        values["sync_token"] = sync_token
    _parse_sort(given, values, errors)
    if (completed := given.get("completed")) is not None:
        if completed not in ("true", "false"):
            errors.add("completed", "must be true or false")
        elif "status" in given:
            errors.add("status", "give status or completed, not both")
        else:
            values["completed"] = completed == "true"
    if (status := given.get("status")) is not None:
        if status not in STATUSES:
            errors.add("status", f"must be one of {', '.join(STATUSES)}")
        elif STATUSES[status] is not None:
            values["completed"] = STATUSES[status]
    if (priority := given.get("priority")) is not None:
        if priority not in PRIORITIES:
            errors.add("priority", f"must be one of {', '.join(PRIORITIES)}")
        else:
            values["priority"] = priority
    if tags:
        if len(tags) > TAGS_MAX:
            errors.add("tag", f"must be given at most {TAGS_MAX} times")
        elif any(not 1 <= len(tag) <= TAG_MAX or contains_nul(tag) for tag in tags):
            errors.add("tag", f"must be 1 to {TAG_MAX} characters")
        else:
            values["tags"] = tuple(tags)
    if (q := given.get("q")) is not None:
        if not 1 <= len(q) <= QUERY_MAX or contains_nul(q):
            errors.add("q", f"must be 1 to {QUERY_MAX} characters")
        elif "\x1f" in q:  # joins title and description in the search index
            errors.add("q", "must not contain U+001F")
        else:
            values["q"] = q
    for name in ("due_before", "due_after", "updated_since"):
        if (text := given.get(name)) is not None:
            try:
                values[name] = parse_timestamp(text)
            except ValueError as exc:
                errors.add(name, str(exc))
    errors.raise_if_any()

    query = ListQuery(**values)
    if query.syncing and (query.filters() or "sort" in values):
        field = "sync_token" if query.sync_token is not None else "updated_since"
        raise ValidationFailed.field(
            field, "cannot be combined with filters or sort (changes come oldest first)"
        )
    return query
