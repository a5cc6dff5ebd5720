"""Fixtures for a real PostgreSQL per session, migrated by the real runner, and apps on it.

``TEST_DATABASE_URL`` points the tests at an existing server (they create and
drop their own databases on it); otherwise an ephemeral cluster is started.
Each test that uses the app starts from empty tables.

As in production, two roles: the server's admin user (a superuser here) owns
the schema and runs migrations, and the service connects as the runtime role
``todo_app`` (no DDL, no ownership, row-level security applies), created once
per server with the role-level timeouts docs/deploy.md (Roles) asks ops to set. The
``db`` fixture and the URLs tests use directly are the admin's, so they see
every row.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from starlette.testclient import TestClient

from devtools.postgres import PostgresCluster, as_role, ensure_runtime_role
from tests.support.signing import TEST_SECRET
from todo_server.app import create_app
from todo_server.config import SETTINGS_BY_NAME, Settings, load_settings
from todo_server.storage import migrate

#: What ``todo-server migrate`` hands the runner when nothing is set: the settings table's
#: defaults, so a test applies migrations exactly as an operator's first run would.
MIGRATION_DEFAULTS = {
    "lock_timeout": SETTINGS_BY_NAME["MIGRATION_LOCK_TIMEOUT"].read({}),
    "runtime_role": SETTINGS_BY_NAME["DB_RUNTIME_ROLE"].read({}),
}


def with_dbname(url: str, dbname: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@dataclass
class DatabaseServer:
    """A PostgreSQL server the tests may create databases on."""

    admin_url: str
    created: list[str] = field(default_factory=list)

    def create_database(self, prefix: str = "todo_test") -> str:
        """A new, empty database; returns its URL."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return with_dbname(self.admin_url, name)

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.created:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        self.created.clear()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[DatabaseServer]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        ensure_runtime_role(given)
        server = DatabaseServer(admin_url=given)
        yield server
        server.drop_all()
        return
    cluster = PostgresCluster()
    try:
        cluster.start()
        ensure_runtime_role(cluster.url())
        yield DatabaseServer(admin_url=cluster.url())
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def database_url(pg_server: DatabaseServer) -> str:
    """A database migrated once per session by the real runner."""
    url = pg_server.create_database("todo_app")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply(conn, **MIGRATION_DEFAULTS)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A direct connection to the app's database, with every table emptied first."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename <> 'schema_migrations'"
            )
        ]
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                )
            )
        yield conn


def settings_env(database_url: str, **overrides: str) -> dict[str, str]:
    """A complete environment for ``load_settings``: the service as the runtime role,
    migrations as the admin who owns the schema."""
    env = {
        "DATABASE_URL": as_role(database_url),
        "MIGRATION_DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": TEST_SECRET,
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "4",
    }
    env.update(overrides)
    return env


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: str) -> Settings:
        return load_settings(settings_env(database_url, **overrides))

    return make


@pytest.fixture
def make_client(
    db: psycopg.Connection, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., TestClient]]:
    """Clients of apps built with setting overrides, lifespans running, on empty tables."""
    with ExitStack() as stack:

        def make(**overrides: str) -> TestClient:
            app = create_app(make_settings(**overrides))
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield make


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """The app with default test settings."""
    return make_client()


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A migrated PostgreSQL server of the test's own, to stop and start: the suite's stays up."""
    cluster = PostgresCluster()
    cluster.start()
    ensure_runtime_role(cluster.url())
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        migrate.apply(conn, **MIGRATION_DEFAULTS)
    try:
        yield cluster
    finally:
        cluster.remove()
