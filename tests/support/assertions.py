"""What every error response must look like, asserted in one place for all the tests."""

from __future__ import annotations

from typing import Any

#: RFC 6750's challenge for a refused token, up to its reason.
INVALID = 'Bearer error="invalid_token", error_description="'


def assert_error(r, status: int, code: str) -> dict[str, Any]:
    """``r`` is the service's one error body with ``status`` and ``code``; returns the body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"code", "message", "details", "request_id", "detail"}
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["detail"] == body["message"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def assert_401(
    r,
    why: str | None = None,
    *,
    message: str | None = None,
    www_authenticate: str | None = None,
) -> dict[str, Any]:
    """A 401; for a refused token, its reason ``why`` in the challenge and the message."""
    body = assert_error(r, 401, "unauthorized")
    assert body["details"] is None
    if www_authenticate is not None:
        assert r.headers["www-authenticate"] == www_authenticate
        return body
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith(INVALID) and challenge.endswith('"'), challenge
    given = challenge[len(INVALID) : -1]
    if why is not None:
        assert given == why, challenge
    if message is None:
        message = "Token has expired" if given == "expired" else f"Invalid token: {given}"
    assert body["message"] == message
    return body


def assert_503(r) -> dict[str, Any]:
    """Unavailable for now: the client is told to retry in two seconds."""
    body = assert_error(r, 503, "service_unavailable")
    assert r.headers["retry-after"] == "2"
    return body
