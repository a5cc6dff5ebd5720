-- An idempotency key's created_at starts its 24 hours, after which the purge
-- (sql/0011) may drop it. Roles that do not own the table may set it only to
-- now() (a claim, or a reclaim of an expired key, does exactly that): back-dated,
-- a live key would be purged at once and a retried create would make a second
-- task. The owner may (migrations, ops, tests).
CREATE FUNCTION idempotency_keys_created_at_is_now() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.created_at = now() THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.created_at IS NOT DISTINCT FROM OLD.created_at THEN
        RETURN NEW;
    END IF;
    IF pg_has_role(current_user,
                   (SELECT c.relowner FROM pg_class AS c WHERE c.oid = TG_RELID), 'MEMBER') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'idempotency_keys.created_at may only be set to now()'
        USING ERRCODE = 'check_violation', TABLE = 'idempotency_keys', COLUMN = 'created_at';
END
$$;

CREATE TRIGGER idempotency_keys_created_at_is_now
BEFORE INSERT OR UPDATE OF created_at ON idempotency_keys
FOR EACH ROW EXECUTE FUNCTION idempotency_keys_created_at_is_now();
