"""The service's Prometheus metrics: every family in one place, and their exposition.

Modules record events through the small functions here (``request_done``,
``database_error``, ``auth_refused`` ...), never through prometheus_client
directly, so every label value is chosen here from a fixed set: labels never
carry user ids, task ids, tokens or raw paths. A request's route is its route
template (``/api/tasks/{task_id}``); a path no route matched is ``unmatched``.

With several worker processes (``serve`` with WORKERS > 1) each worker writes
its values to files in ``PROMETHEUS_MULTIPROC_DIR``, a private directory
``serve`` creates before the workers start and removes at exit;
``exposition`` then reads every worker's files, so one scrape reports the
whole server whichever process answers it (``serve`` sets the variable before
the admin server starts too). prometheus_client chooses between in-process
values and those files when it is imported, from that variable; ``exposition``
reads it when called, so a process that imported the package before ``serve``
set it (``serve``'s own, which runs no requests) still reads the workers'.
It is prometheus_client's variable, not a setting: it is read only here.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from todo_server import package_version

#: Set by ``serve`` for its worker processes; unset in a single process.
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: The service's own registry: no default process or platform collectors, whose
#: values would be one worker's only.
REGISTRY = CollectorRegistry()

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"

#: Seconds; a task request is a few milliseconds, a login's scrypt hash ~50 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "todo_server_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "todo_server_http_request_duration_seconds",
    "Time from a request's arrival to its answer, by route template.",
    ["route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "todo_server_http_requests_in_flight",
    "Requests being answered now.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "todo_server_db_pool_connections",
    "Connections the database pool holds (idle and in use).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_IDLE = Gauge(
    "todo_server_db_pool_idle_connections",
    "Connections idle in the database pool.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "todo_server_db_pool_waiting_requests",
    "Requests waiting for a connection from the database pool.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_REQUESTS = Counter(
    "todo_server_db_pool_requests",
    "Connections asked of the database pool.",
    registry=REGISTRY,
)
POOL_QUEUED = Counter(
    "todo_server_db_pool_queued_requests",
    "Connections asked of the database pool that had to wait for one.",
    registry=REGISTRY,
)
POOL_WAIT = Counter(
    "todo_server_db_pool_wait_seconds",
    "Time spent waiting for a connection from the database pool.",
    registry=REGISTRY,
)
POOL_ERRORS = Counter(
    "todo_server_db_pool_request_errors",
    "Connections asked of the database pool and not given (timed out, too many waiting).",
    registry=REGISTRY,
)
DATABASE_ERRORS = Counter(
    "todo_server_db_errors",
    "Database errors answered 503, by class: timeout (statement or lock), unavailable"
    " (unreachable, pool exhausted), conflict (deadlock or serialization failure that"
    " survived the retries), prepared_statement_lost (a transaction pooler without"
    " DB_PGBOUNCER).",
    ["class"],
    registry=REGISTRY,
)
DATABASE_ERROR_CLASSES = ("timeout", "unavailable", "conflict", "prepared_statement_lost")
CONFLICT_RETRIES = Counter(
    "todo_server_db_conflict_retries",
    "Transactions run again after a deadlock or serialization failure.",
    registry=REGISTRY,
)

#: The reasons docs/authentication.md lists (the client's fixed phrases), as label values.
REFUSAL_REASONS: dict[str, str] = {
    "expired": "expired",
    "bad signature": "bad_signature",
    "wrong issuer": "wrong_issuer",
    "wrong audience": "wrong_audience",
    "missing claim": "missing_claim",
    "not yet valid": "not_yet_valid",
    "algorithm not allowed": "algorithm_not_allowed",
    "unknown key": "unknown_key",
    "not a JWT": "not_a_jwt",
    "too large": "too_large",
    "bad subject": "bad_subject",
    "bad claim": "bad_claim",
    "bad expiry": "bad_expiry",
    "HS256 tokens from the frontend are not accepted": "frontend_hs256_off",
    "not an access token": "not_an_access_token",
    "unknown session": "unknown_session",
}
#: No ``Authorization: Bearer`` header at all.
NO_BEARER = "no_bearer"
#: Where a refused bearer came from: none sent, a JWT, a Better Auth session token.
TOKEN_SOURCES = ("none", "jwt", "session")
AUTH_REFUSALS = Counter(
    "todo_server_auth_refusals",
    "Requests refused 401, by reason (docs/authentication.md) and token source.",
    ["reason", "source"],
    registry=REGISTRY,
)
JWKS_FETCHES = Counter(
    "todo_server_jwks_fetches",
    "Fetches of the frontend's JWKS, by outcome (ok, failed).",
    ["outcome"],
    registry=REGISTRY,
)
THROTTLED = Counter(
    "todo_server_throttled",
    "Logins and registrations refused 429 by the throttle, by action.",
    ["action"],
    registry=REGISTRY,
)
PURGED_ROWS = Counter(
    "todo_server_purged_rows",
    "Rows the purge removed, by kind (tasks, idempotency_keys, login_failures).",
    ["kind"],
    registry=REGISTRY,
)
PROTOCOL_REFUSALS = Counter(
    "todo_server_http_protocol_refusals",
    "Requests and connections the protocol adapter refused before the app saw them, by"
    " status (400 unparsable, 408 too slow, 431 head too large, 503 too many connections).",
    ["status"],
    registry=REGISTRY,
)
LOG_LINES_DROPPED = Counter(
    "todo_server_log_lines_dropped",
    "Log lines dropped because stderr did not take them fast enough.",
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "todo_server_build_info",
    "Always 1: the version, the Python and the API dialect this server runs.",
    ["version", "python", "dialect"],
    registry=REGISTRY,
    multiprocess_mode="max",
)

# Children by label values, made once: ``labels()`` validates and locks on every call.
_request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def request_started() -> None:
    """A request arrived (``request_done`` ends it)."""
    IN_FLIGHT.inc()


def request_done(route: str | None, method: str, status: int, seconds: float) -> None:
    """Count an answered request; ``route`` is its template, None when no route matched."""
    # Normalized before the lookup: made-up methods must not grow the cache either.
    key = (route or UNMATCHED, method if method in METHODS else OTHER, status)
    children = _request_children.get(key)
    if children is None:
        children = _request_children[key] = (
            REQUESTS.labels(key[0], key[1], str(status)),
            LATENCY.labels(key[0]),
        )
    children[0].inc()
    children[1].observe(seconds)
    IN_FLIGHT.dec()  # last: a scrape that sees no request in flight sees every one counted


def pool_sampled(stats: dict[str, int]) -> None:
    """The pool's state now, and its counts since the last sample (``pool.pop_stats()``)."""
    POOL_SIZE.set(stats.get("pool_size", 0))
    POOL_IDLE.set(stats.get("pool_available", 0))
    POOL_WAITING.set(stats.get("requests_waiting", 0))
    for counter, key, scale in (
        (POOL_REQUESTS, "requests_num", 1),
        (POOL_QUEUED, "requests_queued", 1),
        (POOL_WAIT, "requests_wait_ms", 1000),
        (POOL_ERRORS, "requests_errors", 1),
    ):
        count = stats.get(key, 0)
        if count:
            counter.inc(count / scale)


