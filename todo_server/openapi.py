"""The OpenAPI 3.1 document, built from the same constants the validators enforce.

Every limit below (lengths, enums, counts) is imported from the module that
enforces it, so the document cannot drift from the service; the tests check
that every route is documented and every documented route exists.
"""

from __future__ import annotations

import copy
from typing import Any

from todo_server import errors, package_version
from todo_server.auth import accounts
from todo_server.auth.identity import MAX_SUBJECT_LENGTH
from todo_server.tasks import endpoints, idempotency, validation
from todo_server.tasks.page_tokens import MAX_CURSOR_LENGTH
from todo_server.tasks.store import TASK_FIELDS
from todo_server.text_rules import NO_CONTROLS_PATTERN, NO_NUL_PATTERN
from todo_server.web.middleware import MAX_BODY_BYTES, MAX_REQUEST_ID_LENGTH

#: The operationId suffix and tag of the task operations under each of ``tasks.endpoints.PREFIXES``,
#: which owns the prefixes: names for people, so they are chosen here; a prefix tasks
#: serves without a name here fails the document's build (and its tests) at once.
PREFIX_NAMES = {
    "/api/tasks": ("", "tasks"),
    "/api/{user_id}/tasks": ("UnderApiUser", "tasks (user in path)"),
    "/users/{user_id}/tasks": ("UnderUsers", "tasks (user in path)"),
}


def error_codes() -> list[str]:
    """Every code the service answers with: the ``errors.ApiError`` family's, by status."""

    def family(cls: type[errors.ApiError]) -> list[type[errors.ApiError]]:
        return [cls, *(member for sub in cls.__subclasses__() for member in family(sub))]

    ordered = sorted(family(errors.ApiError), key=lambda cls: cls.status)
    return list(dict.fromkeys(cls.code for cls in ordered))


# Text the service stores: no NUL, and (for trimmed fields) not only whitespace.

SOME_TEXT = "^[^\\u0000]*\\S[^\\u0000]*$"

TIMESTAMP = {"type": "string", "format": "date-time", "examples": ["2026-12-01T09:00:00+00:00"]}


def ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _task_properties() -> dict[str, Any]:
    ti = validation
    return {
        "title": {
            "type": "string",
            "minLength": 1,
            "maxLength": ti.TITLE_MAX,
            "pattern": SOME_TEXT,
            "description": f"Trimmed; 1 to {ti.TITLE_MAX} characters.",
            "examples": ["Buy milk"],
        },
        "description": {
            "type": ["string", "null"],
            "maxLength": ti.DESCRIPTION_MAX,
            "pattern": NO_NUL_PATTERN,
            "examples": ["Two litres, semi-skimmed"],
        },
        "completed": {"type": "boolean"},
        "priority": {"type": "string", "enum": list(ti.PRIORITIES), "default": ti.DEFAULT_PRIORITY},
        "due_at": {**TIMESTAMP, "type": ["string", "null"], "description": "RFC 3339, with offset"},
        "tags": {
            "type": "array",
            "maxItems": ti.TAGS_MAX,
            "uniqueItems": True,
            "items": {
                "type": "string",
                "minLength": 1,
                "maxLength": ti.TAG_MAX,
                "pattern": SOME_TEXT,
            },
            "examples": [["home", "errands"]],
        },
    }


