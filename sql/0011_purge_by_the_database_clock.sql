-- The purge functions (sql/0009) run as the owner, across users, for whoever may
-- call them: the runtime role. They took the cutoff from their caller, so the
-- runtime role could purge every user's deleted tasks at once (moving their
-- purge horizons: their sync tokens get 410), drop idempotency keys still in
-- their 24 hours, and, by back-dating deleted_at first, physically delete a live
-- task. Now the functions clamp the cutoff with the database's own clock and a
-- retention the owner controls; deleted_at can only ever be the time of the
-- delete; a caller can ask to purge less, never more.

-- The shortest retention of deleted tasks any caller gets: one row, the owner's
-- to change (docs/deploy.md: Purging). Missing, it counts as 30 days.
CREATE TABLE purge_policy (
    only_row               boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    deleted_task_retention interval NOT NULL DEFAULT interval '30 days'
        CHECK (deleted_task_retention >= interval '0')
);
INSERT INTO purge_policy DEFAULT VALUES;

DO $$
DECLARE
    runtime text := coalesce(nullif(current_setting('todo.runtime_role', true), ''), 'todo_app');
BEGIN
    -- Read only: the service compares it with TASK_RETENTION_DAYS and warns.
    EXECUTE format('GRANT SELECT ON purge_policy TO %I', runtime);
END
$$;

CREATE OR REPLACE FUNCTION todo_purge_deleted_tasks(deleted_before timestamptz, batch integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH doomed AS (
        SELECT t.id FROM public.tasks AS t
        WHERE t.deleted_at < least(
            deleted_before,
            now() - coalesce(
                (SELECT p.deleted_task_retention FROM public.purge_policy AS p),
                interval '30 days'
            )
        )
        ORDER BY t.deleted_at
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM public.tasks AS t USING doomed WHERE t.id = doomed.id
        RETURNING t.user_id, t.change_xid
    ), per_user AS (
        SELECT g.user_id, count(*)::integer AS purged, max(g.change_xid) AS newest
        FROM gone AS g GROUP BY g.user_id
    ), counted AS (
        UPDATE public.users AS u
        SET deleted_tasks = u.deleted_tasks - p.purged,
            purged_xid = greatest(u.purged_xid, p.newest)
        FROM per_user AS p
        WHERE u.id = p.user_id
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
END;

-- An idempotency key answers retries for 24 hours by the database's clock.
CREATE OR REPLACE FUNCTION todo_purge_idempotency_keys(created_before timestamptz, batch integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH gone AS (
        DELETE FROM public.idempotency_keys AS k
        WHERE k.ctid IN (
            SELECT i.ctid FROM public.idempotency_keys AS i
            WHERE i.created_at < least(created_before, now() - interval '24 hours')
            LIMIT batch FOR UPDATE SKIP LOCKED
        )
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
END;

-- deleted_at is when the delete happened, and nothing else: a role that does not
-- own the table may set it only to now() (the service's delete does exactly
-- that) or clear it (restore). Back-dating it would make a live task due for
-- the purge at once. The owner may (migrations, ops, tests).
CREATE FUNCTION tasks_deleted_at_is_now() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.deleted_at IS NULL OR NEW.deleted_at = now() THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.deleted_at IS NOT DISTINCT FROM OLD.deleted_at THEN
        RETURN NEW;
    END IF;
    IF pg_has_role(current_user,
                   (SELECT c.relowner FROM pg_class AS c WHERE c.oid = TG_RELID), 'MEMBER') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'tasks.deleted_at may only be set to now() or NULL'
        USING ERRCODE = 'check_violation', TABLE = 'tasks', COLUMN = 'deleted_at';
END
$$;

CREATE TRIGGER tasks_deleted_at_is_now
BEFORE INSERT OR UPDATE OF deleted_at ON tasks
FOR EACH ROW EXECUTE FUNCTION tasks_deleted_at_is_now();
