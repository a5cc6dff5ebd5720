"""Logging set-up: text lines for people, JSON lines for production.

Every record carries the current request id (from a context variable the
request middleware sets), so all lines of one request can be found together.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import re
import signal
import sys
import threading
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from todo_server.middleware import request_id_var

#: Attributes of a LogRecord that are not "extra" fields. uvicorn's
#: ``color_message`` is its message again with raw ANSI colour codes: dropped.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "request_id", "color_message"}
)

#: Characters that could end a log line, forge one or drive a terminal: C0 controls,
#: DEL, C1 controls and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\n``, ``\\x1b``).

    Logged values carry client input (an unmatched path, a header): a raw
    newline would forge a whole line, an ANSI escape would reach the terminal
    of whoever reads the log. The common case, nothing to escape, costs one
    regex search.
    """
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_char, text)


def _escaped(value: object) -> object:
    """A JSON-ready value with control characters in its strings escaped."""
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return escape_controls(str(value))


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra`` fields included."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": escape_controls(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                entry[escape_controls(key)] = _escaped(value)
        if record.exc_info:
            # A traceback's own newlines stay readable (JSON escapes them); other
            # controls in it (an exception message echoing input) are escaped.
            entry["exception"] = "\n".join(
                escape_controls(line) for line in self.formatException(record.exc_info).split("\n")
            )
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` lines, one line per record whatever the message holds.

    A traceback keeps its lines, each continuation indented, so nothing after
    the first line can pass for a record of its own.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "".join("\n    " + escape_controls(part) for part in trace.split("\n"))
        return line


class _Enqueue(QueueHandler):
    """Hands the record over as it is: formatting happens in the listener thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _BatchWriter(QueueListener):
    """Formats every record waiting in the queue and writes them with one write.

    Under load many records wait at once; one write and one flush for all of
    them instead of one each keeps logging cheap on a busy server.
    """

    def __init__(self, records: queue.SimpleQueue, stream: Any, formatter: logging.Formatter):
        super().__init__(records)
        self.stream = stream
        self.formatter = formatter

    def _monitor(self) -> None:
        records = self.queue
        while True:
            batch = [records.get()]
            while True:
                try:
                    batch.append(records.get_nowait())
                except queue.Empty:
                    break
            lines = []
            flushed = [item for item in batch if isinstance(item, threading.Event)]
            for record in batch:
                if record is self._sentinel or isinstance(record, threading.Event):
                    continue
                try:
                    lines.append(self.formatter.format(record))
                except Exception:  # a broken record must not stop the logging thread
                    lines.append(f"unformattable log record from {record.name}")
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass  # stderr is gone; there is nowhere left to say so
            for done in flushed:
                done.set()
            if any(record is self._sentinel for record in batch):
                return


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


_listener: _BatchWriter | None = None


def stop_logging() -> None:
    """Write out what is queued and stop the listener thread (safe to call twice)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop_logging)


def flush_logs(timeout: float = 2.0) -> None:
    """Wait until everything logged so far has been written."""
    if _listener is not None:
        done = threading.Event()
        _listener.queue.put(done)
        done.wait(timeout)


def exit_cleanly_on_signals() -> None:
    """Make SIGTERM and SIGINT end the process through SystemExit, so queued logs are written.

    uvicorn handles these signals while it serves, then restores the previous
    handlers and raises the signal again; with the default handler the process
    would die there, before atexit writes what is still queued (the shutdown
    lines). Install before uvicorn starts, in the main thread.
    """

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, leave)


def configure_logging(level: str, fmt: str) -> None:
    """Send all logs to stderr in the chosen format, from a thread of their own.

    The event loop only puts records on a queue; formatting and writing happen
    in a listener thread, so a slow or full stderr (an undrained pipe, a busy
    log shipper) never stalls request handling. Uvicorn's own access log is
    replaced by ours.
    """
    global _listener
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    enqueue = _Enqueue(records)
    # The request id lives in a context variable: read it before leaving the loop.
    enqueue.addFilter(RequestIdFilter())
    stop_logging()
    _listener = _BatchWriter(records, sys.stderr, formatter)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [enqueue]
    root.setLevel(level.upper())
    # The logging HOWTO's optimisations: no caller lookup (a stack walk per record),
    # no thread or process names; our lines carry the request id instead.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Our middleware writes the access log, with the request id and user.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
