-- The application's role: it reads, appends through append_events, and keeps its own tables; it
-- cannot change or remove what the log holds, nor turn the guards off (UPDATE, DELETE, TRUNCATE
-- and trigger control on the log are its owner's only, and session_replication_role a
-- superuser's). Production: the worker's login role is a member of mentoring_app, and the
-- migrations run as the owner (README, "Production grants").
--
-- append_events runs as its owner (SECURITY DEFINER, with a fixed search_path), so the role
-- needs no write privilege on the log's tables.
ALTER FUNCTION append_events(text, bigint, uuid[], text[], integer[], jsonb[], jsonb[])
    SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE ALL ON events, event_streams, log_leaves, log_checkpoints, api_access FROM PUBLIC;

DO $$
DECLARE
    read_models text[] := ARRAY['pair_overview', 'programme_funnel', 'consent_register', 'audit_trail',
                                'mentor_recognition', 'session_calendar', 'programme_reports'];
    schema_name text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mentoring_app') THEN
        BEGIN
            CREATE ROLE mentoring_app NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'no privilege to create the role mentoring_app: create it and grant as the README says';
            RETURN;
        END;
    END IF;
    GRANT USAGE ON SCHEMA public TO mentoring_app;
    -- The log: read only (appends go through the function); the tree and checkpoints: added to.
    GRANT SELECT ON events, event_streams TO mentoring_app;
    GRANT SELECT, INSERT ON log_leaves, log_checkpoints, api_access TO mentoring_app;
    GRANT USAGE ON SEQUENCE api_access_id_seq TO mentoring_app;
    -- Its own tables: personal data (erasable), keys (shreddable), notices, projection state.
    GRANT SELECT, INSERT, UPDATE ON people, private_notes, data_keys, key_shredding, notifications_sent,
                                    projection_checkpoints TO mentoring_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON projection_failures TO mentoring_app;
    GRANT SELECT ON schema_migrations TO mentoring_app;
    FOREACH schema_name IN ARRAY read_models LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO mentoring_app', schema_name);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO mentoring_app', schema_name);
    END LOOP;
END $$;
