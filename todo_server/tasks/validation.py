"""What a client may send about tasks, and the checks it must pass.

The limits here are the single source for validation, error messages and the
API document. They take the union of the older todo-backend contracts (title
200 or 255, description 500 or 2000), so every older client's valid input stays
valid. Every check reports a ``{"field", "message"}`` detail; all problems of
one request are reported together, and nothing is written.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import QueryParams

from todo_server.errors import ValidationFailed
from todo_server.text_rules import contains_nul
from todo_server.web.bodies import FieldErrors

logger = logging.getLogger("todo_server.task_input")

TITLE_MAX = 255
DESCRIPTION_MAX = 2000
TAGS_MAX = 20
TAG_MAX = 50
#: A search pattern's cost grows with its length (the recheck of each candidate row
#: is row length x pattern length); 100 characters find any task a person looks for.
QUERY_MAX = 100
PRIORITIES = ("low", "medium", "high")
DEFAULT_PRIORITY = "medium"
LIMIT_MIN, LIMIT_MAX, LIMIT_DEFAULT = 1, 200, 100
SORT_FIELDS = ("created_at", "updated_at", "due_at", "priority", "title")
SORTS = tuple(s for name in SORT_FIELDS for s in (name, f"-{name}"))
DEFAULT_SORT = "-created_at"

# Spellings existing frontends send, mapped onto the sorts and filters above.
#: sort=/sort_by= short names -> (field, descending unless ``order`` says otherwise).
SORT_ALIASES = {
    "created": ("created_at", True),
    "updated": ("updated_at", True),
    "due_date": ("due_at", False),
    "due": ("due_at", False),
    **{name: (name, name in ("created_at", "updated_at")) for name in SORT_FIELDS},
}
ORDERS = ("asc", "desc")
#: status= -> the completed filter (None: no filter).
STATUSES = {"all": None, "pending": False, "active": False, "completed": True}

WRITABLE_FIELDS = frozenset({"title", "description", "completed", "priority", "due_at", "tags"})
SERVER_OWNED_FIELDS = frozenset(
    {"id", "user_id", "completed_at", "created_at", "updated_at", "deleted_at", "deleted"}
)
LIST_PARAMETERS = frozenset(
    {
        "limit",
        "cursor",
        "sort",
        "completed",
        "priority",
        "tag",
        "q",
        "due_before",
        "due_after",
        "updated_since",
        "sync_token",
        "status",
        "sort_by",
        "order",
    }
)

# Client text is matched whole (fullmatch: "$" would also match before a
# trailing newline) and with ASCII classes ("\d" would also match "²" or "٣").
RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
LIMIT_TEXT = re.compile(r"[0-9]{1,9}")
NOT_A_TIMESTAMP = "must be an RFC 3339 date-time with offset"
TIMESTAMP_OUT_OF_RANGE = "must fall in years 0001 to 9999 once converted to UTC"


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 date-time with offset, in UTC; ValueError saying why when it is not one.

    A valid date-time can still leave Python's range once moved to UTC
    (``9999-12-31T23:59:00-00:01``): that is the client's problem, not an overflow.
    """
    match = RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(NOT_A_TIMESTAMP)
    date, time, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # Python keeps microseconds
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        local = datetime.fromisoformat(f"{date}T{time}{fraction}{offset}")
    except ValueError:
        raise ValueError(NOT_A_TIMESTAMP) from None
    try:
        return local.astimezone(UTC)
    except OverflowError:
        raise ValueError(TIMESTAMP_OUT_OF_RANGE) from None


def is_task_id(text: str) -> bool:
    return UUID_TEXT.fullmatch(text) is not None


def _text_problem(value: str) -> str | None:
    if contains_nul(value):
        return "must not contain NUL characters"
    return None


def parse_task_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The writable fields present in ``data``, normalized; 422 listing every problem.

    On create, ``title`` is required and defaults fill the rest; on update, at
    least one field must be given and only given fields change.
    """
    errors = FieldErrors()
    for name in sorted(set(data) - WRITABLE_FIELDS):
        errors.add(name, "is read-only" if name in SERVER_OWNED_FIELDS else "unknown field")

    fields: dict[str, Any] = {}
    if "title" in data:
        title = data["title"]
        if not isinstance(title, str):
            errors.add("title", "must be a string")
        elif not 1 <= len(title.strip()) <= TITLE_MAX:
            errors.add("title", f"must be 1 to {TITLE_MAX} characters (after trimming)")
        elif problem := _text_problem(title):
            errors.add("title", problem)
        else:
            fields["title"] = title.strip()
    elif creating:
        errors.add("title", "is required")

    if "description" in data:
        description = data["description"]
        if description is not None and not isinstance(description, str):
            errors.add("description", "must be a string or null")
        elif isinstance(description, str) and len(description) > DESCRIPTION_MAX:
            errors.add("description", f"must be at most {DESCRIPTION_MAX} characters")
        elif isinstance(description, str) and (problem := _text_problem(description)):
            errors.add("description", problem)
        else:
            fields["description"] = description

    if "completed" in data:
        if not isinstance(data["completed"], bool):
            errors.add("completed", "must be true or false")
        else:
            fields["completed"] = data["completed"]

    if "priority" in data:
        if data["priority"] not in PRIORITIES:
            errors.add("priority", f"must be one of {', '.join(PRIORITIES)}")
        else:
            fields["priority"] = data["priority"]

    if "due_at" in data:
        due_at = data["due_at"]
        if due_at is None:
            fields["due_at"] = None
        elif not isinstance(due_at, str):
            errors.add("due_at", f"{NOT_A_TIMESTAMP}, or null")
        else:
            try:
                fields["due_at"] = parse_timestamp(due_at)
            except ValueError as exc:
                problem = str(exc)
                errors.add(
                    "due_at", f"{problem}, or null" if problem == NOT_A_TIMESTAMP else problem
                )

    if "tags" in data:
        tags = _parse_tags(data["tags"], errors)
        if tags is not None:
            fields["tags"] = tags

    if not creating and not data:
        errors.add("body", "must contain at least one field to change")
    errors.raise_if_any()
    return fields


def _parse_tags(value: Any, errors: FieldErrors) -> list[str] | None:
    if not isinstance(value, list):
        errors.add("tags", "must be a list of strings")
        return None
    if len(value) > TAGS_MAX:
        errors.add("tags", f"must have at most {TAGS_MAX} tags")
        return None
    tags: list[str] = []
    for index, tag in enumerate(value):
        where = f"tags[{index}]"
        if not isinstance(tag, str):
            errors.add(where, "must be a string")
        elif not 1 <= len(tag.strip()) <= TAG_MAX:
            errors.add(where, f"must be 1 to {TAG_MAX} characters (after trimming)")
        elif problem := _text_problem(tag):
            errors.add(where, problem)
        elif tag.strip() in tags:
            errors.add(where, "repeats an earlier tag")
        else:
            tags.append(tag.strip())
    return tags


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
    # names and repeats are refused, the rest are checked below.
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
