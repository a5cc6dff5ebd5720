"""One send per response: the writes of one event-loop turn leave together."""

from __future__ import annotations

import asyncio
import socket

from todo_server.web.coalescing import CoalescingTransport


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport


async def _pair() -> tuple[asyncio.Transport, socket.socket, list[bytes]]:
    """A real socket transport whose writes are recorded, and the peer socket."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(Recorder, sock=ours)
    assert isinstance(transport, asyncio.Transport)
    writes: list[bytes] = []
    real_write = transport.write

    def write(data: bytes) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = write  # type: ignore[method-assign]
    return transport, theirs, writes


def test_a_head_and_body_written_in_one_turn_go_out_in_one_write():
    async def scenario() -> tuple[list[bytes], bytes]:
        transport, peer, writes = await _pair()
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        coalescing.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        coalescing.write(b"{}")
        assert writes == []  # nothing sent before the turn ends
        await asyncio.sleep(0)
        received = peer.recv(4096)
        coalescing.close()
        peer.close()
        return writes, received

    writes, received = asyncio.run(scenario())
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


def test_close_sends_what_was_collected_first():
    async def scenario() -> bytes:
        transport, peer, _ = await _pair()
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        coalescing.write(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        coalescing.close()
        await asyncio.sleep(0.05)
        data = b""
        while chunk := peer.recv(4096):
            data += chunk
        peer.close()
        return data

    assert asyncio.run(scenario()) == b"HTTP/1.1 503 Service Unavailable\r\n\r\n"


def test_other_attributes_are_the_transports():
    async def scenario() -> None:
        transport, peer, _ = await _pair()
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        assert coalescing.get_extra_info("socket") is transport.get_extra_info("socket")
        assert coalescing.is_closing() is False
        coalescing.close()
        assert coalescing.is_closing() is True
        peer.close()

    asyncio.run(scenario())
