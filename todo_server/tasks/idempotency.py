"""Idempotency-Key for POST: a retried create returns the first response and creates nothing.

The key is claimed with an INSERT inside the create's transaction. A second
request with the same key blocks on that row until the first commits, then
finds the stored response and replays it, so two concurrent requests with one
key make one task. A create that fails (quota) rolls its claim back, so a retry
is tried afresh. Keys live 24 hours; an expired key is taken over.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from todo_server.errors import ValidationFailed
from todo_server.storage.row_security import UserConnection

MAX_KEY_LENGTH = 255
KEY_LIFETIME = "24 hours"
KEY_LIFETIME_SECONDS = 24 * 3600  # the same, for the purge

# An expired key of the same name is taken over; other expired keys are the
# purge's (todo_server/purge.py): the runtime role may not delete them.
CLAIM_KEY_SQL = f"""
INSERT INTO idempotency_keys AS k (user_id, key, request_hash)
VALUES (%(user_id)s, %(key)s, %(request_hash)s)
ON CONFLICT (user_id, key) DO UPDATE
    SET request_hash = excluded.request_hash, status = NULL, task_id = NULL,
        response = NULL, created_at = now()
    WHERE k.created_at < now() - interval '{KEY_LIFETIME}'
RETURNING k.key
"""

STORED_RESPONSE_SQL = """
SELECT request_hash, status, task_id::text AS task_id, response
FROM idempotency_keys
WHERE user_id = %(user_id)s AND key = %(key)s
"""

SAVE_RESPONSE_SQL = """
UPDATE idempotency_keys
SET status = %(status)s, task_id = %(task_id)s, response = %(response)s
WHERE user_id = %(user_id)s AND key = %(key)s
"""


@dataclass(frozen=True)
class StoredResponse:
    status: int
    task_id: str
    body: str


def checked_key(header: str | None) -> str | None:
    """The Idempotency-Key header, or None when absent; 422 when unusable."""
    if header is None:
        return None
    key = header.strip()
    if not 1 <= len(key) <= MAX_KEY_LENGTH or any(not " " <= c <= "~" for c in key):
        raise ValidationFailed.field(
            "Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def request_hash(body: dict[str, Any]) -> str:
    """A fingerprint of the request body, insensitive to key order and spacing."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim(conn: UserConnection, user_id: str, key: str, fingerprint: str) -> bool:
    """True when this request owns the key (call inside the create's transaction)."""
    result = await conn.execute(
        CLAIM_KEY_SQL, {"user_id": user_id, "key": key, "request_hash": fingerprint}
    )
    return await result.fetchone() is not None


async def stored_response(
    conn: UserConnection, user_id: str, key: str, fingerprint: str
) -> StoredResponse | None:
    """The first response for this key; 422 when the key came with another body."""
    result = await conn.execute(STORED_RESPONSE_SQL, {"user_id": user_id, "key": key})
    row = await result.fetchone()
    if row is None or row["response"] is None:
        return None
    if row["request_hash"] != fingerprint:
        raise ValidationFailed.field(
            "Idempotency-Key", "was already used with a different request body"
        )
    return StoredResponse(row["status"], row["task_id"], row["response"])


async def save_response(
    conn: UserConnection, user_id: str, key: str, status: int, task_id: str, body: str
) -> None:
    await conn.execute(
        SAVE_RESPONSE_SQL,
        {"user_id": user_id, "key": key, "status": status, "task_id": task_id, "response": body},
    )
