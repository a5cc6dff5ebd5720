-- Soft-deleted tasks are kept for restore for a while (TASK_RETENTION_DAYS), then
-- purged; until then they count toward a cap of their own per user
-- (MAX_DELETED_TASKS_PER_USER), so create-and-delete loops cannot grow storage
-- without bound. See todo_server/purge.py.

-- Deleted, not yet purged tasks per user, kept like live_tasks: DELETE adds
-- one, restore and purge take them back.
ALTER TABLE users ADD COLUMN deleted_tasks integer NOT NULL DEFAULT 0
    CHECK (deleted_tasks >= 0);

UPDATE users SET deleted_tasks = counts.deleted
FROM (
    SELECT user_id, count(*) AS deleted FROM tasks WHERE deleted_at IS NOT NULL GROUP BY user_id
) AS counts
WHERE users.id = counts.user_id;

-- The newest transaction id among the user's purged tasks: a sync token from
-- before it may have missed a tombstone that no longer exists, so it is refused
-- and the client syncs afresh.
ALTER TABLE users ADD COLUMN purged_xid bigint NOT NULL DEFAULT 0;

-- The purge reads the oldest deletions first.
CREATE INDEX tasks_deleted_at_idx ON tasks (deleted_at) WHERE deleted_at IS NOT NULL;

-- Expired throttling rows are purged by age too.
CREATE INDEX login_failures_failed_at_idx ON login_failures (failed_at);
