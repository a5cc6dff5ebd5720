"""One send per response: writes made in one turn of the event loop leave together.

uvicorn writes a response's head and its body with two ``transport.write``
calls; with an empty buffer each is its own ``send`` system call, and the
client is woken twice. ``CoalescingTransport`` collects the writes of one loop
turn and hands them over together at the end of it (``writelines``: one
``writev`` under uvloop, nothing copied); nothing waits longer than the
current turn, and ``close`` sends what is collected first. A small response
so costs one system call and one wake-up of the client instead of two.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """A transport whose writes within one event-loop turn go out as one."""

    __slots__ = ("_transport", "_loop", "_parts")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what was collected, as one write."""
        if not self._parts:
            return
        parts, self._parts = self._parts, []
        if not self._transport.is_closing():
            # writelines: one writev under uvloop, without copying the parts together.
            self._transport.writelines(parts)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
