-- Failed logins, kept for the throttling window, by email and by client address.
-- In PostgreSQL rather than in memory so that several server processes share them.
CREATE TABLE login_failures (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope     text NOT NULL CHECK (scope IN ('email', 'ip')),
    key       text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX login_failures_lookup_idx ON login_failures (scope, key, failed_at DESC);
