"""The floor: the thinnest list endpoint we could write on our own dependencies.

A raw ASGI callable (no Starlette), one ``psycopg_pool`` pool, the page's JSON
joined by PostgreSQL from the rendered ``tasks.body``, each token decoded once
and cached, no validation, no logging, no middleware. It answers
``GET /api/tasks`` with the caller's newest 50 tasks as a JSON array and
nothing else; the service does all of its contract on top of the same work,
and the harness reports the service's list throughput as a ratio of this one.

    DATABASE_URL=... BETTER_AUTH_SECRET=... uvicorn bench.floor_app:app
"""

from __future__ import annotations

import os
from typing import Any

import jwt
from psycopg_pool import AsyncConnectionPool

PAGE_SQL = """
SELECT coalesce(string_agg(body, ',' ORDER BY created_at DESC, id DESC), '')
FROM (
    SELECT body, created_at, id FROM tasks
    WHERE user_id = %s AND deleted_at IS NULL
    ORDER BY created_at DESC, id DESC
    LIMIT 50
) AS page
"""

pool = AsyncConnectionPool(
    os.environ.get("DATABASE_URL", ""),
    min_size=8,
    max_size=8,
    open=False,
    kwargs={"autocommit": True},
)
secret = os.environ.get("BETTER_AUTH_SECRET", "")
users: dict[bytes, str] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await pool.open(wait=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] != "/api/tasks":  # the harness's readiness probe (/health)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    user = users.get(authorization)
    if user is None:
        token = authorization.removeprefix(b"Bearer ").decode()
        user = users[authorization] = jwt.decode(token, secret, algorithms=["HS256"])["sub"]
    async with pool.connection() as conn:
        cursor = await conn.execute(PAGE_SQL, (user,))
        row = await cursor.fetchone()
    body = b"[" + row[0].encode() + b"]"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