def schemas() -> dict[str, Any]:
    writable = _task_properties()
    task_fields = list(TASK_FIELDS)
    return {
        "Error": {
            "type": "object",
            "required": ["code", "message", "details", "request_id", "detail"],
            "additionalProperties": False,
            "properties": {
                "code": {
                    "type": "string",
                    "enum": error_codes(),
                },
                "message": {"type": "string"},
                "details": {"type": ["array", "null"], "items": ref("FieldError")},
                "request_id": {"type": ["string", "null"]},
                "detail": {
                    "type": "string",
                    "description": "The message again, under FastAPI's name for it",
                },
            },
            "examples": [
                {
                    "code": "not_found",
                    "message": "Task not found",
                    "details": None,
                    "request_id": "5f0c6b1e9a7d4c2b8e3f1a2b3c4d5e6f",
                    "detail": "Task not found",
                }
            ],
        },
        "FieldError": {
            "type": "object",
            "required": ["field", "message"],
            "additionalProperties": False,
            "properties": {
                "field": {
                    "type": "string",
                    "description": "What was refused: a body field, query parameter or header,"
                    " or the setting whose limit was reached (MAX_TASKS_PER_USER,"
                    " MAX_DELETED_TASKS_PER_USER)",
                },
                "message": {"type": "string"},
            },
        },
        "Task": {
            "type": "object",
            "required": task_fields,
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "user_id": {"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT_LENGTH},
                "title": {"type": "string", "minLength": 1, "maxLength": validation.TITLE_MAX},
                "description": {
                    "type": ["string", "null"],
                    "maxLength": validation.DESCRIPTION_MAX,
                },
                "completed": {"type": "boolean"},
                "completed_at": {**TIMESTAMP, "type": ["string", "null"]},
                "priority": {"type": "string", "enum": list(validation.PRIORITIES)},
                "due_at": {**TIMESTAMP, "type": ["string", "null"]},
                "tags": {
                    "type": "array",
                    "maxItems": validation.TAGS_MAX,
                    "items": {"type": "string", "minLength": 1, "maxLength": validation.TAG_MAX},
                },
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
            },
            "examples": [
                {
                    "id": "0b9f5c1e-3d2a-4c55-9d0e-6f1a2b3c4d5e",
                    "user_id": "user_2x8Kq",
                    "title": "Buy milk",
                    "description": None,
                    "completed": False,
                    "completed_at": None,
                    "priority": "high",
                    "due_at": "2026-12-01T09:00:00+00:00",
                    "tags": ["home"],
                    "created_at": "2026-11-23T10:00:00+00:00",
                    "updated_at": "2026-11-23T10:00:00+00:00",
                }
            ],
        },
        "Tombstone": {
            "type": "object",
            "description": "A deleted task in a sync (sync_token or updated_since).",
            "required": ["id", "deleted", "updated_at"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "deleted": {"const": True},
                "updated_at": TIMESTAMP,
            },
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks", "count", "next_cursor"],
            "additionalProperties": False,
            "properties": {
                "tasks": {
                    "type": "array",
                    "items": {"anyOf": [ref("Task"), ref("Tombstone")]},
                    "description": "Tombstones appear only in a sync.",
                },
                "count": {"type": "integer", "minimum": 0, "description": "Tasks in this page"},
                "next_cursor": {"type": ["string", "null"]},
                "sync_token": {
                    "type": "string",
                    "description": "Only in a sync: send it as sync_token for the next sync"
                    " once every page of this one is read. Ordered by commit, so no change"
                    " is ever missed; a change may come twice.",
                },
            },
        },
        "TaskCreate": {
            "type": "object",
            "required": ["title"],
            "additionalProperties": False,
            "properties": writable,
            "examples": [{"title": "Buy milk", "priority": "high", "tags": ["home"]}],
        },
        "TaskUpdate": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": writable,
            "description": "The fields to change; the others keep their values.",
            "examples": [{"title": "Buy oat milk", "completed": True}],
        },
        "Completion": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"completed": {"type": "boolean"}},
            "description": "Sets completion; without 'completed' (or with no body) it toggles.",
        },
        "Registration": {
            "type": "object",
            "required": ["email", "password"],
            "additionalProperties": False,
            "properties": {
                "email": {
                    "type": "string",
                    "maxLength": accounts.MAX_EMAIL_LENGTH,
                    "format": "email",
                    "examples": ["ada@example.com"],
                },
                "password": {
                    "type": "string",
                    "minLength": accounts.MIN_PASSWORD_LENGTH,
                    "maxLength": accounts.MAX_PASSWORD_LENGTH,
                    "format": "password",
                },
                "name": {
                    "type": ["string", "null"],
                    "maxLength": accounts.MAX_NAME_LENGTH,
                    "pattern": NO_CONTROLS_PATTERN,
                },
            },
        },
        "Login": {
            "type": "object",
            "required": ["email", "password"],
            "properties": {
                "email": {"type": "string", "minLength": 1, "maxLength": accounts.MAX_EMAIL_LENGTH},
                "password": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": accounts.MAX_PASSWORD_LENGTH,
                    "format": "password",
                },
            },
        },
        "LoginForm": {
            "type": "object",
            "required": ["username", "password"],
            "properties": {
                "username": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": accounts.MAX_EMAIL_LENGTH,
                    "description": "The account's email (OAuth2 password flow)",
                },
                "password": {"type": "string", "minLength": 1, "format": "password"},
            },
        },
        "LocalUser": {
            "type": "object",
            "required": ["id", "email", "name", "created_at"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "email": {"type": "string"},
                "name": {"type": ["string", "null"]},
                "created_at": TIMESTAMP,
            },
        },
        "TokenUser": {
            "type": "object",
            "description": "A user known only from a frontend's token.",
            "required": ["id", "email", "name"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "email": {"type": ["string", "null"]},
                "name": {"type": ["string", "null"]},
            },
        },
        "TokenResponse": {
            "type": "object",
            "required": ["access_token", "token", "token_type", "expires_in", "user"],
            "additionalProperties": False,
            "properties": {
                "access_token": {"type": "string"},
                "token": {"type": "string", "description": "access_token again, by another name"},
                "token_type": {"const": "bearer"},
                "expires_in": {"type": "integer", "description": "Seconds"},
                "user": ref("LocalUser"),
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "timestamp", "database", "jwks"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "timestamp": TIMESTAMP,
                "database": {"type": "string", "enum": ["ok", "unavailable"]},
                "jwks": {
                    "type": "object",
                    "description": "Whether Better Auth JWT-plugin tokens can be verified;"
                    " never changes the status",
                    "required": ["state", "age_seconds"],
                    "additionalProperties": False,
                    "properties": {
                        "state": {
                            "type": "string",
                            "enum": ["not_configured", "ok", "stale", "unavailable"],
                            "description": "stale: keys known, but the last fetch failed or"
                            " they are over an hour old; unavailable: never fetched (such"
                            " tokens get 503)",
                        },
                        "age_seconds": {
                            "type": ["number", "null"],
                            "description": "Seconds since the last successful fetch",
                        },
                    },
                },
            },
        },
    }


