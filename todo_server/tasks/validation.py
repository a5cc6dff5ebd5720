"""What a client may send about tasks, and the checks a task's body must pass.

The limits here are the single source for validation, error messages and the
API document: the body's fields, checked here, and the list query's
parameters, checked in ``tasks.list_query``. They take the union of the older
todo-backend contracts (title 200 or 255, description 500 or 2000), so every
older client's valid input stays valid. Every check reports a ``{"field",
"message"}`` detail; all problems of one request are reported together, and
nothing is written.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from todo_server.text_rules import contains_nul
from todo_server.web.bodies import FieldErrors

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
