"""The schema check on first contact with the database.

``serve`` refuses to start while migrations are pending. A server started while
the database was down could not check; it must not then serve with a schema
behind its code. Until the check has passed once, every new pool connection
runs it: pending migrations fail the connection, so requests get 503 (the pool
has nothing to give) and ``/health`` says degraded, until ``todo-server
migrate`` has run. After that the check costs nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from psycopg import AsyncConnection

from todo_server import migrate

logger = logging.getLogger("todo_server.schema")


class SchemaBehind(Exception):
    """Migrations are pending on the database this connection reaches."""


class SchemaGate:
    """Checks the schema on a new connection until one check has passed."""

    def __init__(self, directory: Path, *, current: bool) -> None:
        self.directory = directory
        self.current = current

    async def check(self, conn: AsyncConnection) -> None:
        """A pool ``configure`` step: raise ``SchemaBehind`` while migrations are pending."""
        if self.current:
            return
        waiting = await pending_on_connection(conn, self.directory)
        if waiting:
            names = ", ".join(migration.path.name for migration in waiting)
            logger.error(
                "migrations pending: %s; answering 503 until `todo-server migrate` has run", names
            )
            raise SchemaBehind(names)
        self.current = True
        logger.info("database schema is current")


async def pending_on_connection(conn: AsyncConnection, directory: Path) -> list[migrate.Migration]:
    """The migration files not applied on the database ``conn`` reaches."""
    cursor = await conn.execute(migrate.BOOKKEEPING_EXISTS_SQL)
    present = await cursor.fetchone()
    applied: list[migrate.Applied] = []
    if present and present["present"]:
        cursor = await conn.execute(migrate.APPLIED_SQL)
        applied = [
            migrate.Applied(row["version"], row["name"], row["checksum"], row["applied_at"])
            for row in await cursor.fetchall()
        ]
    return migrate.pending(migrate.discover(directory), applied)