def headers() -> dict[str, Any]:
    def header(description: str, **schema: Any) -> dict[str, Any]:
        return {"description": description, "schema": {"type": "string", **schema}}

    return {
        "X-Request-ID": header("The request's id: the client's own when sane, else generated"),
        "ETag": header("The task's version; send it back as If-Match", examples=['"3"']),
        "Location": header("Where the new task lives"),
        "Retry-After": header("Seconds to wait before trying again", pattern="^[0-9]+$"),
        "WWW-Authenticate": header('Bearer, or Bearer error="invalid_token"'),
        "Idempotent-Replayed": header("true when this is the stored first response", enum=["true"]),
        "Link": header('API_DIALECT=compatible: <the next page>; rel="next" (RFC 8288)'),
        "X-Count": header("API_DIALECT=compatible: tasks in this page", pattern="^[0-9]+$"),
    }


ERROR_DESCRIPTIONS = {
    400: "Malformed JSON or invalid UTF-8",
    401: "Missing or invalid token",
    403: "The path names another user",
    404: "No such task for this user (also: another user's, or deleted)",
    409: "Conflict",
    410: "sync_token_expired: deleted tasks since this sync_token were purged; sync afresh",
    412: "If-Match does not match the task's current ETag",
    413: f"Request body over {MAX_BODY_BYTES} bytes",
    415: "The body is not JSON",
    422: "Invalid input, or a limit of the user's tasks reached; details names each refused"
    " field, parameter, header or limit",
    429: "Too many failed logins or registrations from this address, or too many of your"
    " requests at once (DB_POOL_MAX_PER_USER); see Retry-After",
    503: "The database is unavailable or busy (service_unavailable), or did not answer in time"
    " (database_timeout); retry after Retry-After",
}


def error_response(status: int) -> dict[str, Any]:
    response_headers: dict[str, Any] = {"X-Request-ID": ref("X-Request-ID", "headers")}
    if status == 401:
        response_headers["WWW-Authenticate"] = ref("WWW-Authenticate", "headers")
    if status in (429, 503):
        response_headers["Retry-After"] = ref("Retry-After", "headers")
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "headers": response_headers,
        "content": {"application/json": {"schema": ref("Error")}},
    }


