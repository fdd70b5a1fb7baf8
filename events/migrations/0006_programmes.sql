-- Programmes: what their streams add to the read models.

-- A collective session appears in the trail of each pair with someone who attended it: the
-- programme's event keeps its one line in `entries`, and this table links it to those pairs.
CREATE TABLE audit_trail.pair_links (
    pair_id   text   NOT NULL,
    position  bigint NOT NULL,
    PRIMARY KEY (pair_id, position)
);

-- The close report of each programme, as recorded in its `ProgrammeClosed` event.
CREATE SCHEMA programme_reports;
CREATE TABLE programme_reports.reports (
    programme_id  text        PRIMARY KEY,
    position      bigint      NOT NULL,
    closed_at     timestamptz NOT NULL,
    report        jsonb       NOT NULL
);
CREATE INDEX reports_by_close ON programme_reports.reports (closed_at);
