"""The tasks API: one set of handlers under three route prefixes.

``/api/tasks`` is canonical (the user is the token's subject). The prefixes
``/api/{user_id}/tasks`` and ``/users/{user_id}/tasks`` serve older clients and
Next.js frontends; their ``user_id`` must be the token's subject, checked before
anything else. Handlers read and validate, then call ``tasks.store`` (one task)
or ``tasks.listing`` (pages of them), whose every statement is scoped by the
user id.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from todo_server.auth.guard import ApiRoute, Handler
from todo_server.auth.identity import AuthUser
from todo_server.config import Settings
from todo_server.errors import (
    Forbidden,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from todo_server.storage.db import retry_conflicts
from todo_server.storage.row_security import UserConnection
from todo_server.storage.user_slots import connection_for
from todo_server.tasks import idempotency, listing, store, sync
from todo_server.tasks.list_query import ListQuery, list_query_from
from todo_server.tasks.page_tokens import (
    CursorCodec,
    PageToken,
    decode_changes_cursor,
    decode_sync_token,
    encode_changes_cursor,
    encode_sync_token,
)
from todo_server.tasks.store import QuotaExceeded, TaskRow
from todo_server.tasks.validation import is_task_id, parse_task_fields
from todo_server.web.bodies import FieldErrors, read_json_object, read_optional_json_object
from todo_server.web.conditional import (
    etag,
    if_match_versions,
    if_none_match,
    is_current,
    not_modified,
)
from todo_server.web.responses import RenderedJSON

logger = logging.getLogger("todo_server.tasks")

PREFIXES = ("/api/tasks", "/api/{user_id}/tasks", "/users/{user_id}/tasks")
TASK_NOT_FOUND = "Task not found"
TASK_CHANGED = "The task has changed since you read it (If-Match)"


# --- request helpers ------------------------------------------------------------


def connection_as(request: Request, user_id: str) -> connection_for:
    """A pooled connection acting as ``user_id``, within that user's share of the pool."""
    state = request.state
    return connection_for(state.user_slots, state.pool, user_id)


def owner_id(request: Request) -> str:
    """The token's user id; 403 when a path prefix names someone else."""
    user: AuthUser = request.state.user
    named = request.path_params.get("user_id")
    if named is not None and named != user.id:
        logger.warning(
            "authorization violation: user %r asked for tasks of user %r", user.id, named[:255]
        )
        raise Forbidden("You can only access your own tasks")
    return user.id


def task_id_of(request: Request) -> str:
    """The path's task id; a malformed one is just a task that does not exist."""
    task_id: str = request.path_params["task_id"]
    if not is_task_id(task_id):
        raise NotFound(TASK_NOT_FOUND)
    return task_id.lower()


def location_base(request: Request) -> str:
    """The collection's path, percent-encoded, for Location headers.

    The path holds the user id as decoded text, which may be anything a token's
    subject can be (``ユーザー``, ``a b``, ``100%``); a header must be ASCII.
    Built before anything is written, so a create never commits and then
    fails to answer.
    """
    return quote(request.scope["path"].rstrip("/"), safe="/")


def list_etag(request: Request, user_id: str, state: str) -> str:
    """A list's ETag: the user's task state and everything that shapes the page.

    The query string as sent (a client polls the same URL), the user and the
    dialect; hashed, so it says nothing about ids or transaction numbers.
    """
    settings: Settings = request.state.settings
    query: bytes = request.scope["query_string"]  # as sent; cheaper than building request.url
    shape = "\x1f".join((user_id, settings.api_dialect, state)).encode("utf-8", "surrogatepass")
    return '"L' + hashlib.sha256(shape + b"\x1f" + query).hexdigest()[:24] + '"'