def ok(description: str, schema: dict[str, Any] | None, *extra_headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "headers": {name: ref(name, "headers") for name in ("X-Request-ID", *extra_headers)},
    }
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return response


def json_body(schema_name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": ref(schema_name)}}}


def parameters() -> dict[str, Any]:
    ti = validation

    def query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "schema": schema, "description": description, **extra}

    return {
        "TaskId": {
            "name": "task_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
            "description": "A task's id; anything that is not a UUID is a 404.",
        },
        "UserId": {
            "name": "user_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT_LENGTH},
            "description": "Must be the token's subject, else 403.",
        },
        "IfMatch": {
            "name": "If-Match",
            "in": "header",
            "schema": {"type": "string"},
            "description": "An ETag from an earlier response; 412 if the task changed since.",
        },
        "IfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "schema": {"type": "string"},
            "description": "ETags of copies the client holds (or *); 304 while still current.",
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": idempotency.MAX_KEY_LENGTH,
                "pattern": "^[ -~]*[!-~][ -~]*$",
            },
            "description": "Retrying with the same key within 24 hours returns the first response.",
        },
        "XRequestId": {
            "name": "X-Request-ID",
            "in": "header",
            "schema": {"type": "string"},
            "description": f"Echoed back when at most {MAX_REQUEST_ID_LENGTH} printable ASCII"
            " characters; any other value is replaced by a generated id, never refused.",
        },
        "Limit": query(
            "limit",
            {
                "type": "integer",
                "minimum": ti.LIMIT_MIN,
                "maximum": ti.LIMIT_MAX,
                "default": ti.LIMIT_DEFAULT,
            },
            "Tasks per page",
        ),
        "Cursor": query(
            "cursor",
            {"type": "string", "maxLength": MAX_CURSOR_LENGTH},
            "next_cursor of the previous page",
        ),
        "Sort": query(
            "sort",
            {
                "type": "string",
                "enum": [*ti.SORTS, *(a for a in ti.SORT_ALIASES if a not in ti.SORTS)],
                "default": ti.DEFAULT_SORT,
            },
            "Order; '-' for descending. Ties by id; tasks without due_at last. Short names:"
            " created and updated (newest first), due_date (soonest first); order= turns them.",
        ),
        "SortBy": query(
            "sort_by",
            {"type": "string", "enum": list(ti.SORT_ALIASES)},
            "Another spelling of sort (not with it): created, updated and their *_at newest"
            " first, the rest ascending, unless order says otherwise",
        ),
        "Order": query("order", {"type": "string", "enum": list(ti.ORDERS)}, "Direction of sort"),
        "Completed": query("completed", {"type": "boolean"}, "Only done (true) or open (false)"),
        "Status": query(
            "status",
            {"type": "string", "enum": list(ti.STATUSES)},
            "Another spelling of completed (not with it): pending and active are open tasks",
        ),
        "Priority": query("priority", {"type": "string", "enum": list(ti.PRIORITIES)}, "Priority"),
        "Tag": query(
            "tag",
            {
                "type": "array",
                "maxItems": ti.TAGS_MAX,
                "items": {"type": "string", "minLength": 1, "maxLength": ti.TAG_MAX},
            },
            "Repeatable; every tag must be present",
            style="form",
            explode=True,
        ),
        "Q": query(
            "q",
            {"type": "string", "minLength": 1, "maxLength": ti.QUERY_MAX},
            "Case-insensitive substring of title or description",
        ),
        "DueBefore": query("due_before", TIMESTAMP, "Due strictly before this instant"),
        "DueAfter": query("due_after", TIMESTAMP, "Due strictly after this instant"),
        "UpdatedSince": query(
            "updated_since",
            TIMESTAMP,
            "Start of an incremental sync: tasks whose updated_at is after this instant, deleted"
            " ones as tombstones. updated_at is when a write began, so use it only for the"
            " first sync and the returned sync_token after. Not combinable with filters or sort.",
        ),
        "SyncToken": query(
            "sync_token",
            {"type": "string", "maxLength": MAX_CURSOR_LENGTH},
            "Incremental sync: every task written since the sync that returned this token,"
            " in write order, deleted ones as tombstones. Not combinable with filters or sort.",
        ),
    }


