"""The one error body, byte for byte, from both of its writers.

``web.error_responses`` answers what the application raises; ``web.http_protocol``
writes what is refused before the application sees a request. Both take the
body from ``errors.error_body``: compact JSON, keys in one order, UTF-8 text
as it is (no ``\\u`` escapes for what UTF-8 can carry).
"""

from __future__ import annotations

import pytest

from todo_server import errors
from todo_server.web import http_protocol
from todo_server.web.error_responses import api_error_response, error_response


def test_the_body_is_compact_json_with_its_keys_in_order():
    body = errors.error_body("not_found", "Task not found", request_id="r-1")
    assert body == (
        b'{"code":"not_found","message":"Task not found","details":null,'
        b'"request_id":"r-1","detail":"Task not found"}'
    )


def test_the_body_keeps_utf8_text_and_escapes_what_json_must():
    body = errors.error_body("bad_request", 'T\u00e4sk "\u2713"\n\x00', details=[{"f": "\u00ef"}])
    assert body == (
        b'{"code":"bad_request","message":"T\xc3\xa4sk \\"\xe2\x9c\x93\\"\\n\\u0000",'
        b'"details":[{"f":"\xc3\xaf"}],"request_id":null,'
        b'"detail":"T\xc3\xa4sk \\"\xe2\x9c\x93\\"\\n\\u0000"}'
    )


def test_an_application_error_response_carries_the_body_and_the_errors_headers():
    response = api_error_response(errors.ServiceUnavailable(), "r-2")
    assert response.status_code == 503
    assert response.body == errors.error_body(
        "service_unavailable", errors.ServiceUnavailable.default_message, request_id="r-2"
    )
    assert response.headers["retry-after"] == str(errors.RETRY_AFTER_SECONDS)
    assert response.headers["content-type"] == "application/json"
    last_resort = error_response(500, "internal_error", "Internal server error")
    assert last_resort.body == errors.error_body("internal_error", "Internal server error")


@pytest.mark.parametrize(
    "error",
    [
        errors.BadRequest("Invalid HTTP request"),
        errors.RequestTimeout("The request head took too long to arrive"),
        errors.HeadTooLarge(http_protocol.HEAD_TOO_LARGE.format(16384)),
        errors.ServiceUnavailable("Too many open connections; try again shortly"),
    ],
)
def test_a_refusal_written_by_the_protocol_is_the_same_body(monkeypatch, error):
    monkeypatch.setattr(http_protocol.secrets, "token_hex", lambda n: "f" * (2 * n))
    raw = http_protocol.error_bytes(error)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == errors.error_body(error.code, error.message, request_id="f" * 32)
    assert body == api_error_response(error, "f" * 32).body
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 %d %s" % (error.status, http_protocol.REASONS[error.status])
    assert lines[1:7] == [
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
        b"cache-control: no-store",
        b"x-content-type-options: nosniff",
        b"x-request-id: " + b"f" * 32,
    ]
    assert lines[7:] == [f"{k.lower()}: {v}".encode() for k, v in error.headers.items()]
