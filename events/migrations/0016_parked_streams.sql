-- An event a projection cannot apply parks its stream for that projection only: the stream's
-- later events wait with it, every other stream goes on (projections/runner.py). A row here is a
-- parked stream: where it stopped and why. `resume` asks the runner to retry it (`retry`), or to
-- skip the event it stopped on first (`skip_first`); a stream applied again leaves this table.
-- Every park is also recorded in projection_failures, the history.
CREATE TABLE projection_parked (
    projection      text        NOT NULL,
    stream_id       text        NOT NULL,
    position        bigint      NOT NULL,  -- the first event of the stream not applied
    transaction_id  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    error           text        NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    failure_id      bigint      NOT NULL REFERENCES projection_failures (id),
    retry           boolean     NOT NULL DEFAULT false,
    skip_first      boolean     NOT NULL DEFAULT false,
    retry_by        text,
    PRIMARY KEY (projection, stream_id)
);
ALTER TABLE projection_failures ADD COLUMN stream_id text;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mentoring_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON projection_parked TO mentoring_app;
    END IF;
END $$;
