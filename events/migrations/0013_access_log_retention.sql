-- The access log keeps what it records, but not for ever: `purge_api_access(before)` deletes the
-- rows older than `before` (never younger than 30 days), run by the database's owner (the
-- application's role may not). Any other change is still refused.
CREATE FUNCTION api_access_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('mentoring.purging_access_log', true) = 'on'
       AND OLD.at < now() - interval '30 days' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the access log is append-only: % is not allowed (purge_api_access removes old rows)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER api_access_no_update_delete ON api_access;
CREATE TRIGGER api_access_no_update_delete BEFORE UPDATE OR DELETE ON api_access
    FOR EACH ROW EXECUTE FUNCTION api_access_refuse_change();

CREATE FUNCTION purge_api_access(p_before timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_deleted bigint;
BEGIN
    PERFORM set_config('mentoring.purging_access_log', 'on', true);
    DELETE FROM api_access WHERE at < least(p_before, now() - interval '30 days');
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    PERFORM set_config('mentoring.purging_access_log', 'off', true);
    RETURN v_deleted;
END $$;
REVOKE EXECUTE ON FUNCTION purge_api_access(timestamptz) FROM PUBLIC;
