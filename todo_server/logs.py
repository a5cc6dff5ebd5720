"""Logging set-up: text lines for people, JSON lines for production.

Every record carries the current request id (from a context variable the
``web.middleware.ServiceMiddleware`` sets), so all lines of one request can be
found together; and, when the request came with a valid W3C ``traceparent``,
its trace id (another context variable), so they can be found beside the
frontend's lines of the same trace.

The event loop never formats or writes a line. Records, and the access log's
entries, go onto a deque; a writer thread of our own wakes a few times a
second (or at once when much is waiting), formats everything waiting and
writes it with one write. A busy server so pays one append per line on the
loop and one thread wake-up per batch, not one per request, and a slow or
full stderr never stalls request handling.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import NamedTuple, TextIO

from todo_server import metrics
from todo_server.text_rules import LOG_ESCAPES

#: The current request's id, set by ``web.middleware.ServiceMiddleware``, read into every record.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

#: The current request's W3C trace id (32 lowercase hex), set by
#: ``web.middleware.ServiceMiddleware`` only when the request came with a valid
#: ``traceparent``; read into every record.
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)

#: Attributes of a LogRecord that are not "extra" fields. uvicorn's
#: ``color_message`` is its message again with raw ANSI colour codes: dropped.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "request_id", "trace_id", "_trace", "color_message"}
)


ACCESS_LOGGER = "todo_server.access"
access_logger = logging.getLogger(ACCESS_LOGGER)


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
    if LOG_ESCAPES.search(text) is None:
        return text
    return LOG_ESCAPES.sub(_escape_char, text)


def _escaped(value: object) -> object:
    """A JSON-ready value with control characters in its strings escaped."""
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return escape_controls(str(value))


class AccessEntry(NamedTuple):
    """One request, as the access log keeps it until the writer formats it."""

    created: float
    request_id: str | None
    method: str
    path: str
    status: int
    duration_ms: float
    user_id: str | None
    trace_id: str | None = None

    def message(self) -> str:
        return (
            f"{self.method} {self.path} {self.status} {self.duration_ms:.2f}ms user={self.user_id}"
        )

    def fields(self) -> dict[str, object]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "user_id": self.user_id,
        }

    def as_record(self) -> logging.LogRecord:
        """The entry as an ordinary record, for when no writer runs (tests, embedding)."""
        record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, self.message(), None, None)
        record.created = self.created
        record.msecs = int((self.created - int(self.created)) * 1000) + 0.0
        record.__dict__.update(self.fields())
        record.request_id = self.request_id
        record.trace_id = self.trace_id
        return record


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` and ``trace_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.trace_id = trace_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra`` fields included.

    ``trace_id`` follows ``request_id`` when the request had one, and is
    absent otherwise.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": escape_controls(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            entry["trace_id"] = _escaped(trace_id)
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

    def format_access(self, entry: AccessEntry) -> str:
        """The line ``format`` gives the entry's record, written out directly.

        One access line per request: building it from its parts spares the
        general encoder's walk over a dict, and the keys and their order are
        the same (a test compares the two).
        """
        text = _json_text
        user_id = "null" if entry.user_id is None else text(escape_controls(entry.user_id))
        request_id = "null" if entry.request_id is None else text(entry.request_id)
        trace = (
            ""
            if entry.trace_id is None
            else f', "trace_id": {text(escape_controls(entry.trace_id))}'
        )
        return (
            f'{{"time": "{_iso_millis(entry.created)}", "level": "info",'
            f' "logger": "{ACCESS_LOGGER}", "message": {text(escape_controls(entry.message()))},'
            f' "request_id": {request_id}{trace}, "method": {text(escape_controls(entry.method))},'
            f' "path": {text(escape_controls(entry.path))}, "status": {entry.status},'
            f' "duration_ms": {entry.duration_ms!r}, "user_id": {user_id}}}'
        )


#: A str as a JSON string, as json.dumps(ensure_ascii=False) writes it (the C encoder).
_json_text: Callable[[str], str] = encode_basestring

_second: list[tuple[int, str]] = [(-1, "")]


def _iso_millis(created: float) -> str:
    """``created`` as RFC 3339 UTC with milliseconds; the date part made once a second."""
    second = int(created)
    cached_second, prefix = _second[0]
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (second, prefix)
    return f"{prefix}.{int(created * 1000) % 1000:03d}+00:00"


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` lines, one line per record whatever the message holds.

    A traceback keeps its lines, each continuation indented, so nothing after
    the first line can pass for a record of its own. A request's trace id, when
    it had one, follows its request id: ``[<request id> trace=<trace id>]``.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        trace_id = getattr(record, "trace_id", None)
        record._trace = "" if trace_id is None else f" trace={escape_controls(str(trace_id))}"
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "".join("\n    " + escape_controls(part) for part in trace.split("\n"))
        return line

    def format_access(self, entry: AccessEntry) -> str:
        return self.format(entry.as_record())


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s%(_trace)s] %(message)s"

Formatter = JsonFormatter | TextFormatter


class LogWriter:
    """The thread that formats and writes every line, in batches.

    ``put`` is an append to a deque (thread-safe, never blocks); the thread
    drains the deque every ``interval`` seconds, or as soon as ``wake_at``
    items wait, and writes the batch with one write and one flush.

    When stderr stops taking lines (a full pipe, a stuck log driver), at most
    ``max_waiting`` wait; later ones are dropped and counted, and a line says
    how many once stderr takes lines again. Requests never wait for the log,
    and the log never takes the worker's memory.
    """

    def __init__(
        self,
        stream: TextIO,
        formatter: Formatter,
        *,
        interval: float = 0.1,
        wake_at: int = 512,
        max_waiting: int = 20_000,
    ) -> None:
        self.stream = stream
        self.formatter = formatter
        self.interval = interval
        self.wake_at = wake_at
        self.max_waiting = max_waiting
        self.dropped = 0  # counted by put (the loop), read by the thread
        self._dropped_reported = 0  # the thread's own
        self.waiting: deque[logging.LogRecord | AccessEntry | threading.Event] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="todo-server-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, item: logging.LogRecord | AccessEntry) -> None:
        waiting = len(self.waiting)
        if waiting >= self.max_waiting:
            self.dropped += 1
            metrics.log_line_dropped()
            return
        self.waiting.append(item)
        if waiting + 1 >= self.wake_at:
            self._wake.set()

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything put so far has been written (or ``timeout``)."""
        done = threading.Event()
        self.waiting.append(done)
        self._wake.set()
        done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Write out what waits, then end the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping  # read before draining: nothing put before stop is lost
            self._write_waiting()
            if stopping:
                return

    def _write_waiting(self) -> None:
        waiting = self.waiting
        lines: list[str] = []
        done: list[threading.Event] = []
        formatter = self.formatter
        while waiting:
            item = waiting.popleft()
            if isinstance(item, threading.Event):
                done.append(item)
                continue
            try:
                if isinstance(item, AccessEntry):
                    lines.append(formatter.format_access(item))
                else:
                    lines.append(formatter.format(item))
            except Exception:  # a broken record must not stop the logging thread
                lines.append(f"unformattable log record from {getattr(item, 'name', '?')}")
        dropped = self.dropped - self._dropped_reported
        if dropped:
            self._dropped_reported += dropped
            lines.append(self.formatter.format(_dropped_record(dropped)))
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr is gone; there is nowhere left to say so
        for event in done:
            event.set()


