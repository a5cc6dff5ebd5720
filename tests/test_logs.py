"""Logging: request handling never waits for log output."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from todo_server import logs


def test_a_full_stderr_never_blocks_the_logging_caller(monkeypatch):
    read_end, write_end = os.pipe()  # nobody reads it: 64 KiB and it is full
    stream = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    logs.configure_logging("info", "text")
    logger = logging.getLogger("todo_server.test")

    def log_a_lot() -> None:
        for _ in range(300):
            logger.info("x" * 1000)  # 300 KB, far more than the pipe holds

    start = time.monotonic()
    caller = threading.Thread(target=log_a_lot, daemon=True)
    caller.start()
    caller.join(timeout=10)
    blocked = caller.is_alive()
    elapsed = time.monotonic() - start

    # Let the listener finish writing, then put logging back as it was.
    drain = threading.Thread(
        target=lambda: [None for _ in iter(lambda: os.read(read_end, 65536), b"")]
    )
    drain.start()
    logs.stop_logging()
    stream.close()
    drain.join(timeout=10)
    os.close(read_end)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)

    assert not blocked
    assert elapsed < 5
