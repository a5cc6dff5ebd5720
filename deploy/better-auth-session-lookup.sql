-- One-token session lookup for todo-server, in Better Auth's database.
--
-- Run as the role that owns Better Auth's tables (the one its migrations run as):
--   psql "$BETTER_AUTH_OWNER_URL" -f deploy/better-auth-session-lookup.sql
-- then set BETTER_AUTH_SESSION_LOOKUP=function. The service's role may call the
-- function and nothing else: it verifies a token it was given, and cannot list
-- sessions (their tokens would sign anyone in). Create the role first
-- (docs/authentication.md: Better Auth session tokens); other table or column
-- names (a snake_case schema): edit the query; another schema: create the
-- function there and name it in BETTER_AUTH_SESSION_TABLE.
--
-- expiresAt is returned as epoch seconds: a timestamptz is an instant, a
-- timestamp without time zone (Better Auth 1.3.x) holds the UTC wall clock;
-- neither depends on the database's TimeZone.
CREATE FUNCTION todo_session_user(session_token text)
RETURNS TABLE (user_id text, email text, name text, expires_at float8, expires_in float8)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s."userId"::text, u.email::text, u.name::text,
           extract(epoch FROM s."expiresAt")::float8,
           (extract(epoch FROM s."expiresAt") - extract(epoch FROM statement_timestamp()))::float8
    FROM public.session AS s
    JOIN public."user" AS u ON u.id = s."userId"
    WHERE s.token = session_token
$$;

REVOKE ALL ON FUNCTION todo_session_user(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO todo_sessions;
GRANT EXECUTE ON FUNCTION todo_session_user(text) TO todo_sessions;
