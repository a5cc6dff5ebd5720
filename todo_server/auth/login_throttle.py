"""Throttling of password checks: logins per email and per client address, registrations
per client address, counted in PostgreSQL so that every server process shares them.

An attempt is *reserved* before the password is hashed, not recorded after: a
reservation is a row in ``login_failures``, taken under transaction-scoped
advisory locks on its keys, after counting the rows already there. So however
many requests arrive at once, in however many processes, at most ``max`` of
them pass the check per key and window; the rest get 429 without costing a
scrypt hash. A failed login keeps its reservation (it *is* the failure); a
successful one deletes it and clears the email's count. A registration's
reservation is kept whatever happens: registrations are counted, not failures.

The locks are taken in one order (email, then address), so two requests never
wait on each other in a cycle, and they are transaction-scoped, so they are
safe behind PgBouncer's transaction pooling.
"""

from __future__ import annotations

from dataclasses import dataclass

from todo_server.storage.db import DictConnection

WINDOW_SECONDS = 15 * 60

# One advisory lock per key; hashtextextended gives a bigint for the key's text.
LOCK_KEY_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(%(lock)s, 0))"

# Under the locks: how long until the limit-th most recent attempt per scope ages
# out (NULL when no scope is at its limit), and the reservations if none is.
RESERVE_SQL = """
WITH expired AS (
    DELETE FROM login_failures WHERE failed_at <= now() - make_interval(secs => %(window)s)
), recent AS (
    SELECT scope, failed_at,
           row_number() OVER (PARTITION BY scope, key ORDER BY failed_at DESC) AS position
    FROM login_failures
    WHERE (scope, key) IN (SELECT scope, key FROM unnest(%(scopes)s::text[], %(keys)s::text[])
                           AS wanted (scope, key))
      AND failed_at > now() - make_interval(secs => %(window)s)
), blocked AS (
    SELECT max(ceil(extract(epoch FROM r.failed_at - now())) + %(window)s)::int AS retry_after
    FROM recent AS r
    JOIN unnest(%(scopes)s::text[], %(limits)s::int[]) AS l (scope, max_attempts)
      ON l.scope = r.scope AND r.position = l.max_attempts
), reserved AS (
    INSERT INTO login_failures (scope, key)
    SELECT scope, key FROM unnest(%(scopes)s::text[], %(keys)s::text[]) AS wanted (scope, key)
    WHERE (SELECT retry_after FROM blocked) IS NULL
    RETURNING id
)
SELECT (SELECT retry_after FROM blocked) AS retry_after, array(SELECT id FROM reserved) AS ids
"""

# A successful login: its reservations go, and so do the email's earlier failures.
RELEASE_SQL = """
DELETE FROM login_failures
WHERE id = ANY(%(ids)s::bigint[]) OR (scope = 'email' AND key = %(email)s)
"""


@dataclass(frozen=True)
class Reservation:
    """Either the ids of reserved attempts, or the seconds to wait before trying again."""

    ids: list[int]
    retry_after: int | None


@dataclass(frozen=True, kw_only=True)
class LoginThrottle:
    """Attempts allowed per key and window (LOGIN_MAX_FAILURES, LOGIN_MAX_FAILURES_PER_IP,
    REGISTRATIONS_PER_IP)."""

    max_per_email: int
    max_per_ip: int
    max_registrations_per_ip: int
    window_seconds: int = WINDOW_SECONDS

    async def reserve_login(self, conn: DictConnection, email: str, ip: str) -> Reservation:
        """Reserve a login attempt for this email and address, or say how long to wait."""
        return await self._reserve(
            conn, [("email", email, self.max_per_email), ("ip", ip, self.max_per_ip)]
        )

    async def reserve_registration(self, conn: DictConnection, ip: str) -> Reservation:
        """Count a registration from this address, or say how long to wait."""
        return await self._reserve(conn, [("register", ip, self.max_registrations_per_ip)])

    async def release_login(
        self, conn: DictConnection, email: str, reservation: Reservation
    ) -> None:
        """The login succeeded: it was no failure, and the email starts afresh."""
        await conn.execute(RELEASE_SQL, {"ids": reservation.ids, "email": email})

    async def _reserve(self, conn: DictConnection, keys: list[tuple[str, str, int]]) -> Reservation:
        async with conn.transaction():
            for scope, key, _limit in keys:
                await conn.execute(LOCK_KEY_SQL, {"lock": f"todo-server:throttle:{scope}:{key}"})
            cursor = await conn.execute(
                RESERVE_SQL,
                {
                    "scopes": [scope for scope, _, _ in keys],
                    "keys": [key for _, key, _ in keys],
                    "limits": [limit for _, _, limit in keys],
                    "window": self.window_seconds,
                },
            )
            row = await cursor.fetchone()
        assert row is not None  # aggregates always give one row
        seconds = row["retry_after"]
        return Reservation(row["ids"], None if seconds is None else max(1, seconds))
