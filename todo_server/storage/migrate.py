"""A small migration runner for the versioned ``.sql`` files in ``sql/``.

Files are named ``NNNN_words.sql``: the number is the version, the words are for
people. ``schema_migrations`` records what ran. Each file runs in its own
transaction together with its bookkeeping row, so a failing file leaves nothing
behind and stays pending.

Concurrent runners apply each file once, also through PgBouncer's transaction
pooling, where consecutive transactions of one client may land on different
server connections (so a session-level lock means nothing): each file's
transaction first takes a transaction-scoped advisory lock, then re-reads the
history under it and skips the file if another runner applied it meanwhile. The
lock ends with the transaction whatever happens, so none is ever left behind. A
lock wait gives up after ``lock_timeout`` seconds, naming the session that holds
it.

The installed package carries the files as its own resources
(``todo_server/migrations``, a link to the top-level ``sql/`` in a checkout),
so the runner works wherever the package is installed.

Refused, because each means the database and the files disagree: an applied file
whose checksum changed, an applied version whose file is gone, two files with
one version, ``.sql`` files that do not follow the naming rule, and pending files
holding transaction control (``COMMIT``, ``BEGIN``...: see
``storage.migration_scanner``), files that are not UTF-8. Applied files never
change; fix forward with a new file. Should the scan miss a way out of the
transaction, the runner notices (its transaction id changed or ended) and says
so instead of "failed": only a file that failed inside the runner's own
transaction rolled back.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.pq import TransactionStatus

from todo_server.storage.migration_scanner import transaction_control

#: The migrations the package carries (a wheel's copies, or a checkout's sql/).
DEFAULT_DIRECTORY = Path(str(importlib.resources.files("todo_server") / "migrations"))

FILE_NAME = re.compile(r"([0-9]{4})_([a-z0-9]+(?:_[a-z0-9]+)*)\.sql")

#: Any fixed 64-bit number; every runner must use the same one.
ADVISORY_LOCK_KEY = 7_310_585_176_420_210_101

CREATE_BOOKKEEPING_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

BOOKKEEPING_EXISTS_SQL = "SELECT to_regclass('schema_migrations') IS NOT NULL AS present"

APPLIED_SQL = "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"

LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"

# Who holds the runners' lock, for the message when waiting for it times out.
LOCK_HOLDER_SQL = """
SELECT a.pid, a.usename, a.application_name, a.client_addr::text AS client_addr,
       coalesce(a.xact_start, a.backend_start) AS since, a.state, left(a.query, 80) AS query
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND ((l.classid::bigint << 32) | l.objid::bigint) = %s
"""

#: Inside a file's transaction: no statement or lock limit (a role default meant for the
#: service must not cut a long migration short); the server reads the file as the scanner
#: does (standard_conforming_strings) and as the UTF-8 it is (client_encoding).
PINNED_SETTINGS = {
    "lock_timeout": "0",
    "statement_timeout": "0",
    "standard_conforming_strings": "on",
    "client_encoding": "UTF8",
}
PIN_SETTINGS_SQL = "SELECT " + ", ".join(
    f"set_config('{name}', '{value}', true)" for name, value in PINNED_SETTINGS.items()
)

RECORD_SQL = """
INSERT INTO schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)
"""


class MigrationError(Exception):
    """The migrations cannot be applied as they stand; the message says why."""


class DriftError(MigrationError):
    """The history and the files disagree: an applied file changed or is gone."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    checksum: str


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    checksum: str
    applied_at: datetime


