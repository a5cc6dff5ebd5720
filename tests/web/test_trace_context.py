"""W3C Trace Context: a valid ``traceparent`` is followed into the log and answered with ours."""

from __future__ import annotations

import json
import re
import socket

import httpx2
import pytest

from todo_server.web.middleware import parse_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"
OURS = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

#: Not a traceparent: each is ignored as if absent.
INVALID = {
    "empty": "",
    "uppercase trace id": f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
    "uppercase flags": f"00-{TRACE_ID}-{PARENT_ID}-0A",
    "uppercase version": f"0A-{TRACE_ID}-{PARENT_ID}-01",
    "all-zero trace id": f"00-{'0' * 32}-{PARENT_ID}-01",
    "all-zero parent id": f"00-{TRACE_ID}-{'0' * 16}-01",
    "version ff": f"ff-{TRACE_ID}-{PARENT_ID}-01",
    "trace id too short": f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
    "trace id too long": f"00-{TRACE_ID}a-{PARENT_ID}-01",
    "parent id too short": f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01",
    "flags of one digit": f"00-{TRACE_ID}-{PARENT_ID}-1",
    "flags of three digits": f"00-{TRACE_ID}-{PARENT_ID}-011",
    "version of one digit": f"0-{TRACE_ID}-{PARENT_ID}-01",
    "version 00 with a field more": f"00-{TRACE_ID}-{PARENT_ID}-01-what",
    "version 00 with junk": f"00-{TRACE_ID}-{PARENT_ID}-01junk",
    "later version, junk without a dash": f"01-{TRACE_ID}-{PARENT_ID}-01junk",
    "not hex": f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
    "underscores": f"00_{TRACE_ID}_{PARENT_ID}_01",
    "a space inside": f"00-{TRACE_ID} -{PARENT_ID}-01",
    "two values joined": f"{VALID},{VALID}",
    "a forged log line": f"{VALID} 2026-01-01 00:00:00,000 ERROR todo_server.auth [x] forged",
    "a forged JSON field": f'{VALID}", "level": "error',
}


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_traceparent_is_not_read(value):
    assert parse_traceparent(value.encode()) is None


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE_ID}-{PARENT_ID}-01\x1b[31m",
        f"00-{TRACE_ID}-{PARENT_ID}-01\n2026-01-01 forged",
        f"00-{TRACE_ID}\x00-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-01\u2028",
    ],
)
def test_a_traceparent_with_control_characters_is_not_read(value):
    assert parse_traceparent(value.encode()) is None


def test_valid_traceparents_give_their_trace_id_and_flags():
    assert parse_traceparent(VALID.encode()) == (TRACE_ID, b"01")
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-00".encode()) == (TRACE_ID, b"00")
    # A later version is read by version 00's rules; its further fields are its own.
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-09".encode()) == (TRACE_ID, b"09")
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the".encode()) == (
        TRACE_ID,
        b"01",
    )
    # Optional whitespace around a field value is not part of it (RFC 9110).
    assert parse_traceparent(f" {VALID}\t".encode()) == (TRACE_ID, b"01")


def test_a_valid_traceparent_is_answered_with_its_trace_and_our_span(client):
    r = client.get("/health", headers={"traceparent": VALID})
    match = OURS.fullmatch(r.headers["traceparent"])
    assert match is not None, r.headers["traceparent"]
    trace_id, span_id, flags = match.groups()
    assert (trace_id, flags) == (TRACE_ID, "01")
    assert span_id not in (PARENT_ID, "0" * 16)
    again = client.get("/health", headers={"traceparent": VALID}).headers["traceparent"]
    assert again.split("-")[2] != span_id  # a new span per request
    # The flags are the caller's, and a later version is answered in ours.
    r = client.get("/api/tasks", headers={"traceparent": f"cc-{TRACE_ID}-{PARENT_ID}-00-x"})
    assert r.status_code == 401
    assert r.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert r.headers["traceparent"].endswith("-00")
    # Version 00 defines one flag, sampled; its other bits are sent as zero (W3C).
    for sent, answered in (("ff", "01"), ("09", "01"), ("fe", "00")):
        r = client.get("/health", headers={"traceparent": f"cc-{TRACE_ID}-{PARENT_ID}-{sent}"})
        assert r.headers["traceparent"].endswith(f"-{answered}"), sent


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_traceparent_is_not_echoed(client, value):
    r = client.get("/health", headers={"traceparent": value})
    assert r.status_code == 200
    assert "traceparent" not in r.headers


