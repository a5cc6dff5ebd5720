-- Registrations are throttled per client address like failed logins, in the same
-- table: a row is one attempt reserved before its password is hashed (see
-- todo_server/throttle.py), kept for the throttling window.
ALTER TABLE login_failures DROP CONSTRAINT login_failures_scope_check;
ALTER TABLE login_failures ADD CONSTRAINT login_failures_scope_check
    CHECK (scope IN ('email', 'ip', 'register'));
