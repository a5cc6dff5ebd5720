"""Settings: read from the environment once, validated, secrets kept out of sight."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from devtools import settings_docs
from devtools.__main__ import main as devtools_main
from todo_server import config
from todo_server.config import GENERATED_SECRET_PREFIX, SETTINGS, ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 32
URL = "postgresql://app:hunter2-password@db.example.com:5432/todo"


def env(**values: str) -> dict[str, str]:
    return {"DATABASE_URL": URL, "BETTER_AUTH_SECRET": SECRET, **values}


def test_defaults():
    settings = load_settings(env())
    assert settings.allowed_origins == ("http://localhost:3000",)
    assert settings.environment == "development"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    db = settings.database
    assert (db.pool_min, db.pool_max, db.pool_timeout, db.statement_timeout) == (2, 10, 5.0, 5.0)
    assert db.prepare_threshold == 5
    assert (settings.log_level, settings.log_format) == ("info", "text")


def test_values_are_parsed():
    settings = load_settings(
        env(
            ALLOWED_ORIGINS="https://a.example.com, http://localhost:5173/",
            ENVIRONMENT="Staging",
            HOST="0.0.0.0",
            PORT="9000",
            DB_POOL_MIN="1",
            DB_POOL_MAX="4",
            DB_POOL_TIMEOUT="0.5",
            DB_STATEMENT_TIMEOUT="0",
            DB_PREPARE_THRESHOLD="none",
            LOG_LEVEL="DEBUG",
            LOG_FORMAT="json",
        )
    )
    assert settings.allowed_origins == ("https://a.example.com", "http://localhost:5173")
    assert settings.environment == "staging"
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    db = settings.database
    assert (db.pool_min, db.pool_max, db.pool_timeout, db.statement_timeout) == (1, 4, 0.5, 0.0)
    assert db.prepare_threshold is None
    assert (settings.log_level, settings.log_format) == ("debug", "json")


def test_token_settings():
    settings = load_settings(env())
    assert settings.jwt_algorithms == ("HS256",)
    assert settings.jwks_url is None
    assert (settings.hs256_issuer, settings.hs256_audience) == (None, None)
    assert (settings.jwks_issuer, settings.jwks_audience) == (None, None)
    assert settings.access_token_ttl == 86400
    jwks = load_settings(env(JWT_JWKS_URL="https://app.example.com/api/auth/jwks"))
    assert jwks.jwt_algorithms == ("EdDSA", "HS256")
    chosen = load_settings(
        env(JWT_JWKS_URL="https://app.example.com/api/auth/jwks", JWT_ALGORITHMS="rs256, EdDSA")
    )
    assert chosen.jwt_algorithms == ("RS256", "EdDSA")
    assert not chosen.accepts_shared_secret_tokens


def test_issuer_and_audience_per_token_source_default_to_the_shared_ones():
    jwks_url = "https://app.example.com/api/auth/jwks"
    shared = load_settings(env(JWT_JWKS_URL=jwks_url, JWT_ISSUER="https://a", JWT_AUDIENCE="b"))
    assert (shared.hs256_issuer, shared.hs256_audience) == ("https://a", "b")
    assert (shared.jwks_issuer, shared.jwks_audience) == ("https://a", "b")
    own = load_settings(
        env(
            JWT_JWKS_URL=jwks_url,
            JWT_ISSUER="https://a",
            JWT_AUDIENCE="b",
            JWT_HS256_ISSUER="minter",
            JWT_JWKS_AUDIENCE="api",
        )
    )
    assert (own.hs256_issuer, own.hs256_audience) == ("minter", "b")
    assert (own.jwks_issuer, own.jwks_audience) == ("https://a", "api")
    jwks_only = load_settings(env(JWT_JWKS_URL=jwks_url, JWT_JWKS_ISSUER="https://a"))
    assert (jwks_only.hs256_issuer, jwks_only.jwks_issuer) == (None, "https://a")


def test_session_store_settings():
    assert load_settings(env()).session_store is None
    store = load_settings(env(BETTER_AUTH_DATABASE_URL="same")).session_store
    assert store is not None and store.url == URL
    assert (store.session_table, store.user_table) == (("session",), ("user",))
    columns = (store.token_column, store.user_id_column, store.expires_at_column)
    assert columns == ("token", "userId", "expiresAt")
    assert (store.user_key_column, store.email_column, store.name_column) == ("id", "email", "name")
    assert (store.cache_ttl, store.pool_timeout) == (60.0, 5.0)
    assert store.lookup == "table"
    other = "postgresql://reader:s3cret-pw@auth.example.com/better_auth"
    custom = load_settings(
        env(
            BETTER_AUTH_DATABASE_URL=other,
            BETTER_AUTH_SESSION_TABLE="auth.sessions",
            BETTER_AUTH_SESSION_COLUMNS=" session_token , user_id,expires_at",
            BETTER_AUTH_USER_TABLE="users",
            BETTER_AUTH_USER_COLUMNS="id,email_address,full_name",
            BETTER_AUTH_SESSION_CACHE_TTL="1.5",
            BETTER_AUTH_SESSION_LOOKUP="Function",
            DB_POOL_TIMEOUT="2",
        )
    ).session_store
    assert custom is not None and custom.url == other
    assert (custom.session_table, custom.user_table) == (("auth", "sessions"), ("users",))
    assert custom.user_id_column == "user_id" and custom.name_column == "full_name"
    assert (custom.cache_ttl, custom.pool_timeout) == (1.5, 2.0)
    assert custom.lookup == "function"
    assert "s3cret-pw" not in repr(custom) and "s3cret-pw" not in custom.display_url


def test_production_logs_json_by_default():
    assert load_settings(env(ENVIRONMENT="production")).log_format == "json"


@pytest.mark.parametrize(
    ("variable", "values"),
    [
        ("DATABASE_URL", {"DATABASE_URL": ""}),
        ("DATABASE_URL", {"DATABASE_URL": "mysql://x/y"}),
        ("BETTER_AUTH_SECRET", {"BETTER_AUTH_SECRET": ""}),
        ("BETTER_AUTH_SECRET", {"BETTER_AUTH_SECRET": "short"}),
        ("ALLOWED_ORIGINS", {"ALLOWED_ORIGINS": "localhost:3000"}),
        ("ALLOWED_ORIGINS", {"ALLOWED_ORIGINS": "https://a.example.com/path"}),
        ("ENVIRONMENT", {"ENVIRONMENT": "prod"}),
        ("PORT", {"PORT": "eighty"}),
        ("PORT", {"PORT": "70000"}),
        ("DB_POOL_MIN", {"DB_POOL_MIN": "-1"}),
        ("DB_POOL_MAX", {"DB_POOL_MAX": "0"}),
        ("DB_POOL_MAX", {"DB_POOL_MIN": "5", "DB_POOL_MAX": "4"}),
        ("DB_POOL_TIMEOUT", {"DB_POOL_TIMEOUT": "0"}),
        ("DB_POOL_TIMEOUT", {"DB_POOL_TIMEOUT": "nan"}),
        ("DB_STATEMENT_TIMEOUT", {"DB_STATEMENT_TIMEOUT": "-1"}),
        ("DB_STATEMENT_TIMEOUT", {"DB_STATEMENT_TIMEOUT": "1e308"}),  # overflowed in ms
        ("DB_STATEMENT_TIMEOUT", {"DB_STATEMENT_TIMEOUT": "2147484"}),  # past PostgreSQL's int
        ("DB_PREPARE_THRESHOLD", {"DB_PREPARE_THRESHOLD": "sometimes"}),
        ("ACCESS_TOKEN_TTL", {"ACCESS_TOKEN_TTL": "10"}),
        ("JWT_JWKS_URL", {"JWT_JWKS_URL": "ftp://keys"}),
        ("JWT_JWKS_URL", {"JWT_JWKS_URL": "http://app/jwks", "ENVIRONMENT": "production"}),
        ("JWT_ALGORITHMS", {"JWT_ALGORITHMS": "none"}),
        ("JWT_ALGORITHMS", {"JWT_ALGORITHMS": "HS256,"}),
        ("JWT_ALGORITHMS", {"JWT_ALGORITHMS": "EdDSA"}),  # no JWKS to find its keys
        ("JWT_JWKS_REFRESH_INTERVAL", {"JWT_JWKS_REFRESH_INTERVAL": "soon"}),
        ("JWT_JWKS_ISSUER", {"JWT_JWKS_ISSUER": "https://app"}),  # no JWKS tokens at all
        ("JWT_JWKS_AUDIENCE", {"JWT_JWKS_AUDIENCE": "https://app"}),
        (
            "JWT_HS256_ISSUER",
            {"JWT_HS256_ISSUER": "x", "JWT_JWKS_URL": "https://a/jwks", "JWT_ALGORITHMS": "EdDSA"},
        ),
        (
            "JWT_HS256_AUDIENCE",
            {
                "JWT_HS256_AUDIENCE": "x",
                "JWT_JWKS_URL": "https://a/jwks",
                "JWT_ALGORITHMS": "EdDSA",
            },
        ),
        ("BETTER_AUTH_DATABASE_URL", {"BETTER_AUTH_DATABASE_URL": "mysql://x/y"}),
        ("BETTER_AUTH_DATABASE_URL", {"BETTER_AUTH_DATABASE_URL": "yes"}),
        *[
            (name, {"BETTER_AUTH_DATABASE_URL": "same", name: value})
            for name, value in [
                ("BETTER_AUTH_SESSION_TABLE", "a.b.c"),
                ("BETTER_AUTH_SESSION_TABLE", "auth."),
                ("BETTER_AUTH_USER_TABLE", "x" * 64),
                ("BETTER_AUTH_SESSION_COLUMNS", "token,userId"),
                ("BETTER_AUTH_SESSION_COLUMNS", "token,,expiresAt"),
                ("BETTER_AUTH_USER_COLUMNS", "id,email,name,image"),
                ("BETTER_AUTH_USER_COLUMNS", "id,e.mail,name"),
                ("BETTER_AUTH_SESSION_CACHE_TTL", "61"),  # at most a minute
                ("BETTER_AUTH_SESSION_CACHE_TTL", "-1"),
                ("BETTER_AUTH_SESSION_LOOKUP", "view"),
            ]
        ],
        ("LOGIN_MAX_FAILURES", {"LOGIN_MAX_FAILURES": "0"}),
        ("LOGIN_MAX_FAILURES_PER_IP", {"LOGIN_MAX_FAILURES_PER_IP": "x"}),
        ("LOG_LEVEL", {"LOG_LEVEL": "loud"}),
        ("LOG_FORMAT", {"LOG_FORMAT": "xml"}),
    ],
)
def test_bad_values_name_the_variable(variable, values):
    with pytest.raises(ConfigError) as caught:
        load_settings(env(**values))
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_missing_required_settings():
    with pytest.raises(ConfigError, match="^DATABASE_URL: is required"):
        load_settings({"BETTER_AUTH_SECRET": SECRET})
    with pytest.raises(ConfigError, match="^BETTER_AUTH_SECRET: is required"):
        load_settings({"DATABASE_URL": URL})


def test_production_refuses_generated_secret_and_wildcard_origin():
    generated = GENERATED_SECRET_PREFIX + "a" * 64
    assert load_settings(env(BETTER_AUTH_SECRET=generated)).secret == generated
    with pytest.raises(ConfigError, match="^BETTER_AUTH_SECRET: .*production"):
        load_settings(env(ENVIRONMENT="production", BETTER_AUTH_SECRET=generated))
    assert load_settings(env(ALLOWED_ORIGINS="*")).allowed_origins == ("*",)
    with pytest.raises(ConfigError, match="^ALLOWED_ORIGINS: .*production"):
        load_settings(env(ENVIRONMENT="production", ALLOWED_ORIGINS="*"))


def test_secrets_stay_out_of_reprs_and_errors():
    settings = load_settings(env())
    text = repr(settings)
    assert SECRET not in text
    assert "hunter2-password" not in text
    assert "hunter2-password" not in settings.database.display_url
    assert settings.database.display_url == "postgresql://app:***@db.example.com:5432/todo"
    with pytest.raises(ConfigError) as caught:
        load_settings(env(BETTER_AUTH_SECRET="short-secret-value"))
    assert "short-secret-value" not in str(caught.value)


def test_configuration_page_table_is_generated_from_the_declared_settings():
    """Names, defaults and meanings: the page's table is exactly what SETTINGS says."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert _table_of(page) == _table_of(settings_docs.with_settings_table(page)), (
        "docs/configuration.md is stale: run python -m devtools settings-docs --write"
    )
    rows = [line for line in _table_of(page) if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [setting.name for setting in SETTINGS]


def _table_of(page: str) -> list[str]:
    start = page.index(settings_docs.TABLE_START)
    return page[start : page.index(settings_docs.TABLE_END, start)].splitlines()


def test_env_example_is_generated_from_the_declared_settings():
    example = (ROOT / ".env.example").read_text()
    assert example.splitlines() == settings_docs.env_example().splitlines(), (
        ".env.example is stale: run python -m devtools settings-docs --write"
    )


def test_every_setting_is_read_from_the_table_and_documented_once():
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    config = ROOT / "todo_server" / "config"
    # Loading reads each setting by name, through the table; the table is the only module
    # that spells a default out.
    loading = (config / "settings.py").read_text() + (config / "token_sources.py").read_text()
    for name in names:
        assert f'"{name}"' in loading, f"{name} is declared but never loaded"
    for setting in SETTINGS:
        assert setting.default is not None or setting.shown_default is not None, setting.name


@pytest.mark.parametrize(
    "settings_class",
    [
        config.Settings,
        config.DatabaseSettings,
        config.SessionStoreSettings,
        config.MigrationSettings,
        config.ConnectionLimits,
    ],
)
def test_the_settings_classes_have_no_defaults_of_their_own(settings_class):
    """Every field is supplied by loading, from the table: a default here would be a second one."""
    for field in dataclasses.fields(settings_class):
        assert field.default is dataclasses.MISSING, f"{settings_class.__name__}.{field.name}"
        assert field.default_factory is dataclasses.MISSING, field.name


def test_env_example_values_load_and_plain_defaults_change_nothing():
    """A copied .env.example loads to the defaults; each commented-out example is accepted."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    given = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert load_settings(env(**given)) == load_settings(env())
    for line in lines:
        match = re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=(.+)", line)
        if match and match[1] not in ("JWT_ALGORITHMS", "JWT_JWKS_ISSUER", "JWT_JWKS_AUDIENCE"):
            load_settings(env(**{match[1]: match[2]}))
        elif match:  # these need a JWKS to apply to
            load_settings(env(JWT_JWKS_URL=JWKS_URL, **{match[1]: match[2]}))


def test_the_generator_prints_and_rewrites(tmp_path, capsys):
    assert devtools_main(["settings-docs"]) == 0
    assert capsys.readouterr().out == settings_docs.settings_table()
    assert devtools_main(["settings-docs", "--env-example"]) == 0
    assert capsys.readouterr().out == settings_docs.env_example()
    page = (ROOT / "docs" / "configuration.md").read_text()
    stale = page.replace("| `PORT` | `8000` |", "| `PORT` | `80` |")
    assert stale != page
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "configuration.md").write_text(stale)
    (tmp_path / ".env.example").write_text("stale\n")
    assert devtools_main(["settings-docs", "--write", str(tmp_path)]) == 0
    assert (tmp_path / "docs" / "configuration.md").read_text() == page
    assert (tmp_path / ".env.example").read_text() == settings_docs.env_example()


@pytest.mark.parametrize(
    ("conninfo", "shown"),
    [
        (
            "postgresql://todo@db.example.com/todo?password=hunter2-password&sslmode=require",
            "postgresql://todo@db.example.com/todo?password=***&sslmode=require",
        ),
        (
            "postgresql://app:hunter2-password@h1:5432,h2:5433/todo",
            "postgresql://app:***@h1:5432,h2:5433/todo",
        ),
        (
            "postgres://app:hunter2-password@db/todo?sslpassword=hunter2-password",
            "postgres://app:***@db/todo?sslpassword=***",
        ),
        ("host=db user=app password='hunter2-password' dbname=todo", None),
        ("postgresql://app@/todo?host=/run/sock", "postgresql://app@/todo?host=/run/sock"),
        ("not a conninfo = =", "(unparseable connection string)"),
    ],
)
def test_every_form_of_database_password_is_redacted(conninfo, shown):
    from psycopg.conninfo import conninfo_to_dict

    from todo_server.config import redact_url

    redacted = redact_url(conninfo)
    assert "hunter2-password" not in redacted
    if shown is not None:
        assert redacted == shown
    else:
        assert conninfo_to_dict(redacted) == {
            "host": "db",
            "user": "app",
            "password": "***",
            "dbname": "todo",
        }


def test_the_start_up_warning_never_shows_the_password(database_url, caplog):
    import asyncio
    import logging

    from todo_server import app
    from todo_server.storage import migrate

    settings = load_settings(
        env(DATABASE_URL="postgresql://todo@127.0.0.1:1/todo?password=hunter2-password")
    )
    with caplog.at_level(logging.WARNING, logger="todo_server.app"):
        asyncio.run(app.refuse_pending_migrations(settings, migrate.DEFAULT_DIRECTORY))
    assert "unreachable" in caplog.text
    assert "hunter2-password" not in caplog.text
    assert "password=***" in caplog.text


def test_pgbouncer_mode_turns_prepared_statements_off_and_refuses_a_threshold():
    assert load_settings(env()).database.prepare_threshold == 5
    bouncer = load_settings(env(DB_PGBOUNCER="transaction")).database
    assert (bouncer.pgbouncer, bouncer.prepare_threshold) == (True, None)
    with pytest.raises(ConfigError, match="^DB_PREPARE_THRESHOLD: must be none"):
        load_settings(env(DB_PGBOUNCER="transaction", DB_PREPARE_THRESHOLD="5"))
    with pytest.raises(ConfigError, match="^DB_PGBOUNCER: must be one of off, transaction"):
        load_settings(env(DB_PGBOUNCER="session"))


JWKS_URL = "https://app.example.com/api/auth/jwks"


@pytest.mark.parametrize(
    ("configured", "origin"),
    [
        ("http://127.0.0.1:3000/", "http://127.0.0.1:3000"),
        ("https://app.example.com/myapp/", "https://app.example.com"),
        ("http://LOCALHOST:3000", "http://localhost:3000"),
        ("https://app.example.com:443/x", "https://app.example.com"),
        ("HTTP://[::1]:80/", "http://[::1]"),
    ],
)
def test_jwks_issuer_and_audience_count_by_origin_as_better_auth_writes_them(configured, origin):
    settings = load_settings(
        env(JWT_JWKS_URL=JWKS_URL, JWT_JWKS_ISSUER=configured, JWT_JWKS_AUDIENCE=configured)
    )
    assert (settings.jwks_issuer, settings.jwks_audience) == (origin, origin)
    said = [note for note in settings.notes if f"is taken as its origin {origin!r}" in note]
    assert len(said) == 2  # start-up says so, for each


def test_jwks_issuer_and_audience_default_to_the_jwks_origin_and_any_turns_them_off():
    default = load_settings(env(JWT_JWKS_URL="https://App.example.com/api/auth/jwks"))
    assert (default.jwks_issuer, default.jwks_audience) == ("https://app.example.com",) * 2
    off = load_settings(env(JWT_JWKS_URL=JWKS_URL, JWT_JWKS_ISSUER="any", JWT_JWKS_AUDIENCE="ANY"))
    assert (off.jwks_issuer, off.jwks_audience) == (None, None)
    assert len([note for note in off.notes if "is not checked" in note]) == 2
    plain = load_settings(env(JWT_JWKS_URL=JWKS_URL, JWT_JWKS_AUDIENCE="todo-api"))
    assert plain.jwks_audience == "todo-api"  # not a URL: as it is
    # HS256 tokens are minted by frontends, not Better Auth: exactly as configured.
    minted = load_settings(env(JWT_HS256_ISSUER="https://app.example.com/x/"))
    assert minted.hs256_issuer == "https://app.example.com/x/"


def test_an_issuer_other_than_the_jwks_origin_is_pointed_out():
    settings = load_settings(
        env(
            JWT_JWKS_URL="https://auth.example.com/api/auth/jwks",
            JWT_JWKS_ISSUER="https://app.example.com",
        )
    )
    assert any(
        "is not JWT_JWKS_URL's origin 'https://auth.example.com'" in n for n in settings.notes
    )


def test_frontend_hs256_tokens_are_on_without_a_jwks_and_off_with_one():
    assert load_settings(env()).frontend_hs256
    assert not load_settings(env(JWT_JWKS_URL=JWKS_URL)).frontend_hs256
    on = load_settings(env(JWT_JWKS_URL=JWKS_URL, JWT_FRONTEND_HS256="on"))
    assert on.frontend_hs256
    assert any("JWT_FRONTEND_HS256=on with a JWKS" in note for note in on.notes)
    assert not load_settings(env(JWT_FRONTEND_HS256="off")).frontend_hs256
    for bad in (
        {"JWT_FRONTEND_HS256": "maybe"},
        {"JWT_JWKS_URL": JWKS_URL, "JWT_ALGORITHMS": "EdDSA", "JWT_FRONTEND_HS256": "on"},
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings(env(**bad))
        assert caught.value.variable == "JWT_FRONTEND_HS256"


@pytest.mark.parametrize(
    ("secret", "placeholder"),
    [
        ("better-auth-secret-12345678901234567890", True),  # Better Auth's docs
        ("change-me-to-a-long-random-secret-of-32-characters-or-more", True),
        ("a" * 40, True),
        ("Zq8vXk2pR7mN4tY9wB3cF6hJ1sL5dG0e", False),
    ],
)
def test_a_placeholder_secret_is_pointed_out(secret, placeholder):
    settings = load_settings({**env(), "BETTER_AUTH_SECRET": secret})
    assert any("placeholder" in note for note in settings.notes) == placeholder


def test_start_up_logs_what_loading_the_settings_decided(make_client, caplog):
    with caplog.at_level("WARNING", logger="todo_server.app"):
        client = make_client(JWT_JWKS_URL="http://127.0.0.1:9/api/auth/jwks", JWT_JWKS_ISSUER="any")
        client.get("/health")
    assert "settings: JWT_JWKS_ISSUER=any: the issuer of JWKS tokens is not checked" in caplog.text


@pytest.mark.parametrize("variable", ["DATABASE_URL", "BETTER_AUTH_SECRET", "ALLOWED_ORIGINS"])
def test_a_value_that_is_not_utf8_names_the_variable(variable):
    """The environment holds bytes; Python keeps undecodable ones as surrogates (os.fsdecode)."""
    import os

    raw = os.fsdecode(
        b"postgresql://x\xff@localhost/todo" if variable == "DATABASE_URL" else b"\xff\xfe"
    )
    with pytest.raises(ConfigError) as refused:
        load_settings(env(**{variable: raw}))
    assert str(refused.value) == f"{variable}: is not valid UTF-8"
    assert "\\udcff" not in repr(refused.value) and "\udcff" not in str(refused.value)
