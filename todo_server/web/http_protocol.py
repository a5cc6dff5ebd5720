"""Limits uvicorn's HTTP protocol lacks: head size, head and body read timeouts, connections.

uvicorn's httptools protocol buffers a request head of any size (memory grows
with the header, and its worker stalls meanwhile) and waits for ever
on a client that sends nothing, or drips its head or body a byte at a time.
``LimitedHttpToolsProtocol`` is that protocol with these limits, each answered
in the API's one JSON error shape and followed by closing the connection:

- a request line plus headers over ``MAX_REQUEST_HEAD_BYTES``: 431, checked
  before the bytes reach the parser, so the cost is bounded by the limit;
- a head not complete within ``HEAD_TIMEOUT`` seconds of its first byte (or of
  the connection opening): 408 (a connection that sent nothing is just closed);
- a body that stalls for ``BODY_TIMEOUT`` seconds between two chunks, or is
  not complete ``BODY_DEADLINE`` seconds after its head however steadily it
  drips: 408 (one timer serves both; a chunk only notes the time);
- a response left unread for ``SEND_TIMEOUT`` seconds once the send buffer is
  full (uvicorn would wait for the client for ever): the connection is
  dropped, with no status, as the response has begun;
- beyond ``MAX_CONNECTIONS`` open connections in this worker: 503;
- beyond ``MAX_CONNECTIONS_PER_CLIENT`` open connections from one client
  address (an IPv6 /64 counts as one) in this worker: 503, so one address
  cannot take every connection. Peers in ``TRUSTED_PROXIES`` are not capped:
  all their clients share their address, and the proxy is the place for a cap
  per client.

Idle keep-alive connections are closed by uvicorn's own keep-alive timeout, and
``SHUTDOWN_TIMEOUT`` bounds a graceful shutdown (uvicorn's
``timeout_graceful_shutdown``). The limits are read from the settings once per
process, so each worker started by uvicorn finds them itself.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from todo_server import metrics
from todo_server.config import ConnectionLimits, load_settings
from todo_server.errors import (
    ApiError,
    BadRequest,
    HeadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    error_body,
)
from todo_server.web.client_addresses import ConnectionCounts, client_key, uncapped
from todo_server.web.coalescing import CoalescingTransport

HEAD_END = b"\r\n\r\n"

REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class HeadTooLargeInParser(Exception):
    """Raised in a parser callback to stop httptools at a head over the limit."""


def error_bytes(error: ApiError) -> bytes:
    """A whole HTTP response in the API's error shape, closing the connection.

    It is written before the request (if any) could be read, so its id is always
    a new one: the client's X-Request-ID may be in the part never read.
    """
    request_id = secrets.token_hex(16)
    body = error_body(error.code, error.message, request_id=request_id)
    head = [
        b"HTTP/1.1 %d %s" % (error.status, REASONS[error.status]),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
        b"cache-control: no-store",
        b"x-content-type-options: nosniff",
        b"x-request-id: " + request_id.encode("ascii"),
    ]
    for name, value in error.headers.items():  # Retry-After on 503
        head.append(f"{name.lower()}: {value}".encode("latin-1"))
    return b"\r\n".join(head) + HEAD_END + body


HEAD_TOO_LARGE = "Request line and headers must be at most {} bytes"
PER_CLIENT_REFUSAL = "Too many open connections from your address; try again shortly"


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits in this module's docstring."""

    #: Set once per process from the settings (``process_limits``).
    _limits: ClassVar[ConnectionLimits | None] = None
    #: Open connections in this process per client address (``client_key``).
    _per_client: ClassVar[ConnectionCounts] = ConnectionCounts()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = self.process_limits()
        self._in_head = True  # the next bytes belong to a request head
        self._awaiting_body = False  # headers done, body not complete yet
        self._head_bytes = 0
        self._tail = b""  # the last bytes seen, for a head end split across reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._body_deadline = 0.0  # loop time by which the body must be complete
        self._body_last = 0.0  # loop time of the body's last chunk
        self._counted_as: str | None = None  # the key this connection counts under
        self._parsed_head = 0  # bytes of the head the parser is in, counted by its callbacks
        self._head_overflow = False
        self._refusal: ApiError | None = None  # waiting for an earlier answer to go out

    @classmethod
    def process_limits(cls) -> ConnectionLimits:
        """The limits, read from the settings once in each worker process.

        uvicorn builds protocols itself, with no way to hand them the settings the CLI
        already loaded; with several workers each is a fresh process, so each reads
        the same environment once, on its first connection.
        """
        if cls._limits is None:
            settings = load_settings()
            cls._limits = settings.connection_limits
        return cls._limits

    # --- connection ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Each response's head and body in one send (coalescing.py). Flow
        # control keeps the real transport: it pauses and resumes reading.
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        if len(self.connections) > self.limits.max_connections:
            self._refuse(ServiceUnavailable("Too many open connections; try again shortly"))
            return
        if self._count_client() > self.limits.max_connections_per_client > 0:
            self._refuse(ServiceUnavailable(PER_CLIENT_REFUSAL))
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._cancel_send_timer()
        if self._counted_as is not None:
            self._per_client.remove(self._counted_as)
            self._counted_as = None
        super().connection_lost(exc)

    def _count_client(self) -> int:
        """Count this connection under its client's key; how many that key has now
        (0 when it is not counted: no cap, no peer address, or a trusted proxy)."""
        limits = self.limits
        if limits.max_connections_per_client == 0 or self.client is None:
            return 0
        host = self.client[0]
        if limits.uncapped_peers and uncapped(host, limits.uncapped_peers):
            return 0
        self._counted_as = key = client_key(host)
        return self._per_client.add(key)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:  # refused already: nothing more is read
            return
        if self._in_head:
            room = self.limits.max_head_bytes - self._head_bytes
            if len(data) > room:
                # Over the limit unless the head ends within it.
                seen = self._tail + data
                end = seen.find(HEAD_END)
                if end < 0 or end + len(HEAD_END) - len(self._tail) > room:
                    self._refuse(HeadTooLarge(HEAD_TOO_LARGE.format(self.limits.max_head_bytes)))
                    return
            self._head_bytes += len(data)
            self._tail = (self._tail + data)[-(len(HEAD_END) - 1) :]
        elif self._body_timer is not None:  # a body chunk: the stall clock starts again
            self._body_last = self.loop.time()
        super().data_received(data)
        # Timers only for what is still incomplete after this read: a request
        # that arrives whole (the usual case) costs no timer at all.
        if self.transport.is_closing():
            return
        if self._in_head:
            if self._head_bytes and self._head_timer is None:
                self._arm_head_timer()
        elif self._awaiting_body and self._body_timer is None:
            self._start_body_clock()

    # --- parser callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._parsed_head = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._parsed_head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # The read-level check above sees a head only up to the first end of a
        # head in a read; a second request pipelined in the same read is counted
        # here, header by header, before uvicorn keeps it.
        self._parsed_head += len(name) + len(value) + 4
        if self._parsed_head > self.limits.max_head_bytes:
            self._head_overflow = True
            raise HeadTooLargeInParser  # httptools stops; uvicorn calls send_400_response
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what it cannot parse, in the API's error shape."""
        if self._head_overflow:
            self._refuse(HeadTooLarge(HEAD_TOO_LARGE.format(self.limits.max_head_bytes)))
        else:
            self._refuse(BadRequest("Invalid HTTP request"))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        refusal = self._refusal
        if refusal is not None and not self._earlier_request_in_flight():
            self._refusal = None
            self._refuse(refusal)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._awaiting_body = True
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaiting_body = False
        self._cancel_body_timer()
        # Whatever follows is the next request's head.
        self._in_head, self._head_bytes, self._tail = True, 0, b""
        super().on_message_complete()

    # --- timers -------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _start_body_clock(self) -> None:
        """The body is incomplete at the end of the read that ended its head: from now,
        it may stall BODY_TIMEOUT at a time and take BODY_DEADLINE in all."""
        now = self.loop.time()
        self._body_last = now
        self._body_deadline = now + self.limits.body_deadline
        self._body_timer = self.loop.call_at(self._body_due(), self._body_check)

    def _body_due(self) -> float:
        return min(self._body_last + self.limits.body_timeout, self._body_deadline)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _cancel_timers(self) -> None:
        """The read timers; the send timer stays, as a refusal's close must flush."""
        self._cancel_head_timer()
        self._cancel_body_timer()

    # --- a client that does not read ---------------------------------------------

    def pause_writing(self) -> None:
        """The send buffer is full: the client has SEND_TIMEOUT to read some of it."""
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        self._cancel_send_timer()
        super().resume_writing()

    def _send_timed_out(self) -> None:
        # close() would wait for the unread bytes to go out: drop them and the connection.
        self._send_timer = None
        self.transport.abort()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:  # never said anything: nobody to answer
            self.transport.close()
            return
        self._refuse(RequestTimeout("The request head took too long to arrive"))

    def _body_check(self) -> None:
        """The body's timer: chunks only note their time, so it is re-armed here, once
        per BODY_TIMEOUT at most, rather than on every chunk."""
        self._body_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if now >= self._body_deadline:
            message = "The request body took too long to arrive"
        elif now - self._body_last >= self.limits.body_timeout:
            message = "The request body stalled; send it without pauses"
        else:
            self._body_timer = self.loop.call_at(self._body_due(), self._body_check)
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # too late for a status: just end it
            return
        self._refuse(RequestTimeout(message))

    def _earlier_request_in_flight(self) -> bool:
        """A request before the one being read is still being answered (or waits to be)."""
        cycle = self.cycle
        return self._in_head and (
            bool(self.pipeline) or (cycle is not None and not cycle.response_complete)
        )

    def _refuse(self, error: ApiError) -> None:
        """Answer ``error`` in the error shape and close; the app sees a disconnect.

        When the refused bytes are a pipelined request's head and earlier
        requests on the connection are still being answered, their answers go
        out first (a write that was made must be reported) and the refusal
        follows them; nothing more is read meanwhile.
        """
        self._cancel_timers()
        if self._earlier_request_in_flight() and not self.transport.is_closing():
            self._refusal = error
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The app must not answer on this connection any more.
            self.cycle.response_started = True
            self.cycle.response_complete = True
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        metrics.protocol_refusal(error.status)
        self.transport.write(error_bytes(error))
        self.transport.close()
