"""Logging: request handling never waits for log output."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

import httpx2

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


def _server_output_after_hostile_requests(database_url: str, log_format: str) -> str:
    from devtools.liveserver import LiveServer
    from tests.support.database import settings_env

    env = settings_env(database_url, LOG_FORMAT=log_format)
    with LiveServer(env) as server:
        for path in (
            "/nowhere%0a2026-01-01 00:00:00,000 ERROR todo_server.auth [x] forged line",
            "/nowhere%0d%0aforged",
            "/nowhere%1b[2J%1b[31mred%e2%80%a8next%c2%85nel%7f",
        ):
            httpx2.get(server.base_url + path)
    return server.output


def test_text_log_lines_cannot_be_forged_or_carry_terminal_escapes(database_url, db):
    output = _server_output_after_hostile_requests(database_url, "text")
    lines = output.splitlines()
    assert not any(line.startswith(("2026-01-01", "forged")) for line in lines), output
    assert "\x1b" not in output and "\u2028" not in output and "\x85" not in output
    assert "\x7f" not in output and "\r" not in output
    assert r"/nowhere\n2026-01-01 00:00:00,000 ERROR" in output
    assert r"/nowhere\x1b[2J\x1b[31mred\u2028next\x85nel\x7f" in output


def test_json_log_lines_escape_controls_and_drop_color_message(database_url, db):
    output = _server_output_after_hostile_requests(database_url, "json")
    entries = [json.loads(line) for line in output.splitlines()]  # every line is one object
    assert "\x1b" not in output and "\u2028" not in output and "\x85" not in output
    assert not any("color_message" in entry for entry in entries)
    assert any(entry["message"].startswith("Uvicorn running") for entry in entries)
    paths = [entry.get("path") for entry in entries if entry.get("logger") == "todo_server.access"]
    assert r"/nowhere\x1b[2J\x1b[31mred\u2028next\x85nel\x7f" in paths


def test_escape_controls_leaves_ordinary_text_alone():
    assert (
        logs.escape_controls("GET /api/tasks 200 ユーザー café")
        == "GET /api/tasks 200 ユーザー café"
    )
    assert logs.escape_controls("a\tb\x00c\u2029") == r"a\tb\x00c\u2029"


def test_an_access_line_written_directly_is_the_line_its_record_would_give():
    formatter = logs.JsonFormatter()
    entries = [
        logs.AccessEntry(1764595000.9996, "abc", "GET", "/api/tasks", 200, 1.23, "ada"),
        logs.AccessEntry(1764595000.25, None, "POST", '/x\x1b[2J"q\\\u2028é', 404, 0.5, None),
        logs.AccessEntry(1764595001.0, 'a"b\\c', "GET", "/y", 500, 12.0, "ユーザー\n"),
        logs.AccessEntry(1764595002.5, "t", "GET", "/z", 200, 1.0, None, "4bf92f3577b34da6" * 2),
        logs.AccessEntry(1764595003.5, "t", "GET", "/z", 200, 1.0, None, 'x\x1b"\u2028'),
    ]
    for entry in entries:
        direct = formatter.format_access(entry)
        via_record = formatter.format(entry.as_record())
        assert json.loads(direct) == json.loads(via_record)
        assert list(json.loads(direct)) == list(json.loads(via_record))  # same key order
        assert "\x1b" not in direct and "\u2028" not in direct and "\n" not in direct


def test_the_writer_writes_records_and_access_entries_in_order(monkeypatch):
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logs.configure_logging("info", "json")
        logging.getLogger("todo_server.test").info("before")
        logs.log_access("rid-1", "GET", "/api/tasks", 200, 1.5, "ada")
        logging.getLogger("todo_server.test").info("after")
        logs.flush_logs()
    finally:
        logs.stop_logging()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        stream.close()
    with os.fdopen(read_end) as lines:
        written = [json.loads(line) for line in lines]
    assert [entry["message"] for entry in written] == [
        "before",
        "GET /api/tasks 200 1.50ms user=ada",
        "after",
    ]
    assert written[1]["request_id"] == "rid-1" and written[1]["path"] == "/api/tasks"


class StuckStream:
    """A stderr that takes nothing until it is let go."""

    def __init__(self) -> None:
        self.let_go = threading.Event()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.let_go.wait(10)
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_stuck_stderr_bounds_what_waits_and_counts_what_was_dropped():
    stream = StuckStream()
    writer = logs.LogWriter(stream, logs.JsonFormatter(), interval=0.01, max_waiting=100)  # type: ignore[arg-type]
    writer.start()
    entry = logs.AccessEntry(1764595000.0, "rid", "GET", "/api/tasks", 200, 1.0, "ada")
    for _ in range(1000):
        writer.put(entry)
        assert len(writer.waiting) <= 100
    assert writer.dropped > 0
    stream.let_go.set()
    writer.flush()
    writer.stop()
    lines = [json.loads(line) for text in stream.written for line in text.splitlines()]
    access = [line for line in lines if line["logger"] == "todo_server.access"]
    [dropped] = [line for line in lines if line["logger"] == "todo_server.logs"]
    count = int(dropped["message"].split()[0])
    assert count == writer.dropped
    assert len(access) + count == 1000  # every line was written or counted


def test_bidirectional_controls_are_escaped_so_a_value_cannot_show_itself_reversed():
    assert logs.escape_controls("evil\u202egnp.exe") == r"evil\u202egnp.exe"
    assert logs.escape_controls("\u2066x\u2069\u200f") == r"\u2066x\u2069\u200f"


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("todo_server.test", logging.WARNING, "", 0, message, None, None)
    logs.RequestIdFilter().filter(record)
    return record


def test_a_record_logged_during_a_traced_request_carries_its_trace_id():
    request = logs.request_id_var.set("rid-7")
    trace = logs.trace_id_var.set(TRACE_ID)
    try:
        record = _record("inside")
    finally:
        logs.trace_id_var.reset(trace)
        logs.request_id_var.reset(request)
    entry = json.loads(logs.JsonFormatter().format(record))
    assert list(entry)[:6] == ["time", "level", "logger", "message", "request_id", "trace_id"]
    assert (entry["request_id"], entry["trace_id"]) == ("rid-7", TRACE_ID)
    assert (
        logs.TextFormatter()
        .format(record)
        .endswith(f" WARNING todo_server.test [rid-7 trace={TRACE_ID}] inside")
    )


def test_a_record_without_a_trace_has_no_trace_id_field():
    record = _record("outside")
    assert "trace_id" not in json.loads(logs.JsonFormatter().format(record))
    assert logs.TextFormatter().format(record).endswith(" WARNING todo_server.test [None] outside")
    entry = logs.AccessEntry(1764595000.0, "rid", "GET", "/api/tasks", 200, 1.0, "ada")
    assert "trace_id" not in json.loads(logs.JsonFormatter().format_access(entry))
    assert "trace=" not in logs.TextFormatter().format_access(entry)


def test_the_writer_writes_the_trace_id_of_records_and_access_entries(monkeypatch):
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    trace = logs.trace_id_var.set(TRACE_ID)
    try:
        logs.configure_logging("info", "json")
        logging.getLogger("todo_server.test").info("traced")
        logs.log_access("rid-1", "GET", "/api/tasks", 200, 1.5, "ada", TRACE_ID)
        logs.flush_logs()
    finally:
        logs.trace_id_var.reset(trace)
        logs.stop_logging()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        stream.close()
    with os.fdopen(read_end) as lines:
        written = [json.loads(line) for line in lines]
    assert [entry["trace_id"] for entry in written] == [TRACE_ID, TRACE_ID]