def discover(directory: Path = DEFAULT_DIRECTORY) -> list[Migration]:
    """The migration files in version order; refuses bad names and duplicate versions."""
    found: dict[int, Migration] = {}
    try:
        paths = sorted(directory.iterdir())
    except OSError as exc:
        raise MigrationError(
            f"{directory}: cannot list the migrations ({exc.strerror or exc})"
        ) from None
    for path in paths:
        if not path.name.lower().endswith(".sql"):
            continue
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name}: badly named; expected NNNN_words.sql (e.g. 0002_add_index.sql)"
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"{path.name}: version {version} is also used by {found[version].path.name}"
            )
        data, text = _read_sql(path)
        found[version] = Migration(
            version=version,
            name=match.group(2),
            path=path,
            sql=text,
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [found[version] for version in sorted(found)]


def _read_sql(path: Path) -> tuple[bytes, str]:
    """A file's bytes and text, or a one-line refusal naming it: unreadable, or not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MigrationError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MigrationError(
            f"{path.name}: not UTF-8 (byte 0x{data[exc.start]:02x} on line {line});"
            " save the file as UTF-8"
        ) from None
    if "\0" in text:
        # The server refuses it; psql cuts the line there and joins the next one on,
        # which could close the quoting ``migrate sql`` puts around the file.
        line = text[: text.index("\0")].count("\n") + 1
        raise MigrationError(
            f"{path.name}: holds a NUL byte (line {line}),"
            " which neither PostgreSQL nor psql can read as SQL"
        )
    return data, text


def pending(migrations: list[Migration], applied: list[Applied]) -> list[Migration]:
    """The files not yet applied; refuses when applied history and files disagree."""
    by_version = {migration.version: migration for migration in migrations}
    for row in applied:
        migration = by_version.get(row.version)
        if migration is None:
            raise DriftError(
                f"version {row.version} ({row.name}) is applied but its file is missing"
            )
        if migration.checksum != row.checksum:
            raise DriftError(
                f"{migration.path.name}: changed after it was applied; "
                "applied files must not change, add a new migration instead"
            )
    done = {row.version for row in applied}
    return [migration for migration in migrations if migration.version not in done]


def refuse_transaction_control(migration: Migration) -> None:
    """Refuse a file that would commit or roll back the transaction it runs in."""
    found = transaction_control(migration.sql)
    if found:
        raise MigrationError(
            f"{migration.path.name}: transaction control is not allowed ({'; '.join(found)});"
            " each file already runs in a transaction of its own"
        )


def read_applied(conn: psycopg.Connection) -> list[Applied]:
    """What ``schema_migrations`` records; empty when the table does not exist yet."""
    with conn.cursor() as cur:
        present = cur.execute(BOOKKEEPING_EXISTS_SQL).fetchone()
        if not present or not present[0]:
            return []
        return [Applied(*row) for row in cur.execute(APPLIED_SQL).fetchall()]


@dataclass(frozen=True)
class FileState:
    """One line of ``migrate status``: what a version's file and the history say."""

    version: int
    name: str
    state: str  # "applied", "pending", "changed" (since applied) or "missing" (file gone)
    checksum: str  # the file's; the recorded one for a missing file
    applied_at: datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "name": self.name,
            "state": self.state,
            "checksum": self.checksum,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
        }


def inspect(conn: psycopg.Connection, directory: Path = DEFAULT_DIRECTORY) -> list[FileState]:
    """Every version the files or the history know, with its state; never raises on drift."""
    files = {migration.version: migration for migration in discover(directory)}
    history = {row.version: row for row in read_applied(conn)}
    lines = []
    for version in sorted(files.keys() | history.keys()):
        migration, row = files.get(version), history.get(version)
        if migration is None:
            assert row is not None
            lines.append(FileState(version, row.name, "missing", row.checksum, row.applied_at))
        elif row is None:
            lines.append(FileState(version, migration.name, "pending", migration.checksum, None))
        else:
            state = "applied" if row.checksum == migration.checksum else "changed"
            lines.append(
                FileState(version, migration.name, state, migration.checksum, row.applied_at)
            )
    return lines


