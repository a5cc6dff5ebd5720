"""Pipelined requests on one connection: every answer goes out, each limit holds per request.

A client may send several requests in one write. A refusal of a later one
must not swallow the answer to an earlier one that already ran (a create the
client would retry), and the head-size limit holds for each request, not only
for the first in a read.
"""

from __future__ import annotations

import json
import re
import socket

import httpx2
import pytest

from devtools.liveserver import LiveServer, read_until_closed
from tests.support.database import settings_env
from tests.support.signing import frontend_token

TOKEN = frontend_token("pipeliner")
LIMIT = 16384


@pytest.fixture
def server(database_url, db):
    env = settings_env(database_url, MAX_REQUEST_HEAD_BYTES=str(LIMIT), HEAD_TIMEOUT="2")
    with LiveServer(env) as live:
        yield live


def exchange(server: LiveServer, payload: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``payload`` in one write; every response until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(payload)
        raw = read_until_closed(sock)
    responses = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        responses.append((status, headers, rest[:length]))
        raw = rest[length:]
    return responses


def create(title: str) -> bytes:
    body = json.dumps({"title": title}).encode()
    return (
        b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


def titles(server: LiveServer) -> list[str]:
    r = httpx2.get(server.base_url + "/api/tasks", headers={"Authorization": f"Bearer {TOKEN}"})
    return [task["title"] for task in r.json()["tasks"]]


def test_a_create_is_answered_before_the_oversize_head_behind_it_is_refused(server):
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 150_000 + b"\r\n\r\n"
    answers = exchange(server, create("ghost-431") + big)
    assert [status for status, _, _ in answers] == [201, 431]
    assert json.loads(answers[0][2])["title"] == "ghost-431"
    assert json.loads(answers[1][2])["code"] == "request_header_fields_too_large"
    assert titles(server) == ["ghost-431"]


def test_a_create_is_answered_before_the_unparsable_request_behind_it_is_refused(server):
    answers = exchange(server, create("ghost-400") + b"BLAH\r\n\r\n")
    assert [status for status, _, _ in answers] == [201, 400]
    error = json.loads(answers[1][2])
    assert error["code"] == "bad_request" and error["detail"] == error["message"]
    assert answers[1][1]["content-type"] == "application/json"
    assert titles(server) == ["ghost-400"]


def test_the_head_limit_holds_for_a_request_pipelined_behind_a_small_one(server):
    small = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    big = b"GET /auth/me HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    answers = exchange(server, small + big)
    assert [status for status, _, _ in answers] == [200, 431]


def test_a_request_uvicorn_cannot_parse_is_refused_in_the_error_format(server):
    [(status, headers, body)] = exchange(server, b"get / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert json.loads(body)["request_id"] == headers["x-request-id"]
