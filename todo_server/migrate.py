"""A small migration runner for the versioned ``.sql`` files in ``sql/``.

Files are named ``NNNN_words.sql``: the number is the version, the words are for
people. ``schema_migrations`` records what ran. Each file runs in its own
transaction together with its bookkeeping row, so a failing file leaves nothing
behind and stays pending. A PostgreSQL advisory lock serialises concurrent
runners, so two deploys at once apply each file once.

Refused, because each means the database and the files disagree: an applied file
whose checksum changed, an applied version whose file is gone, two files with
one version, ``.sql`` files that do not follow the naming rule, and pending files
holding transaction control (``COMMIT``, ``BEGIN``...: see ``sql_scan``). Applied
files never change; fix forward with a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.pq import TransactionStatus

from todo_server.sql_scan import transaction_control

#: The migrations shipped with the project: ``sql/`` beside the package.
DEFAULT_DIRECTORY = Path(__file__).resolve().parent.parent / "sql"

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

RECORD_SQL = """
INSERT INTO schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)
"""


class MigrationError(Exception):
    """The migrations cannot be applied as they stand; the message says why."""


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


@dataclass(frozen=True)
class Status:
    """One line of ``migrate status``: a file, and when it was applied (None: pending)."""

    migration: Migration
    applied_at: datetime | None


def discover(directory: Path = DEFAULT_DIRECTORY) -> list[Migration]:
    """The migration files in version order; refuses bad names and duplicate versions."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
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
        data = path.read_bytes()
        found[version] = Migration(
            version=version,
            name=match.group(2),
            path=path,
            sql=data.decode("utf-8"),
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [found[version] for version in sorted(found)]


def pending(migrations: list[Migration], applied: list[Applied]) -> list[Migration]:
    """The files not yet applied; refuses when applied history and files disagree."""
    by_version = {migration.version: migration for migration in migrations}
    for row in applied:
        migration = by_version.get(row.version)
        if migration is None:
            raise MigrationError(
                f"version {row.version} ({row.name}) is applied but its file is missing"
            )
        if migration.checksum != row.checksum:
            raise MigrationError(
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


def status(conn: psycopg.Connection, directory: Path = DEFAULT_DIRECTORY) -> list[Status]:
    """Every file with when it was applied, after checking files and history agree."""
    migrations = discover(directory)
    applied = read_applied(conn)
    pending(migrations, applied)
    when = {row.version: row.applied_at for row in applied}
    return [Status(migration, when.get(migration.version)) for migration in migrations]


def apply(conn: psycopg.Connection, directory: Path = DEFAULT_DIRECTORY) -> list[Migration]:
    """Apply every pending file, each in its own transaction; returns what was applied.

    ``conn`` must be in autocommit mode: the advisory lock is held for the
    session, and each file gets a transaction of its own.
    """
    if not conn.autocommit:
        raise MigrationError("the migration connection must be in autocommit mode")
    migrations = discover(directory)
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        conn.execute(CREATE_BOOKKEEPING_SQL)
        # Read history only once the lock is held: another runner may just have
        # applied some of these files.
        todo = pending(migrations, read_applied(conn))
        for migration in todo:
            refuse_transaction_control(migration)
        for migration in todo:
            try:
                with conn.transaction():
                    conn.execute(migration.sql.encode("utf-8"))
                    if conn.info.transaction_status != TransactionStatus.INTRANS:
                        # The scan missed a way out; stop before anything else runs.
                        raise MigrationError(
                            f"{migration.path.name} ended its own transaction;"
                            " part of it may be applied: check the database by hand"
                        )
                    conn.execute(
                        RECORD_SQL,
                        {
                            "version": migration.version,
                            "name": migration.name,
                            "checksum": migration.checksum,
                        },
                    )
            except psycopg.Error as exc:
                message = (exc.diag.message_primary or str(exc)).strip()
                raise MigrationError(f"{migration.path.name} failed: {message}") from exc
        return todo
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def pending_on(
    url: str, connect_timeout: float, directory: Path = DEFAULT_DIRECTORY
) -> list[Migration]:
    """Connect to ``url`` and return the files not yet applied there."""
    with psycopg.connect(url, connect_timeout=max(1, round(connect_timeout))) as conn:
        return pending(discover(directory), read_applied(conn))