def task_response(
    row: TaskRow, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return RenderedJSON(row.body.encode(), status, etag=etag(row.version), headers=headers)


def quota_error(settings: Settings) -> ValidationFailed:
    """A create or restore refused by the live-task quota, naming the setting and its value."""
    cap = settings.max_tasks_per_user
    return ValidationFailed(
        f"Task limit reached: at most {cap} tasks per user; delete some before creating more",
        details=[
            {
                "field": "MAX_TASKS_PER_USER",
                "message": f"is {cap}: the user has that many live tasks; delete some first",
            }
        ],
    )


def deleted_cap_error(settings: Settings) -> ValidationFailed:
    """A delete refused by the cap on deleted tasks, naming the setting and its value."""
    cap = settings.max_deleted_tasks_per_user
    days = settings.task_retention_days
    return ValidationFailed(
        f"Too many deleted tasks kept for restore: at most {cap}; deleted tasks"
        f" are purged {days} days after deletion",
        details=[
            {
                "field": "MAX_DELETED_TASKS_PER_USER",
                "message": f"is {cap}: the user keeps that many deleted tasks for restore,"
                f" each until it is purged {days} days after its deletion",
            }
        ],
    )


async def missing(
    conn: UserConnection, user_id: str, task_id: str, if_match: list[int] | None
) -> Exception:
    """Why a write matched nothing: a live task whose version differs (412), or none (404)."""
    if if_match is not None:
        found = await store.find_task_any_state(conn, user_id, task_id)
        if found is not None and not found[1]:
            return PreconditionFailed(TASK_CHANGED)
    return NotFound(TASK_NOT_FOUND)


# --- handlers -------------------------------------------------------------------


async def list_tasks(request: Request) -> Response:
    user_id = owner_id(request)
    codec: CursorCodec = request.state.cursors
    query = list_query_from(request.scope["query_string"])
    if query.syncing:
        return await list_changes(request, user_id, query)
    after = codec.decode(query.cursor, query.sort) if query.cursor is not None else None
    wanted = if_none_match(request)
    async with connection_as(request, user_id) as conn:
        if wanted is not None:  # a poll: one index lookup, no page, when nothing changed
            state = await listing.list_state(conn, user_id)
            if state.endswith(listing.WRITTEN_ELSEWHERE):
                await sync.rebase_foreign_changes(conn, user_id)
                state = await listing.list_state(conn, user_id)
            tag = list_etag(request, user_id, state)
            if is_current(wanted, tag):
                return not_modified(tag)
        try:
            page = await read_page(conn, user_id, query, after)
            if page.state.endswith(listing.WRITTEN_ELSEWHERE):
                await sync.rebase_foreign_changes(conn, user_id)
                page = await read_page(conn, user_id, query, after)
        except psycopg.errors.DataError:
            # Only a cursor carries values not checked here; ours always cast.
            raise ValidationFailed.field("cursor", "is not a cursor this server issued") from None
    next_cursor = codec.encode(page.next_cursor) if page.next_cursor else None
    settings: Settings = request.state.settings
    tag = list_etag(request, user_id, page.state)
    if settings.compatible:
        return bare_page(request, page.bodies, page.count, next_cursor, tag)
    # A cursor is base64url (page_tokens.py): quoted as it is, it is a JSON string.
    cursor_json = "null" if next_cursor is None else f'"{next_cursor}"'
    body = f'{{"tasks":[{page.bodies}],"count":{page.count},"next_cursor":{cursor_json}}}'
    return RenderedJSON(body.encode(), etag=tag)


async def read_page(
    conn: UserConnection, user_id: str, query: ListQuery, after: PageToken | None
) -> listing.Page:
    """One page of the list the query asks for."""
    return await listing.list_tasks(
        conn, user_id, sort=query.sort, filters=query.filters(), after=after, limit=query.limit
    )


async def list_changes(request: Request, user_id: str, query: ListQuery) -> Response:
    """Changes since a ``sync_token`` (or ``updated_since``), and the token for next time."""
    codec: CursorCodec = request.state.cursors
    floor: int | None = None
    after: tuple[int, int, str] | None = None
    issued_by: list[str | None] = []
    if query.sync_token is not None:
        floor, token_database = decode_sync_token(codec, query.sync_token)
        issued_by.append(token_database)
    if query.cursor is not None:
        page_floor, last_xid, last_id, cursor_database = decode_changes_cursor(codec, query.cursor)
        after = (page_floor, last_xid, last_id)
        issued_by.append(cursor_database)
    async with connection_as(request, user_id) as conn:
        page = await sync.read_changes(
            conn,
            user_id,
            floor=floor,
            since=query.updated_since,
            after=after,
            limit=query.limit,
            issued_by=tuple(d for d in issued_by if d is not None),
        )
    next_cursor = None
    if page.last is not None:
        next_cursor = encode_changes_cursor(codec, page.next_floor, *page.last, page.database)
    body = (
        '{"tasks":['
        + page.bodies
        + f'],"count":{page.count},"next_cursor":{json.dumps(next_cursor)},'
        + f'"sync_token":"{encode_sync_token(codec, page.next_floor, page.database)}"}}'
    )
    return Response(body, media_type="application/json")


def bare_page(
    request: Request, bodies: str, count: int, next_cursor: str | None, tag: str
) -> Response:
    """The compatible dialect's page: a bare JSON array, paging in headers.

    ``Link: <...>; rel="next"`` (RFC 8288, as GitHub's API pages) is this same
    request with the next cursor; ``X-Count`` is how many tasks the page holds.
    """
    headers = {"X-Count": str(count)}
    if next_cursor is not None:
        # Percent-encoded like Location: a header is ASCII, and a user id in the
        # path may be anything a token's subject can be (ユーザー, "a>b;c").
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        base = request.url
        host = quote(base.netloc, safe=":[]")
        url = f"{base.scheme}://{host}{location_base(request)}?" + urlencode(
            [*query, ("cursor", next_cursor)]
        )
        headers["Link"] = f'<{url}>; rel="next"'
    return RenderedJSON(f"[{bodies}]".encode(), etag=tag, headers=headers)


async def create_task(request: Request) -> Response:
    user_id = owner_id(request)
    user: AuthUser = request.state.user
    settings: Settings = request.state.settings
    key = idempotency.checked_key(request.headers.get("idempotency-key"))
    data = await read_json_object(request)
    fields = parse_task_fields(data, creating=True)
    collection = location_base(request)

    async def create(conn: UserConnection) -> TaskRow:
        try:
            return await store.create_task(
                conn,
                user_id=user_id,
                email=user.email,
                name=user.name,
                fields=fields,
                max_tasks=settings.max_tasks_per_user,
            )
        except QuotaExceeded:
            raise quota_error(settings) from None

    async def create_once(conn: UserConnection) -> Response:
        """The create with its key, as one transaction (so it can be retried whole)."""
        if key is None:
            row = await create(conn)
            return task_response(row, 201, {"Location": f"{collection}/{row.id}"})
        fingerprint = idempotency.request_hash(data)
        async with conn.transaction():
            if not await idempotency.claim(conn, user_id, key, fingerprint):
                stored = await idempotency.stored_response(conn, user_id, key, fingerprint)
                if stored is None:
                    raise ValidationFailed.field("Idempotency-Key", "is in use; retry shortly")
                replay = TaskRow(stored.task_id, 1, stored.body)
                return task_response(
                    replay,
                    stored.status,
                    {
                        "Location": f"{collection}/{stored.task_id}",
                        "Idempotent-Replayed": "true",
                    },
                )
            row = await create(conn)
            await idempotency.save_response(conn, user_id, key, 201, row.id, row.body)
        return task_response(row, 201, {"Location": f"{collection}/{row.id}"})

    async with connection_as(request, user_id) as conn:
        return await retry_conflicts(conn, lambda: create_once(conn), "create task")


async def get_task(request: Request) -> Response:
    user_id = owner_id(request)
    task_id = task_id_of(request)
    async with connection_as(request, user_id) as conn:
        row = await store.get_task(conn, user_id, task_id)
    if row is None:
        raise NotFound(TASK_NOT_FOUND)
    wanted = if_none_match(request)
    if wanted is not None and is_current(wanted, etag(row.version)):
        return not_modified(etag(row.version))
    return task_response(row)


async def update_task(request: Request) -> Response:
    """PUT and PATCH alike: change the fields given, keep the rest."""
    user_id = owner_id(request)
    task_id = task_id_of(request)
    fields = parse_task_fields(await read_json_object(request), creating=False)
    if_match = if_match_versions(request)
    return await change_task(
        request,
        user_id,
        task_id,
        if_match,
        lambda conn: store.update_task(conn, user_id, task_id, fields, if_match),
        "update task",
    )


async def change_task(
    request: Request,
    user_id: str,
    task_id: str,
    if_match: list[int] | None,
    write: Callable[[UserConnection], Awaitable[TaskRow | None]],
    what: str,
) -> Response:
    """Run one task's change (retried on conflicts); 404 or 412 when it matched nothing."""
    async with connection_as(request, user_id) as conn:
        row = await retry_conflicts(conn, lambda: write(conn), what)
        if row is None:
            raise await missing(conn, user_id, task_id, if_match)
    return task_response(row)


async def completion_from_body(request: Request) -> bool | None:
    """``{"completed": bool}`` sets; no body, an empty body or ``{}`` toggles (None)."""
    data = await read_optional_json_object(request)
    if data is None:
        return None
    errors = FieldErrors()
    errors.unknown_fields(data, {"completed"})
    completed = data.get("completed")
    if "completed" in data and not isinstance(completed, bool):
        errors.add("completed", "must be true or false")
    errors.raise_if_any()
    return completed


async def complete_task(request: Request) -> Response:
    user_id = owner_id(request)
    task_id = task_id_of(request)
    completed = await completion_from_body(request)
    if_match = if_match_versions(request)
    return await change_task(
        request,
        user_id,
        task_id,
        if_match,
        lambda conn: store.complete_task(conn, user_id, task_id, completed, if_match),
        "complete task",
    )


async def delete_task(request: Request) -> Response:
    user_id = owner_id(request)
    task_id = task_id_of(request)
    if_match = if_match_versions(request)
    settings: Settings = request.state.settings
    cap = settings.max_deleted_tasks_per_user
    async with connection_as(request, user_id) as conn:
        deleted = await retry_conflicts(
            conn,
            lambda: store.delete_task(conn, user_id, task_id, if_match, cap),
            "delete task",
        )
        if deleted is None:
            found = await store.find_task_any_state(conn, user_id, task_id)
            if found and not found[1] and (if_match is None or found[0].version in if_match):
                raise deleted_cap_error(settings)  # it is there and matches: the cap refused it
            raise await missing(conn, user_id, task_id, if_match)
    if settings.compatible:  # frontends that call res.json() on the answer
        return task_response(deleted)
    return Response(status_code=204)


async def restore_task(request: Request) -> Response:
    """Undo a soft delete; restoring a live task changes nothing and returns it."""
    user_id = owner_id(request)
    task_id = task_id_of(request)
    settings: Settings = request.state.settings
    if_match = if_match_versions(request)
    async with connection_as(request, user_id) as conn:
        try:
            row = await retry_conflicts(
                conn,
                lambda: store.restore_task(
                    conn, user_id, task_id, if_match, settings.max_tasks_per_user
                ),
                "restore task",
            )
        except QuotaExceeded:
            raise quota_error(settings) from None
        if row is not None:
            return task_response(row)
        found = await store.find_task_any_state(conn, user_id, task_id)
    if found is None:
        raise NotFound(TASK_NOT_FOUND)
    current, deleted = found
    if if_match is not None and current.version not in if_match:
        raise PreconditionFailed(TASK_CHANGED)
    if deleted:  # lost a race with another restore or delete; report what is there now
        raise NotFound(TASK_NOT_FOUND)
    return task_response(current)


# --- routes -----------------------------------------------------------------------


def by_method(**handlers: Handler) -> Handler:
    """One endpoint per path, so a 405 lists every method the path allows."""
    table = {method.upper(): handler for method, handler in handlers.items()}
    if "GET" in table:
        table["HEAD"] = table["GET"]

    async def endpoint(request: Request) -> Response:
        return await table[request.method](request)

    return endpoint


def task_routes() -> list[ApiRoute]:
    """The task routes under every prefix; every one needs a token."""
    collection = by_method(get=list_tasks, post=create_task)
    item = by_method(get=get_task, put=update_task, patch=update_task, delete=delete_task)
    routes = []
    for prefix in PREFIXES:
        routes += [
            ApiRoute(prefix, collection, methods=["GET", "POST"]),
            ApiRoute(prefix + "/{task_id}", item, methods=["GET", "PUT", "PATCH", "DELETE"]),
            ApiRoute(prefix + "/{task_id}/complete", complete_task, methods=["PATCH"]),
            ApiRoute(prefix + "/{task_id}/restore", restore_task, methods=["POST"]),
        ]
    return routes
