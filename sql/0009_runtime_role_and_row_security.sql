-- Defense in depth: the service connects as a runtime role that owns nothing and
-- may only do the DML each table needs, and row-level security enforces
-- isolation a second time, under every query's own `user_id = ...` predicate.
--
-- The runtime role is named by DB_RUNTIME_ROLE (default todo_app); the runner
-- hands it to this file as the setting todo.runtime_role. Ops create it first
-- (README: Roles). The role that runs this file owns every object.

DO $$
DECLARE
    runtime text := coalesce(nullif(current_setting('todo.runtime_role', true), ''), 'todo_app');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = runtime) THEN
        RAISE EXCEPTION 'runtime role "%" does not exist; create it first (README, Roles)'
            ' or name another in DB_RUNTIME_ROLE', runtime;
    END IF;
    IF runtime = current_user THEN
        RAISE EXCEPTION 'the runtime role "%" must not be the schema owner that runs migrations',
            runtime;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON users, tasks TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON idempotency_keys TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON login_failures TO %I', runtime);
    EXECUTE format('GRANT USAGE ON SEQUENCE login_failures_id_seq TO %I', runtime);
    EXECUTE format('GRANT SELECT ON schema_migrations TO %I', runtime);
END
$$;

-- Rows belong to the user named by the transaction-local setting app.user_id,
-- which the service sets with each statement (set_config(..., true): safe under
-- PgBouncer's transaction pooling). Unset, it is '' or NULL: no row matches.
ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tasks_of_the_user ON tasks
    USING (user_id = current_setting('app.user_id', true))
    WITH CHECK (user_id = current_setting('app.user_id', true));

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_the_user ON users
    USING (id = current_setting('app.user_id', true))
    WITH CHECK (id = current_setting('app.user_id', true));

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_of_the_user ON idempotency_keys
    USING (user_id = current_setting('app.user_id', true))
    WITH CHECK (user_id = current_setting('app.user_id', true));

-- The schema owner sees every row: migrations backfill, and the functions below
-- (SECURITY DEFINER, so they run as the owner) work across users.
CREATE POLICY tasks_owner ON tasks TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY users_owner ON users TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY idempotency_keys_owner ON idempotency_keys TO CURRENT_USER
    USING (true) WITH CHECK (true);

-- What must happen before a user is known, or across users, as narrow functions
-- the runtime role may call but not change.

-- Login: the local account for an email (there is no user id yet).
CREATE FUNCTION todo_local_account(account_email text)
RETURNS TABLE (id text, email text, name text, created_at timestamptz, password_hash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT u.id, u.email, u.name, u.created_at, u.password_hash
    FROM public.users AS u
    WHERE lower(u.email) = account_email AND u.password_hash IS NOT NULL;
END;

-- Purge: deleted tasks past retention, oldest first, giving their users' slots
-- back and moving their purge horizon (sync tokens before it are refused).
CREATE FUNCTION todo_purge_deleted_tasks(deleted_before timestamptz, batch integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH doomed AS (
        SELECT t.id FROM public.tasks AS t
        WHERE t.deleted_at < deleted_before
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

-- Purge: idempotency keys past their 24 hours, of every user.
CREATE FUNCTION todo_purge_idempotency_keys(created_before timestamptz, batch integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH gone AS (
        DELETE FROM public.idempotency_keys AS k
        WHERE k.ctid IN (
            SELECT i.ctid FROM public.idempotency_keys AS i
            WHERE i.created_at < created_before
            LIMIT batch FOR UPDATE SKIP LOCKED
        )
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
END;

REVOKE ALL ON FUNCTION todo_local_account(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION todo_purge_deleted_tasks(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION todo_purge_idempotency_keys(timestamptz, integer) FROM PUBLIC;

DO $$
DECLARE
    runtime text := coalesce(nullif(current_setting('todo.runtime_role', true), ''), 'todo_app');
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION todo_local_account(text) TO %I', runtime);
    EXECUTE format('GRANT EXECUTE ON FUNCTION todo_purge_deleted_tasks(timestamptz, integer)'
                   ' TO %I', runtime);
    EXECUTE format('GRANT EXECUTE ON FUNCTION todo_purge_idempotency_keys(timestamptz, integer)'
                   ' TO %I', runtime);
END
$$;
