"""Local accounts: ``POST /auth/register``, ``POST /auth/login``, ``GET /auth/me``.

Wrong password and unknown email get the same 401 body and take the same time
(an unknown email is checked against a dummy hash). Failed logins are throttled
per email and per client address (see ``auth.login_throttle``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from todo_server import metrics
from todo_server.auth.identity import AuthUser
from todo_server.auth.login_throttle import LoginThrottle
from todo_server.auth.passwords import (
    LOGIN,
    REGISTRATION,
    dummy_hash,
    hash_password_async,
    needs_rehash,
    verify_password_async,
)
from todo_server.auth.tokens import issue_token
from todo_server.config import Settings
from todo_server.errors import Conflict, Forbidden, RateLimited, Unauthorized
from todo_server.storage.db import Pool
from todo_server.storage.row_security import acting_as
from todo_server.text_rules import is_identity_text
from todo_server.web.bodies import FieldErrors, read_form_or_json, read_json_object

logger = logging.getLogger("todo_server.accounts")

MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 100

INSERT_LOCAL_USER_SQL = """
INSERT INTO users (id, email, name, password_hash)
VALUES (%(id)s, %(email)s, %(name)s, %(password_hash)s)
ON CONFLICT (lower(email)) WHERE password_hash IS NOT NULL DO NOTHING
RETURNING id, email, name, created_at
"""

# Before login there is no user to act as: a narrow SECURITY DEFINER function
# (sql/0009) finds the one local account for an email, and nothing else.
FIND_LOCAL_USER_BY_EMAIL_SQL = """
SELECT id, email, name, created_at, password_hash FROM todo_local_account(%(email)s)
"""

FIND_LOCAL_USER_BY_ID_SQL = """
SELECT id, email, name, created_at FROM users WHERE id = %(id)s AND password_hash IS NOT NULL
"""

UPDATE_PASSWORD_HASH_SQL = """
UPDATE users SET password_hash = %(password_hash)s, updated_at = now() WHERE id = %(id)s
"""

INVALID_CREDENTIALS = "Invalid email or password"


def normalize_email(value: str) -> str:
    return value.strip().lower()


def email_problem(email: str) -> str | None:
    """Why ``email`` (already normalized) is not a plausible address, or None."""
    if not email:
        return "is required"
    if len(email) > MAX_EMAIL_LENGTH:
        return f"must be at most {MAX_EMAIL_LENGTH} characters"
    local, at, domain = email.partition("@")
    if (
        not at
        or "@" in domain
        or not local
        or not domain
        or any(char.isspace() or ord(char) < 0x20 for char in email)
        or domain.startswith(".")
        or domain.endswith(".")
    ):
        return "must be an email address like name@example.com"
    return None


def validate_registration(data: dict[str, Any]) -> tuple[str, str, str | None]:
    """(email, password, name) from a register body, or a 422 listing every problem."""
    errors = FieldErrors()
    errors.unknown_fields(data, {"email", "password", "name"})

    email = ""
    raw_email = data.get("email")
    if not isinstance(raw_email, str):
        errors.add("email", "is required" if raw_email is None else "must be a string")
    else:
        email = normalize_email(raw_email)
        problem = email_problem(email)
        if problem:
            errors.add("email", problem)

    password = data.get("password")
    if not isinstance(password, str):
        errors.add("password", "is required" if password is None else "must be a string")
    elif not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        errors.add(
            "password",
            f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
        )

    name = data.get("name")
    if name is not None:
        if not isinstance(name, str):
            errors.add("name", "must be a string or null")
        elif len(name.strip()) > MAX_NAME_LENGTH:
            errors.add("name", f"must be at most {MAX_NAME_LENGTH} characters")
        elif not is_identity_text(name):
            # As a frontend token's name claim is checked (tokens.py): a name is
            # shown to people and logged; control characters have no place in it.
            errors.add("name", "must not contain control characters")
        else:
            name = name.strip() or None
    errors.raise_if_any()
    assert isinstance(password, str)
    return email, password, name


def validate_login(data: dict[str, Any]) -> tuple[str, str]:
    """(email, password) from a JSON body or an OAuth2 password-flow form."""
    errors = FieldErrors()
    is_form_post = "username" in data and "email" not in data
    raw_email = data.get("username") if is_form_post else data.get("email")
    field = "username" if is_form_post else "email"
    if not isinstance(raw_email, str) or not raw_email.strip():
        errors.add(field, "is required" if raw_email in (None, "") else "must be a string")
    elif len(raw_email.strip()) > MAX_EMAIL_LENGTH or not is_identity_text(raw_email):
        errors.add(field, "must be an email address like name@example.com")
    password = data.get("password")
    if not isinstance(password, str) or not password:
        errors.add("password", "is required" if password in (None, "") else "must be a string")
    elif len(password) > MAX_PASSWORD_LENGTH:
        errors.add("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")
    errors.raise_if_any()
    assert isinstance(raw_email, str) and isinstance(password, str)
    return normalize_email(raw_email), password


def user_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "email": row["email"],
        "name": row["name"],
        "created_at": row["created_at"].isoformat(),
    }


def token_json(settings: Settings, user: dict[str, Any]) -> dict[str, Any]:
    token = issue_token(settings, user["id"], user["email"], user["name"])
    return {
        "access_token": token,
        "token": token,  # the name some frontends read
        "token_type": "bearer",
        "expires_in": settings.access_token_ttl,
        "user": user_json(user),
    }


def client_address(request: Request) -> str:
    """The client's address as the server saw it (or as a trusted proxy reported it)."""
    return request.client.host if request.client else "unknown"


