"""Settings, read once from the environment and validated at start-up.

- ``table``: every setting, declared once (name, default, parser, help); the
  only place a default is written.
- ``parsers``: text to value for one variable, and ``ConfigError``.
- ``settings``: the validated settings and the ``load_*`` functions, the only
  code that reads ``os.environ``; ``token_sources`` works out which JWTs they accept.
- ``redaction``: connection strings with their secrets replaced, for logs.
- ``limits``: what the HTTP protocol allows one connection.

The operators' table in ``docs/configuration.md`` and ``.env.example`` are
generated from the table by ``python -m devtools settings-docs --write``.
"""

from todo_server.config.limits import ConnectionLimits
from todo_server.config.parsers import ConfigError
from todo_server.config.redaction import redact_url
from todo_server.config.settings import (
    GENERATED_SECRET_PREFIX,
    DatabaseSettings,
    MigrationSettings,
    SessionStoreSettings,
    Settings,
    load_admin_address,
    load_database_settings,
    load_migration_settings,
    load_settings,
)
from todo_server.config.table import SETTINGS, SETTINGS_BY_NAME, Setting
from todo_server.config.token_sources import url_origin

__all__ = [
    "GENERATED_SECRET_PREFIX",
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "ConfigError",
    "ConnectionLimits",
    "DatabaseSettings",
    "MigrationSettings",
    "SessionStoreSettings",
    "Setting",
    "Settings",
    "load_admin_address",
    "load_database_settings",
    "load_migration_settings",
    "load_settings",
    "redact_url",
    "url_origin",
]
