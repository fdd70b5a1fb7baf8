-- A full verify of the log's chains as a background job, a range of streams at a time, resumed
-- where it stopped if its process dies (events/verify_jobs.py).
CREATE TABLE verify_jobs (
    id               bigserial   PRIMARY KEY,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    requested_by     text,
    status           text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
    after_stream     text,                  -- every stream up to this one is checked
    streams_checked  bigint      NOT NULL DEFAULT 0,
    events_checked   bigint      NOT NULL DEFAULT 0,
    first_bad        jsonb,                 -- the earliest finding so far, by position
    progress_at      timestamptz,
    finished_at      timestamptz
);
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mentoring_app') THEN
        GRANT SELECT, INSERT, UPDATE ON verify_jobs TO mentoring_app;
        GRANT USAGE ON SEQUENCE verify_jobs_id_seq TO mentoring_app;
    END IF;
END $$;