def test_no_traceparent_no_echo_and_two_are_none(client):
    assert "traceparent" not in client.get("/health").headers
    two = [("traceparent", VALID), ("traceparent", f"00-{'1' * 32}-{PARENT_ID}-01")]
    assert "traceparent" not in client.get("/health", headers=two).headers


def _requests_to_a_live_server(database_url: str, log_format: str) -> tuple[str, list[str]]:
    """The server's log after requests with a valid, invalid and hostile traceparent.

    Each request has an id of its own (``traced``, ``invalid-<n>``, ``raw``) and writes two
    lines: the authentication refusal (no token) and the access line. Returns the log and
    the ``traceparent`` the traced request was answered with.
    """
    from devtools.liveserver import LiveServer
    from tests.support.database import settings_env

    env = settings_env(database_url, LOG_FORMAT=log_format)
    answered: list[str] = []
    with LiveServer(env) as server:
        r = httpx2.get(
            server.base_url + "/api/tasks", headers={"traceparent": VALID, "X-Request-ID": "traced"}
        )
        assert r.status_code == 401
        answered.append(r.headers["traceparent"])
        for number, value in enumerate(INVALID.values()):
            r = httpx2.get(
                server.base_url + "/api/tasks",
                headers={"traceparent": value, "X-Request-ID": f"invalid-{number}"},
            )
            assert r.status_code == 401 and "traceparent" not in r.headers, value
        # Bytes no HTTP client library would send: control characters and obs-text.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"GET /api/tasks HTTP/1.1\r\nHost: x\r\nX-Request-ID: raw\r\n"
                b"traceparent: 00-" + TRACE_ID.encode() + b"-" + PARENT_ID.encode() + b"-01"
                b"\x1b[2J\x7f\xc2\x85 forged\r\nConnection: close\r\n\r\n"
            )
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        assert b"traceparent" not in raw.lower()
    return server.output, answered


@pytest.mark.slow
def test_every_json_log_line_of_a_traced_request_has_its_trace_id(database_url, db):
    output, [answered] = _requests_to_a_live_server(database_url, "json")
    assert answered.startswith(f"00-{TRACE_ID}-")
    entries = [json.loads(line) for line in output.splitlines()]  # every line is one object
    traced = [entry for entry in entries if entry["request_id"] == "traced"]
    assert [entry["logger"] for entry in traced] == ["todo_server.auth", "todo_server.access"]
    assert all(entry["trace_id"] == TRACE_ID for entry in traced), traced
    assert list(traced[1])[:6] == ["time", "level", "logger", "message", "request_id", "trace_id"]
    untraced = [entry for entry in entries if entry["request_id"] != "traced"]
    assert len([e for e in untraced if str(e["request_id"]).startswith("invalid-")]) == 2 * len(
        INVALID
    )
    assert not any("trace_id" in entry for entry in untraced), untraced
    assert not any(entry["level"] == "error" for entry in entries)
    assert "forged" not in output and "\x1b" not in output and "\x85" not in output


@pytest.mark.slow
def test_every_text_log_line_of_a_traced_request_has_its_trace_id(database_url, db):
    output, _ = _requests_to_a_live_server(database_url, "text")
    lines = output.splitlines()
    traced = [line for line in lines if "[traced" in line]
    assert len(traced) == 2, output
    assert all(f"[traced trace={TRACE_ID}] " in line for line in traced), traced
    assert "todo_server.auth" in traced[0] and "todo_server.access" in traced[1]
    assert not any("trace=" in line for line in lines if "[traced" not in line), output
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert "forged" not in output and "\x1b" not in output and "\x85" not in output


def test_a_browser_on_an_allowed_origin_may_send_and_read_traceparent(client):
    """OpenTelemetry's browser fetch instrumentation asks in a preflight first."""
    origin = "http://localhost:3000"
    r = client.options(
        "/api/tasks",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, traceparent, tracestate",
        },
    )
    assert r.status_code == 200, r.text
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"traceparent", "tracestate"} <= allowed
    r = client.get("/health", headers={"Origin": origin, "traceparent": VALID})
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert "traceparent" in exposed and r.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