def apply(
    conn: psycopg.Connection,
    directory: Path = DEFAULT_DIRECTORY,
    *,
    lock_timeout: float,
    runtime_role: str,
) -> list[Migration]:
    """Apply every pending file, each in its own locked transaction; returns what was applied.

    ``conn`` must be in autocommit mode: each file gets a transaction of its own.
    ``lock_timeout`` (MIGRATION_LOCK_TIMEOUT) is how many seconds to wait for another
    runner's lock; ``runtime_role`` (DB_RUNTIME_ROLE), the role the files grant to.
    """
    if not conn.autocommit:
        raise MigrationError("the migration connection must be in autocommit mode")
    migrations = discover(directory)
    with _locked(conn, lock_timeout, runtime_role):
        conn.execute(CREATE_BOOKKEEPING_SQL)
        todo = pending(migrations, read_applied(conn))
    for migration in todo:
        refuse_transaction_control(migration)
    applied = []
    for migration in todo:
        run = _Run()
        try:
            with _locked(conn, lock_timeout, runtime_role):
                # Under the lock, the history is the truth: another runner may
                # have applied this file since we looked.
                if migration not in pending(migrations, read_applied(conn)):
                    continue
                run.execute(conn, migration.sql)
                conn.execute(
                    RECORD_SQL,
                    {
                        "version": migration.version,
                        "name": migration.name,
                        "checksum": migration.checksum,
                    },
                )
        except MigrationError:
            raise
        except (psycopg.Error, _EndedItsTransaction) as exc:
            if run.left_its_transaction(conn):
                raise MigrationError(
                    f"{migration.path.name} ended the transaction it runs in (a COMMIT,"
                    " ROLLBACK or the like that the scan did not find): what ran outside it may"
                    " be committed; the file is not recorded and stays pending; check the"
                    " database by hand before fixing forward"
                ) from exc
            assert isinstance(exc, psycopg.Error)
            message = (exc.diag.message_primary or str(exc)).strip()
            raise MigrationError(f"{migration.path.name} failed: {message}") from exc
        applied.append(migration)
    return applied


class _EndedItsTransaction(Exception):
    """A file's text left the runner's transaction."""


class _Run:
    """One file's run inside the runner's transaction, and whether it stayed there.

    "A failed file rolled back and stays pending" holds only while the transaction
    that failed is the runner's own; a COMMIT or ROLLBACK the scan missed ends it,
    and what follows runs in transactions of the file's own. So the runner notes its
    transaction's id before the file and, afterwards, whether it is still in it.
    """

    def __init__(self) -> None:
        self.xact = ""
        self.status_after = TransactionStatus.UNKNOWN
        self.stayed = False

    def execute(self, conn: psycopg.Connection, sql: str) -> None:
        self.xact = _current_xact(conn)
        try:
            conn.execute(sql.encode("utf-8"))
        finally:
            self.status_after = conn.info.transaction_status
        if self.status_after != TransactionStatus.INTRANS or _current_xact(conn) != self.xact:
            raise _EndedItsTransaction
        self.stayed = True

    def left_its_transaction(self, conn: psycopg.Connection) -> bool:
        """After a failure (and the rollback): whether the file got out of the transaction."""
        if not self.xact or self.stayed:
            return False  # the file never ran, or ran and stayed inside
        if self.status_after != TransactionStatus.INERROR:
            return True  # ended, or a new transaction of the file's own
        # Failed inside a transaction: it was ours unless ours ended before.
        return _outcome(conn, self.xact) != "aborted"


CURRENT_XACT_SQL = "SELECT pg_current_xact_id()::text"
XACT_STATUS_SQL = "SELECT pg_xact_status(%s::xid8)"


def _current_xact(conn: psycopg.Connection) -> str:
    """The id of the transaction ``conn`` is in (assigning one if it has none yet)."""
    row = conn.execute(CURRENT_XACT_SQL).fetchone()
    assert row is not None
    return str(row[0])


def _outcome(conn: psycopg.Connection, xact: str) -> str:
    """What became of a finished transaction: committed, aborted, or in progress (prepared)."""
    try:
        row = conn.execute(XACT_STATUS_SQL, (xact,)).fetchone()
    except psycopg.Error:
        return "unknown"  # the connection is gone: nothing can tell
    return str(row[0]) if row else "unknown"


@contextmanager
def _locked(conn: psycopg.Connection, lock_timeout: float, runtime_role: str) -> Iterator[None]:
    """A transaction holding the runners' advisory lock (waiting at most ``lock_timeout``).

    The files see the runtime role's name as the setting ``todo.runtime_role``,
    for their grants.
    """
    with conn.transaction():
        conn.execute("SELECT set_config('todo.runtime_role', %s, true)", (runtime_role,))
        conn.execute(
            "SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout * 1000)}ms",)
        )
        try:
            with conn.transaction():  # a savepoint, so a timeout leaves the outer one usable
                conn.execute(LOCK_SQL, (ADVISORY_LOCK_KEY,))
        except psycopg.errors.LockNotAvailable:
            raise MigrationError(
                f"another migration run holds the lock after {lock_timeout:g} s: "
                f"{_lock_holder(conn)}; wait for it, or end that session"
            ) from None
        conn.execute(PIN_SETTINGS_SQL)
        yield


