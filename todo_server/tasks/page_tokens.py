"""Opaque, signed keyset-pagination cursors (page tokens).

A page token carries the sort it belongs to and the last row's sort value and
id; clients see it encoded, as ``cursor``/``next_cursor`` (and ``sync_token``).
It is signed with a key derived from the server secret, so a client cannot
forge one to steer the query; a tampered or foreign cursor is a 422.

The class is ``PageToken``, not ``Cursor``: the code that runs a page also
holds psycopg cursors, and the two must not be confused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from todo_server.errors import ValidationFailed

MAX_CURSOR_LENGTH = 1024

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class PageToken:
    """Where a page ended: what the client's next ``cursor`` decodes to."""

    sort: str  # e.g. "-created_at"; "changes" for a sync's pages; "sync-token" for its token
    value: str | None  # the last row's sort value, as PostgreSQL text
    id: str  # the last row's id


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and checks cursors with a key derived from ``secret``."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"todo-server cursor v1", hashlib.sha256).digest()

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest()[:16])

    def encode(self, token: PageToken) -> str:
        payload = json.dumps([token.sort, token.value, token.id], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._sign(payload)}"

    def decode(self, text: str, expected_sort: str, field: str = "cursor") -> PageToken:
        """The cursor in ``text``; 422 when it was tampered with or belongs to another sort."""
        invalid = ValidationFailed.field(field, f"is not a {field} this server issued")
        if len(text) > MAX_CURSOR_LENGTH or text.count(".") != 1:
            raise invalid
        body, signature = text.split(".")
        try:
            payload = _unb64(body)
            if not hmac.compare_digest(self._sign(payload), signature):
                raise invalid
            sort, value, last_id = json.loads(payload)
        except (ValueError, TypeError):
            raise invalid from None
        if not isinstance(sort, str) or not isinstance(last_id, str):
            raise invalid
        if last_id and not UUID_TEXT.fullmatch(last_id):
            raise invalid
        if value is not None and not isinstance(value, str):
            raise invalid
        if sort != expected_sort:
            raise ValidationFailed.field(field, f"belongs to another {kind(expected_sort)}")
        return PageToken(sort, value, last_id)


def kind(sort: str) -> str:
    """What a mismatched cursor belongs to, for the error message."""
    return {"changes": "kind of listing", "sync-token": "kind of token"}.get(sort, "sort order")


#: Which database's transaction ids a sync token or cursor counts in (``tasks.sync.database_id``).
DATABASE_ID = re.compile(r"[0-9a-f]{16}")


def encode_sync_token(codec: CursorCodec, floor: int, database: str) -> str:
    """The opaque token a client sends as ``sync_token`` for its next sync."""
    return codec.encode(PageToken("sync-token", f"{floor}@{database}", ""))


def _transaction_id(text: str | None) -> int | None:
    """A transaction id as PostgreSQL's bigint holds it, or None."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def _database(text: str) -> tuple[str, str | None] | None:
    """``text`` without its ``@database`` and that database; None when that is malformed.

    Tokens issued before they named their database have none: they are judged
    by their transaction ids alone.
    """
    ids, at, database = text.partition("@")
    if not at:
        return ids, None
    return (ids, database) if DATABASE_ID.fullmatch(database) else None


def decode_sync_token(codec: CursorCodec, text: str) -> tuple[int, str | None]:
    """(floor, database) from a sync token; 422 when it is not one this server issued."""
    value = codec.decode(text, "sync-token", field="sync_token").value or ""
    parts = _database(value)
    floor = _transaction_id(parts[0]) if parts is not None else None
    if parts is None or floor is None:
        raise ValidationFailed.field("sync_token", "is not a sync_token this server issued")
    return floor, parts[1]


def encode_changes_cursor(
    codec: CursorCodec, floor: int, last_xid: int, last_id: str, database: str
) -> str:
    """The cursor to a sync's next page: its first page's floor and the last row's key."""
    return codec.encode(PageToken("changes", f"{floor}:{last_xid}@{database}", last_id))


def decode_changes_cursor(codec: CursorCodec, text: str) -> tuple[int, int, str, str | None]:
    """(floor, last transaction id, last task id, database) from a sync page's cursor; else 422."""
    token = codec.decode(text, "changes")
    parts = _database(token.value or "")
    floor_text, _, xid_text = parts[0].partition(":") if parts is not None else ("", "", "")
    floor, last_xid = _transaction_id(floor_text), _transaction_id(xid_text)
    if parts is None or floor is None or last_xid is None or not UUID_TEXT.fullmatch(token.id):
        raise ValidationFailed.field("cursor", "is not a cursor this server issued")
    return floor, last_xid, token.id, parts[1]
