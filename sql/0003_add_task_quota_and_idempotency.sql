-- What the tasks API needs beyond 0001: a live-task counter for the per-user
-- quota, and stored responses for Idempotency-Key retries.

-- Live (not deleted) tasks per user. Creates take a slot with a single
-- INSERT ... ON CONFLICT DO UPDATE ... WHERE live_tasks < max, which locks the
-- user's row, so concurrent creates cannot overshoot the quota.
ALTER TABLE users ADD COLUMN live_tasks integer NOT NULL DEFAULT 0 CHECK (live_tasks >= 0);

UPDATE users SET live_tasks = counts.live
FROM (
    SELECT user_id, count(*) AS live FROM tasks WHERE deleted_at IS NULL GROUP BY user_id
) AS counts
WHERE users.id = counts.user_id;

-- The first response to a POST with an Idempotency-Key, replayed for 24 hours.
-- No foreign key: a key is claimed before the user's row is known to exist.
CREATE TABLE idempotency_keys (
    user_id      text NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash text NOT NULL,
    status       smallint,
    task_id      uuid,
    response     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