def _dropped_record(count: int) -> logging.LogRecord:
    return logging.LogRecord(
        "todo_server.logs",
        logging.WARNING,
        "",
        0,
        "%d log lines dropped: stderr did not take them fast enough",
        (count,),
        None,
    )


class _ToWriter(logging.Handler):
    """Hands records to the writer as they are; the request and trace ids are read on the loop."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        record.request_id = request_id_var.get()
        record.trace_id = trace_id_var.get()
        self.writer.put(record)


_writer: LogWriter | None = None


def log_access(
    request_id: str | None,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    user_id: str | None,
    trace_id: str | None = None,
) -> None:
    """One access-log line, at INFO on ``todo_server.access``.

    With the writer running (``configure_logging``) the entry goes straight to
    it: no LogRecord, no handler chain, one append. Without it (tests, an
    embedding application) it is an ordinary record.
    """
    if not access_logger.isEnabledFor(logging.INFO):
        return
    entry = AccessEntry(
        time.time(), request_id, method, path, status, duration_ms, user_id, trace_id
    )
    if _writer is not None:
        _writer.put(entry)
    else:
        access_logger.handle(entry.as_record())


def stop_logging() -> None:
    """Write out what is waiting and stop the writer thread (safe to call twice)."""
    global _writer
    if _writer is not None:
        writer, _writer = _writer, None
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if isinstance(handler, _ToWriter) and handler.writer is writer:
                root.removeHandler(handler)
        writer.stop()


atexit.register(stop_logging)


def flush_logs(timeout: float = 2.0) -> None:
    """Wait until everything logged so far has been written."""
    if _writer is not None:
        _writer.flush(timeout)


def configure_logging(level: str, fmt: str) -> None:
    """Send all logs to stderr in the chosen format, from a thread of their own.

    Uvicorn's own access log is replaced by ours (``log_access``).
    """
    global _writer
    stop_logging()
    formatter: Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    writer = LogWriter(sys.stderr, formatter)
    writer.start()
    _writer = writer
    root = logging.getLogger()
    root.handlers[:] = [_ToWriter(writer)]
    root.setLevel(level.upper())
    # The logging HOWTO's optimisations: no thread or process names; our lines
    # carry the request id instead.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # ServiceMiddleware writes the access log, with the request id and user.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