def database_error(kind: str) -> None:
    """A database error answered 503; ``kind`` is one of ``DATABASE_ERROR_CLASSES``."""
    DATABASE_ERRORS.labels(kind if kind in DATABASE_ERROR_CLASSES else OTHER).inc()


def conflict_retried() -> None:
    CONFLICT_RETRIES.inc()


def auth_refused(why: str, source: str) -> None:
    """A 401: ``why`` is the client's phrase (or ``NO_BEARER``), ``source`` one of TOKEN_SOURCES."""
    reason = NO_BEARER if why == NO_BEARER else REFUSAL_REASONS.get(why, OTHER)
    AUTH_REFUSALS.labels(reason, source if source in TOKEN_SOURCES else OTHER).inc()


def jwks_fetched(ok: bool) -> None:
    JWKS_FETCHES.labels("ok" if ok else "failed").inc()


def protocol_refusal(status: int) -> None:
    """The protocol adapter answered ``status`` and closed, before any route ran."""
    PROTOCOL_REFUSALS.labels(str(status) if status in (400, 408, 431, 503) else OTHER).inc()


def throttled(action: str) -> None:
    """A login or registration refused 429; ``action`` is ``login`` or ``registration``."""
    THROTTLED.labels(action if action in ("login", "registration") else OTHER).inc()


def rows_purged(kind: str, count: int) -> None:
    if count:
        PURGED_ROWS.labels(kind).inc(count)


def log_line_dropped() -> None:
    LOG_LINES_DROPPED.inc()


def build_info(dialect: str) -> None:
    """Record what this server runs (once per process, when the app is built)."""
    BUILD_INFO.labels(package_version(), platform.python_version(), dialect).set(1)


def process_stopping() -> None:
    """Drop this worker's live gauges (in-flight, pool) from what a scrape sums."""
    directory = os.environ.get(MULTIPROCESS_VARIABLE)
    if directory:
        mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def shared_directory() -> Iterator[str]:
    """A private directory where every worker process writes its values, removed afterwards.

    Enter it before the worker processes start (they inherit the variable) and
    before anything in this process scrapes: ``exposition`` then sums them all.
    """
    directory = tempfile.mkdtemp(prefix="todo-server-metrics-")
    previous = os.environ.get(MULTIPROCESS_VARIABLE)
    os.environ[MULTIPROCESS_VARIABLE] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_VARIABLE, None)
        else:
            os.environ[MULTIPROCESS_VARIABLE] = previous
        shutil.rmtree(directory, ignore_errors=True)


def exposition(accept: str | None) -> tuple[bytes, str]:
    """Every family, as the body and content type a scrape asked for with ``Accept``.

    Prometheus' text format unless ``Accept`` asks for OpenMetrics. With worker
    processes, the sum over all of them (each family's rule: counters and
    histograms add up, in-flight and pool gauges add up over live workers).
    """
    registry = REGISTRY
    directory = os.environ.get(MULTIPROCESS_VARIABLE)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
