"""Slow and greedy clients against a real server: head size, timeouts, connections, shutdown."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx2
import pytest

from devtools.liveserver import LiveServer, read_until_closed
from tests.support.database import settings_env
from tests.support.timekeeping import wait_until

LIMITS = {
    "MAX_REQUEST_HEAD_BYTES": "16384",
    "HEAD_TIMEOUT": "1",
    "BODY_TIMEOUT": "1",
    "MAX_CONNECTIONS": "50",
    "SHUTDOWN_TIMEOUT": "2",
}


OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def close_sockets():
    yield
    while OPEN:
        OPEN.pop().close()


@pytest.fixture
def server(database_url, db):
    with LiveServer(settings_env(database_url, **LIMITS)) as live:
        yield live


def connect(server: LiveServer) -> socket.socket:
    """A raw connection, closed after the test."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    OPEN.append(sock)
    return sock


def read_response(sock: socket.socket, within: float = 10) -> tuple[int | None, dict, bytes]:
    """Everything the server sends until it closes: (status, error body, raw)."""
    raw = read_until_closed(sock, within)
    if not raw:
        return None, {}, raw
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else {}, raw


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timing
def test_a_huge_header_is_431_at_a_cost_bounded_by_the_limit(server):
    pid = server.process.pid
    before = rss_kib(pid)
    health_times: list[float] = []
    stop = threading.Event()

    def poll_health() -> None:
        while not stop.is_set():
            start = time.monotonic()
            assert httpx2.get(server.base_url + "/health", timeout=10).status_code == 200
            health_times.append(time.monotonic() - start)

    poller = threading.Thread(target=poll_health)
    poller.start()
    sock = connect(server)
    sent = 0
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        chunk = b"a" * 65536
        while sent < 64 * 1024 * 1024:  # 64 MiB, as fast as we can
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, body, _ = read_response(sock)
    sock.close()
    stop.set()
    poller.join()
    assert sent < 32 * 1024 * 1024  # the server hung up long before the end
    assert status in (431, None)  # the answer may be lost in the reset; the close is not
    if status == 431:
        assert body["code"] == "request_header_fields_too_large"
    assert rss_kib(pid) - before < 20 * 1024  # not the 64 MiB it was sent
    assert health_times and max(health_times) < 1.0, health_times


def test_a_head_just_under_the_limit_is_served_and_one_over_is_431(server):
    headers = {f"x-pad-{n}": "p" * 100 for n in range(140)}  # about 15 KiB
    assert httpx2.get(server.base_url + "/health", headers=headers).status_code == 200
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 17000 + b"\r\n\r\n")
    status, body, raw = read_response(sock)
    assert status == 431 and body["code"] == "request_header_fields_too_large"
    assert b"content-type: application/json" in raw
    # Every response carries its request id, in the header and the body alike.
    assert f"x-request-id: {body['request_id']}".encode() in raw
    assert len(body["request_id"]) == 32


@pytest.mark.slow
def test_a_socket_that_sends_nothing_is_closed(server):
    sock = connect(server)
    start = time.monotonic()
    status, _, raw = read_response(sock, within=10)
    assert (status, raw) == (None, b"")  # closed, nothing to answer
    assert time.monotonic() - start < 5