def refuse_when_local_accounts_disabled(settings: Settings) -> None:
    if not settings.accepts_shared_secret_tokens:
        raise Forbidden("Local accounts are disabled: JWT_ALGORITHMS does not accept HS256 tokens")


async def register(request: Request) -> JSONResponse:
    settings: Settings = request.state.settings
    pool: Pool = request.state.pool
    refuse_when_local_accounts_disabled(settings)
    throttle: LoginThrottle = request.state.login_throttle
    email, password, name = validate_registration(await read_json_object(request))
    async with pool.connection() as conn:
        reservation = await throttle.reserve_registration(conn, client_address(request))
    if reservation.retry_after is not None:
        logger.warning("registration throttled (retry after %ss)", reservation.retry_after)
        metrics.throttled("registration")
        raise RateLimited(
            "Too many registrations from this address; try again later",
            headers={"Retry-After": str(reservation.retry_after)},
        )
    password_hash = await hash_password_async(password, REGISTRATION)
    user_id = str(uuid.uuid4())
    async with pool.connection() as conn, acting_as(conn, user_id):
        cursor = await conn.execute(
            INSERT_LOCAL_USER_SQL,
            {"id": user_id, "email": email, "name": name, "password_hash": password_hash},
        )
        row = await cursor.fetchone()
    if row is None:
        raise Conflict("An account with this email already exists")
    logger.info("registered user %s", row["id"])
    return JSONResponse(token_json(settings, row), status_code=201)


async def login(request: Request) -> JSONResponse:
    settings: Settings = request.state.settings
    pool: Pool = request.state.pool
    throttle: LoginThrottle = request.state.login_throttle
    refuse_when_local_accounts_disabled(settings)
    email, password = validate_login(await read_form_or_json(request))

    # Reserve the attempt before hashing: concurrent attempts cannot all pass the check.
    async with pool.connection() as conn:
        reservation = await throttle.reserve_login(conn, email, client_address(request))
        if reservation.retry_after is not None:
            logger.warning("login throttled (retry after %ss)", reservation.retry_after)
            metrics.throttled("login")
            raise RateLimited(
                "Too many failed logins; try again later",
                headers={"Retry-After": str(reservation.retry_after)},
            )
        cursor = await conn.execute(FIND_LOCAL_USER_BY_EMAIL_SQL, {"email": email})
        user = await cursor.fetchone()

    stored = user["password_hash"] if user else dummy_hash()
    matches = await verify_password_async(password, stored)

    if user is None or not matches:
        # The reservation stays: it is the failure.
        logger.info("login failed (%s)", "unknown email" if user is None else "wrong password")
        raise Unauthorized(INVALID_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"})

    # Hash before taking a connection: scrypt is slow by design, the pool is not.
    upgraded = await hash_password_async(password, LOGIN) if needs_rehash(stored) else None
    async with pool.connection() as conn:
        await throttle.release_login(conn, email, reservation)
        if upgraded is not None:
            async with acting_as(conn, user["id"]):
                await conn.execute(
                    UPDATE_PASSWORD_HASH_SQL, {"id": user["id"], "password_hash": upgraded}
                )
    return JSONResponse(token_json(settings, user))


async def me(request: Request) -> JSONResponse:
    user: AuthUser = request.state.user
    pool: Pool = request.state.pool
    async with pool.connection() as conn, acting_as(conn, user.id):
        cursor = await conn.execute(FIND_LOCAL_USER_BY_ID_SQL, {"id": user.id})
        row = await cursor.fetchone()
    if row is not None:
        return JSONResponse(user_json(row))
    return JSONResponse({"id": user.id, "email": user.email, "name": user.name})