def _lock_holder(conn: psycopg.Connection) -> str:
    row = conn.execute(LOCK_HOLDER_SQL, (ADVISORY_LOCK_KEY,)).fetchone()
    if row is None:
        return "a session that has since ended"
    pid, user, app, addr, since, state, query = row
    return (
        f"pid {pid} (user {user}, application {app or '-'}, from {addr or 'local socket'},"
        f" since {since:%Y-%m-%d %H:%M:%S %Z}, {state}, last query {query!r})"
    )


def script(migrations: list[Migration], *, runtime_role: str) -> str:
    """The pending ``migrations`` as one SQL script, with their bookkeeping rows.

    For a DBA to review and run with ``psql -X -v ON_ERROR_STOP=1 -1 -f -``: one
    transaction (``-1``), holding the runners' lock, so it applies all or nothing
    and never beside a runner.

    Each file does exactly what ``apply`` does with it: its text is a dollar-quoted
    literal that psql's ``\\gexec`` sends to the server as it stands, as one query
    under the same settings. psql reads nothing inside a dollar quote, so a
    backslash command (``\\! cmd``) or a ``:variable`` in a file is never psql's
    business: the server refuses the one as a syntax error, as it does for
    ``apply``, and reads the other as the SQL it is (``a[1:n]`` is an array slice).
    Refusing such files instead would depend on reading the file exactly as psql
    does, whose reading changes with settings like ``standard_conforming_strings``.
    """
    for migration in migrations:
        refuse_transaction_control(migration)
    parts = [
        "-- todo-server migrations; apply with: psql -X -v ON_ERROR_STOP=1 -1 -f <this file>",
        "-- Each file below is the text between its $todo_NNNN$ quotes; \\gexec sends it to",
        "-- the server as it stands, as `todo-server migrate` does: psql reads nothing in it.",
        "SET client_encoding = 'UTF8';",
        CREATE_BOOKKEEPING_SQL.strip() + ";",
        f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY});",
        # A plain name (config checks it), so quoting it as a literal is enough.
        f"SET LOCAL todo.runtime_role = '{runtime_role}';",
    ]
    for migration in migrations:
        checksum = migration.checksum
        text = migration.sql if migration.sql.endswith("\n") else migration.sql + "\n"
        tag = f"$todo_{migration.version:04d}$"
        while tag in text:
            tag = tag[:-1] + "_$"
        parts += [
            f"\n-- {migration.path.name} (sha256 {checksum})",
            *(f"SET LOCAL {name} = '{value}';" for name, value in PINNED_SETTINGS.items()),
            XACT_MARK_SQL + ";",
            f"SELECT {tag}{text}{tag} \\gexec",
            XACT_CHECK_SQL.replace("FILE", migration.path.name) + ";",
            "INSERT INTO schema_migrations (version, name, checksum)"
            f" VALUES ({migration.version}, '{migration.name}', '{checksum}');",
        ]
    return "\n".join(parts) + "\n"


#: In the script: the file must leave the transaction it started in, as ``apply`` checks.
XACT_MARK_SQL = (
    "DO $mark$ BEGIN PERFORM set_config('todo.file_xact', pg_current_xact_id()::text, true);"
    " END $mark$"
)
XACT_CHECK_SQL = (
    "DO $check$ BEGIN IF current_setting('todo.file_xact', true)"
    " IS DISTINCT FROM pg_current_xact_id()::text THEN"
    " RAISE EXCEPTION 'FILE ended the transaction it runs in'; END IF; END $check$"
)


def pending_on(
    url: str, connect_timeout: float, directory: Path = DEFAULT_DIRECTORY
) -> list[Migration]:
    """Connect to ``url`` and return the files not yet applied there.

    The files are read first, so one that cannot be read is refused even while the
    database is down.
    """
    migrations = discover(directory)
    with psycopg.connect(url, connect_timeout=max(1, round(connect_timeout))) as conn:
        return pending(migrations, read_applied(conn))