@pytest.mark.slow
def test_a_dripped_head_is_408(server):
    sock = connect(server)
    start = time.monotonic()
    try:
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
            sock.sendall(bytes([byte]))
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, body, _ = read_response(sock)
    assert status == 408 and body["code"] == "request_timeout"
    assert time.monotonic() - start < 5


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/auth/login", "/api/tasks"])
def test_a_stalled_body_is_408(server, path):
    from tests.support.signing import frontend_token

    sock = connect(server)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {frontend_token('slow')}\r\nContent-Length: 100\r\n\r\n{{".encode()
    )
    start = time.monotonic()
    status, body, _ = read_response(sock)
    assert status == 408 and body["code"] == "request_timeout"
    assert time.monotonic() - start < 5
    # The server is fine afterwards, and logged no error.
    assert httpx2.get(server.base_url + "/health").status_code == 200


def test_connections_beyond_the_cap_get_503(database_url, db):
    env = settings_env(database_url, **{**LIMITS, "MAX_CONNECTIONS": "5", "HEAD_TIMEOUT": "30"})
    with LiveServer(env) as server:
        idle = [connect(server) for _ in range(5)]
        extra = connect(server)  # accepted after the five, in the order they connected
        status, body, raw = read_response(extra)
        assert status == 503 and body["code"] == "service_unavailable"
        assert b"retry-after: 2" in raw
        for sock in idle:
            sock.close()
        # The server counts them out as it notices the closes; then it serves again.
        wait_until(
            lambda: httpx2.get(server.base_url + "/health").status_code == 200,
            "the closed connections to be counted out",
        )


@pytest.mark.slow
def test_sigterm_during_a_stalled_body_exits_within_the_shutdown_timeout(database_url, db):
    env = settings_env(database_url, **{**LIMITS, "BODY_TIMEOUT": "60", "SHUTDOWN_TIMEOUT": "2"})
    server = LiveServer(env).start()
    sock = connect(server)
    sock.sendall(
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    time.sleep(0.3)  # settle: the request is in (nothing outside the server can tell)
    start = time.monotonic()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=15)
    elapsed = time.monotonic() - start
    sock.close()
    server.stop()
    assert elapsed < 5, elapsed


# --- the whole body, and connections per client address --------------------------


def connect_from(server: LiveServer, source: str) -> socket.socket:
    """A raw connection from ``source`` (another loopback address stands for another client)."""
    sock = socket.create_connection(
        ("127.0.0.1", server.port), timeout=10, source_address=(source, 0)
    )
    OPEN.append(sock)
    return sock


def drip_until_answered(sock: socket.socket, every: float, within: float) -> float:
    """Send a body one byte each ``every`` seconds (well inside BODY_TIMEOUT) until the
    server answers or closes; how long that took (fails after ``within`` seconds)."""
    start = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - start < within:
        try:
            if sock.recv(1, socket.MSG_PEEK):
                return time.monotonic() - start
            return time.monotonic() - start  # closed without a word
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - start
        try:
            sock.sendall(b" ")
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
    raise AssertionError(f"still reading a dripped body after {within} s")


def slow_post(path: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: 60000\r\n\r\n{{"
    ).encode()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/auth/login", "/api/tasks"])
def test_a_body_dripped_inside_the_stall_timeout_is_cut_off_by_the_body_deadline(
    database_url, db, path
):
    from tests.support.signing import frontend_token

    env = settings_env(database_url, **{**LIMITS, "BODY_TIMEOUT": "1", "BODY_DEADLINE": "2"})
    with LiveServer(env) as server:
        sock = connect(server)
        sock.sendall(slow_post(path, frontend_token("slow")))
        # One byte each 0.3 s never stalls for BODY_TIMEOUT, yet the whole body has 2 s.
        elapsed = drip_until_answered(sock, every=0.3, within=8)
        status, body, _ = read_response(sock)
        assert status == 408 and body["code"] == "request_timeout"
        assert body["message"] == "The request body took too long to arrive"
        assert 1.5 < elapsed < 5, elapsed
        assert httpx2.get(server.base_url + "/health").status_code == 200


@pytest.mark.slow
def test_a_slow_steady_body_within_the_deadline_is_served(database_url, db):
    env = settings_env(database_url, **{**LIMITS, "BODY_TIMEOUT": "1", "BODY_DEADLINE": "3"})
    with LiveServer(env) as server:
        body = json.dumps({"email": "slow@example.com", "password": "not-the-password"}).encode()
        sock = connect(server)
        sock.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for start in range(0, len(body), 10):  # 0.25 s apart, about 1.5 s in all
            time.sleep(0.25)
            sock.sendall(body[start : start + 10])
        status, answer, _ = read_response(sock)
        assert status == 401 and answer["code"] == "unauthorized"


@pytest.mark.slow
def test_a_body_dripped_after_an_early_answer_is_cut_off_too(database_url, db):
    # No token: the answer (401) goes out at once, and the rest of the body would
    # keep the connection open for as long as it drips.
    env = settings_env(database_url, **{**LIMITS, "BODY_TIMEOUT": "1", "BODY_DEADLINE": "2"})
    with LiveServer(env) as server:
        sock = connect(server)
        sock.sendall(slow_post("/api/tasks", None))
        start = time.monotonic()
        sock.settimeout(5)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 401 ")
        drip_until_answered(sock, every=0.3, within=8)
        elapsed = time.monotonic() - start
        assert sock.recv(65536) == b""  # closed, with nothing more to say
        assert elapsed < 5, elapsed


def test_one_address_at_its_cap_leaves_others_served_and_gets_503(database_url, db):
    env = settings_env(
        database_url, **{**LIMITS, "MAX_CONNECTIONS_PER_CLIENT": "3", "HEAD_TIMEOUT": "30"}
    )
    with LiveServer(env) as server:
        held = [connect_from(server, "127.0.0.1") for _ in range(3)]
        for sock in held:  # each one mid-body: the slowest thing a client can hold
            sock.sendall(slow_post("/auth/login", None))
        other = connect_from(server, "127.0.0.2")
        other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, _ = read_response(other)
        assert status == 200
        extra = connect_from(server, "127.0.0.1")
        status, body, raw = read_response(extra)
        assert status == 503 and body["code"] == "service_unavailable"
        assert body["message"] == "Too many open connections from your address; try again shortly"
        assert b"retry-after: 2" in raw and b"content-type: application/json" in raw
        for sock in held:
            sock.close()
        # Closed connections are counted out: the address is served again.
        wait_until(
            lambda: httpx2.get(server.base_url + "/health").status_code == 200,
            "the closed connections to be counted out",
        )


def test_a_trusted_proxy_is_not_capped_per_address(database_url, db):
    # Behind a proxy every client shares its address: the cap is the proxy's to make.
    env = settings_env(
        database_url,
        **{
            **LIMITS,
            "MAX_CONNECTIONS_PER_CLIENT": "2",
            "HEAD_TIMEOUT": "30",
            "TRUSTED_PROXIES": "127.0.0.1",
        },
    )
    with LiveServer(env) as server:
        held = [connect_from(server, "127.0.0.1") for _ in range(4)]
        for sock in held:
            sock.sendall(slow_post("/auth/login", None))
        status, _, _ = read_response_to(connect_from(server, "127.0.0.1"), b"GET /health")
        assert status == 200
        # Another peer is capped as usual.
        for _ in range(2):
            connect_from(server, "127.0.0.2").sendall(slow_post("/auth/login", None))
        status, _, _ = read_response(connect_from(server, "127.0.0.2"))
        assert status == 503
        while OPEN:  # before the server stops, or its shutdown would wait for their bodies
            OPEN.pop().close()


def read_response_to(sock: socket.socket, request_line: bytes) -> tuple[int | None, dict, bytes]:
    sock.sendall(request_line + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return read_response(sock)


@pytest.mark.slow
def test_with_the_defaults_one_address_cannot_starve_the_others(database_url, db):
    """One address opens as many body-dripping connections as a worker takes in all."""
    from todo_server.config.table import SETTINGS_BY_NAME

    total = int(SETTINGS_BY_NAME["MAX_CONNECTIONS"].default or 0)
    with LiveServer(settings_env(database_url)) as server:
        greedy = []
        for _ in range(total):
            sock = connect_from(server, "127.0.0.1")
            sock.sendall(slow_post("/auth/login", None))
            greedy.append(sock)
        # Everyone else is still served, at once.
        start = time.monotonic()
        status, _, _ = read_response_to(connect_from(server, "127.0.0.2"), b"GET /health")
        assert status == 200 and time.monotonic() - start < 2
        with httpx2.Client(transport=httpx2.HTTPTransport(local_address="127.0.0.3")) as client:
            answer = client.post(
                server.base_url + "/auth/login", json={"email": "a@example.com", "password": "x"}
            )
        assert answer.status_code in (401, 422), answer.text
        # The greedy address holds only its share; the rest of its connections were refused.
        refused = 0
        for sock in greedy:
            sock.settimeout(0.01)
            try:
                if sock.recv(65536).startswith(b"HTTP/1.1 503 "):
                    refused += 1
            except TimeoutError:
                pass
        default_cap = int(SETTINGS_BY_NAME["MAX_CONNECTIONS_PER_CLIENT"].default or 0)
        assert refused == total - default_cap
        for sock in greedy:  # or the server's shutdown would wait for their bodies
            sock.close()


@pytest.mark.slow
def test_a_response_left_unread_is_dropped_after_the_send_timeout(database_url, db):
    asset = "/docs/static/vendor/swagger-ui/swagger-ui-bundle.js"  # the largest response
    env = settings_env(database_url, **{**LIMITS, "SEND_TIMEOUT": "1"})
    with LiveServer(env) as server:
        size = len(httpx2.get(server.base_url + asset).content)
        sock = socket.socket()
        OPEN.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        # More than the kernel's buffers hold, asked for at once and never read.
        sock.sendall(f"GET {asset} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 6)
        time.sleep(4)
        received = len(read_until_closed(sock, within=10))
        # Dropped: the client reads what the buffers held, then a reset; not the rest.
        assert received < 5 * size, (received, size)
        assert httpx2.get(server.base_url + "/health").status_code == 200
        sock.close()
        output = server.stop()
    assert "Traceback" not in output and " ERROR " not in output, output
