"""Login throttling: failures counted per email and per client address, in PostgreSQL.

After ``max_per_email`` failures for one email within the window, further
attempts for that email get 429 until enough of them age out, even with the
right password; a success clears that email's count. A client address gets a
larger cap of its own, so one client cannot walk through many emails.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection

WINDOW_SECONDS = 15 * 60

# The limit-th most recent failure inside the window, per scope, if there is one:
# once it ages out, the count drops below the limit again.
BLOCKED_SQL = """
SELECT max(ceil(extract(epoch FROM failed_at - now())) + %(window)s)::int AS retry_after
FROM (
    SELECT scope, failed_at,
           row_number() OVER (PARTITION BY scope ORDER BY failed_at DESC) AS position
    FROM login_failures
    WHERE ((scope = 'email' AND key = %(email)s) OR (scope = 'ip' AND key = %(ip)s))
      AND failed_at > now() - make_interval(secs => %(window)s)
) recent
WHERE (scope = 'email' AND position = %(max_per_email)s)
   OR (scope = 'ip' AND position = %(max_per_ip)s)
"""

RECORD_FAILURE_SQL = """
WITH expired AS (
    DELETE FROM login_failures WHERE failed_at <= now() - make_interval(secs => %(window)s)
)
INSERT INTO login_failures (scope, key) VALUES ('email', %(email)s), ('ip', %(ip)s)
"""

CLEAR_EMAIL_SQL = "DELETE FROM login_failures WHERE scope = 'email' AND key = %(email)s"


@dataclass(frozen=True)
class LoginThrottle:
    max_per_email: int = 10
    max_per_ip: int = 50
    window_seconds: int = WINDOW_SECONDS

    async def retry_after(self, conn: AsyncConnection, email: str, ip: str) -> int | None:
        """Seconds until this email and address may try again, or None if they may now."""
        cursor = await conn.execute(
            BLOCKED_SQL,
            {
                "email": email,
                "ip": ip,
                "window": self.window_seconds,
                "max_per_email": self.max_per_email,
                "max_per_ip": self.max_per_ip,
            },
        )
        row = await cursor.fetchone()
        seconds = row["retry_after"] if row else None
        return None if seconds is None else max(1, seconds)

    async def record_failure(self, conn: AsyncConnection, email: str, ip: str) -> None:
        await conn.execute(
            RECORD_FAILURE_SQL, {"email": email, "ip": ip, "window": self.window_seconds}
        )

    async def clear(self, conn: AsyncConnection, email: str) -> None:
        await conn.execute(CLEAR_EMAIL_SQL, {"email": email})