def list_ok(compatible: bool) -> dict[str, Any]:
    """A list's 200: the envelope, or (compatible) a bare array with paging in headers."""
    if not compatible:
        return ok("A page of tasks; ETag except in a sync", ref("TaskList"), "ETag")
    return ok(
        "A page of tasks as a bare array; the next page in Link, the count in X-Count. A sync"
        " (sync_token or updated_since) still answers the TaskList envelope with its sync_token.",
        {"oneOf": [{"type": "array", "items": ref("Task")}, ref("TaskList")]},
        "ETag",
        "Link",
        "X-Count",
    )


def task_operations(prefix: str, compatible: bool = False) -> dict[str, Any]:
    """The path items of the task routes under one prefix, in the dialect served."""
    suffix, tag = PREFIX_NAMES[prefix]
    user_param = [ref("UserId", "parameters")] if "{user_id}" in prefix else []
    common = [ref("XRequestId", "parameters")]
    item_params = [*user_param, ref("TaskId", "parameters")]
    if_match = [ref("IfMatch", "parameters")]
    task_ok = ok("The task", ref("Task"), "ETag")

    def operation(
        op_id: str, summary: str, responses: dict[Any, Any], **extra: Any
    ) -> dict[str, Any]:
        # Every task operation may meet the per-user cap on pool connections (429).
        codes = sorted({*responses.pop("errors", []), 429})
        errors = {str(status): error_response(status) for status in codes}
        statuses = {str(code): value for code, value in responses.items()}
        return {
            "operationId": op_id + suffix,
            "summary": summary,
            "tags": [tag],
            **extra,
            "responses": {**statuses, **errors},
        }

    collection = {
        "parameters": [*user_param, *common],
        "get": operation(
            "listTasks",
            "List tasks",
            {
                200: list_ok(compatible),
                304: ok("Unchanged since the ETag in If-None-Match", None, "ETag"),
                "errors": [401, 403, 410, 422, 503],
            },
            parameters=[
                ref(name, "parameters")
                for name in (
                    "Limit",
                    "Cursor",
                    "Sort",
                    "SortBy",
                    "Order",
                    "Completed",
                    "Status",
                    "Priority",
                    "Tag",
                    "Q",
                    "DueBefore",
                    "DueAfter",
                    "UpdatedSince",
                    "SyncToken",
                    "IfNoneMatch",
                )
            ],
        ),
        "post": operation(
            "createTask",
            "Create a task",
            {
                201: ok("The new task", ref("Task"), "ETag", "Location", "Idempotent-Replayed"),
                "errors": [400, 401, 403, 413, 415, 422, 503],
            },
            parameters=[ref("IdempotencyKey", "parameters")],
            requestBody=json_body("TaskCreate"),
        ),
    }
    update_errors = [400, 401, 403, 404, 412, 413, 415, 422, 503]
    item = {
        "parameters": [*item_params, *common],
        "get": operation(
            "getTask",
            "Get a task",
            {
                200: task_ok,
                304: ok("Unchanged since the ETag in If-None-Match", None, "ETag"),
                "errors": [401, 403, 404, 503],
            },
            parameters=[ref("IfNoneMatch", "parameters")],
        ),
        # PUT and PATCH are one handler: the same body, answers and errors.
        **{
            method: operation(
                operation_id,
                summary,
                {200: task_ok, "errors": update_errors},
                parameters=if_match,
                requestBody=json_body("TaskUpdate"),
            )
            for method, operation_id, summary in (
                ("put", "replaceTask", "Update a task (full or partial body)"),
                ("patch", "updateTask", "Update some fields of a task"),
            )
        },
        "delete": operation(
            "deleteTask",
            "Delete a task (soft; restore undoes it)",
            {
                **({200: ok("Deleted; the task", ref("Task"), "ETag")} if compatible else {}),
                **({} if compatible else {204: ok("Deleted", None)}),
                # 422: the user keeps MAX_DELETED_TASKS_PER_USER deleted tasks already.
                "errors": [401, 403, 404, 412, 422, 503],
            },
            parameters=if_match,
        ),
    }
    complete = {
        "parameters": [*item_params, *common],
        "patch": operation(
            "completeTask",
            "Set or toggle completion",
            {200: task_ok, "errors": update_errors},
            parameters=if_match,
            requestBody=json_body("Completion", required=False),
        ),
    }
    restore = {
        "parameters": [*item_params, *common],
        "post": operation(
            "restoreTask",
            "Restore a deleted task",
            {200: task_ok, "errors": [401, 403, 404, 412, 422, 503]},
            parameters=if_match,
        ),
    }
    return {
        prefix: collection,
        prefix + "/{task_id}": item,
        prefix + "/{task_id}/complete": complete,
        prefix + "/{task_id}/restore": restore,
    }


