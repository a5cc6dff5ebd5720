-- Incremental sync ordered by visibility, not by clock.
--
-- updated_at = now() is when the writing transaction *started*: a write that
-- waited on a row lock commits with an updated_at older than changes a client
-- may already have synced past, and `updated_since` then skips it for good.
-- Each row now records the id of the transaction that last wrote it. A sync
-- token holds the xmin of the snapshot the sync read with: every transaction
-- below it had finished, so every change not yet seen has a transaction id at
-- or above it, and the next sync asks for exactly those (re-sending a few rows
-- is harmless; missing one is not). See todo_server/task_store.py.
ALTER TABLE tasks ADD COLUMN change_xid bigint NOT NULL DEFAULT 0;

CREATE FUNCTION tasks_stamp_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END
$$;

CREATE TRIGGER tasks_stamp_change
BEFORE INSERT OR UPDATE ON tasks
FOR EACH ROW EXECUTE FUNCTION tasks_stamp_change();

-- Sync reads a user's changes in transaction order, deleted rows included.
CREATE INDEX tasks_user_change_idx ON tasks (user_id, change_xid, id);
