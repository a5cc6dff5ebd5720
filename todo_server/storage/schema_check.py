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

from todo_server.storage import migrate
from todo_server.storage.db import DictConnection

logger = logging.getLogger("todo_server.schema")


class SchemaBehind(Exception):
    """Migrations are pending on the database this connection reaches."""


class SchemaGate:
    """Checks the schema on a new connection until one check has passed."""

    def __init__(self, directory: Path, *, current: bool) -> None:
        self.directory = directory
        self.current = current
        self.role_checked = False

    async def check(self, conn: DictConnection) -> None:
        """A pool ``configure`` step: raise ``SchemaBehind`` while migrations are pending."""
        if not self.role_checked:
            self.role_checked = True
            await warn_about_the_role(conn)
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


async def pending_on_connection(conn: DictConnection, directory: Path) -> list[migrate.Migration]:
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


#: Role-level settings that hold on every connection, PgBouncer's included.
ROLE_TIMEOUTS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")

#: The names of the settings a role has of its own here (ALTER ROLE ... SET), for a query
#: over ``pg_roles AS r``; the doctor's role check reads them the same way.
ROLE_SETTINGS_SQL = """coalesce((SELECT array_agg(split_part(setting, '=', 1))
                 FROM pg_db_role_setting AS s, unnest(s.setconfig) AS setting
                 WHERE s.setrole = r.oid
                   AND s.setdatabase IN (0, (SELECT oid FROM pg_database
                                             WHERE datname = current_database()))),
                '{}') AS settings"""

ROLE_FACTS_SQL = f"""
SELECT r.rolname AS role, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls,
       -- A member of the owner's role may do what the owner may: turn row security off.
       EXISTS (SELECT FROM pg_class AS c
               WHERE c.relname = 'tasks' AND pg_has_role(r.oid, c.relowner, 'MEMBER'))
           AS owner,
       {ROLE_SETTINGS_SQL}
FROM pg_roles AS r WHERE r.rolname = current_user
"""


async def warn_about_the_role(conn: DictConnection) -> list[str]:
    """Say loudly when the service's role is not the least-privilege runtime role.

    A superuser, a BYPASSRLS role or the tables' owner sees past row-level
    security (docs/deploy.md: Roles); timeouts missing on the role do not survive
    PgBouncer. Returns the warnings, for tests.
    """
    cursor = await conn.execute(ROLE_FACTS_SQL)
    facts = await cursor.fetchone()
    if facts is None:
        return []
    warnings = []
    if facts["superuser"] or facts["bypassrls"] or facts["owner"]:
        warnings.append(
            f"the service connects as {facts['role']!r}, a superuser, BYPASSRLS role or the"
            " tables' owner: row-level security does not apply; connect as the runtime role"
            " (DB_RUNTIME_ROLE, docs/deploy.md: Roles)"
        )
    missing = [name for name in ROLE_TIMEOUTS if name not in facts["settings"]]
    if missing:
        warnings.append(
            f"role {facts['role']!r} has no {', '.join(missing)} of its own; set them with"
            " ALTER ROLE ... SET (docs/deploy.md: Roles) so they hold on every connection"
        )
    for warning in warnings:
        logger.warning(warning)
    return warnings