def build_document(compatible: bool = False) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    public: list[dict[str, Any]] = []
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness, database reachability and the JWKS's state",
                "tags": ["service"],
                "security": public,
                "responses": {
                    "200": ok("Up, database reachable", ref("Health")),
                    "503": {
                        **ok("Database unreachable", ref("Health"), "Retry-After"),
                    },
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["service"],
                "security": public,
                "responses": {"200": ok("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/auth/register": {
            "post": {
                "operationId": "register",
                "summary": "Create a local account",
                "tags": ["auth"],
                "security": public,
                "requestBody": json_body("Registration"),
                "responses": {
                    "201": ok("The account and a token", ref("TokenResponse")),
                    **{str(s): error_response(s) for s in (400, 403, 409, 413, 415, 422, 429, 503)},
                },
            }
        },
        "/auth/login": {
            "post": {
                "operationId": "login",
                "summary": "Log in to a local account",
                "tags": ["auth"],
                "security": public,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": ref("Login")},
                        "application/x-www-form-urlencoded": {"schema": ref("LoginForm")},
                    },
                },
                "responses": {
                    "200": ok("A token", ref("TokenResponse")),
                    **{str(s): error_response(s) for s in (400, 401, 403, 413, 415, 422, 429, 503)},
                },
            }
        },
        "/auth/me": {
            "get": {
                "operationId": "me",
                "summary": "The authenticated user",
                "tags": ["auth"],
                "responses": {
                    "200": ok("The user", {"anyOf": [ref("LocalUser"), ref("TokenUser")]}),
                    **{str(s): error_response(s) for s in (401, 503)},
                },
            }
        },
    }
    for alias, name in (("/auth/signup", "register"), ("/auth/signin", "login")):
        operation = copy.deepcopy(paths[f"/auth/{name}"])
        operation["post"]["operationId"] += "Alias"
        operation["post"]["summary"] += f" (/auth/{name} by another name)"
        paths[alias] = operation
    for prefix in endpoints.PREFIXES:
        paths.update(task_operations(prefix, compatible))

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "todo-server",
            "version": package_version(),
            "description": (
                "Personal task lists. Every route except /health, /auth/register, /auth/login"
                " (and their aliases /auth/signup, /auth/signin) and the docs needs"
                " `Authorization: Bearer <JWT>`; every user sees and changes"
                " only their own tasks. Errors always have the Error shape."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"oauth2": []}],
        "tags": [
            {"name": "tasks", "description": "Canonical routes: the user is the token's subject"},
            {
                "name": "tasks (user in path)",
                "description": "The same routes for frontends that put the user id in the path;"
                " it must be the token's subject.",
            },
            {"name": "auth", "description": "Local accounts"},
            {"name": "service", "description": "Health and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "parameters": parameters(),
            "headers": headers(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT (Better Auth's JWT plugin, a frontend's HS256 token, or"
                    " one from /auth/login); or, with BETTER_AUTH_DATABASE_URL set, a Better"
                    " Auth session token (raw, or the signed cookie value)",
                },
                "oauth2": {
                    "type": "oauth2",
                    "description": "Local accounts: the password flow against /auth/login",
                    "flows": {"password": {"tokenUrl": "/auth/login", "scopes": {}}},
                },
            },
        },
    }
