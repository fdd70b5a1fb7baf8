-- Programme health: what the dashboard draws, beside what the other read models already hold.
-- Ids, times, counts and answers only: names stay in `people`, joined at query time for HR.
CREATE SCHEMA programme_health;

-- Programmes with their HR owners (who sign the mentors' certificates), opened and closed when.
CREATE TABLE programme_health.programmes (
    programme_id  text        PRIMARY KEY,
    hr_owners     text[]      NOT NULL,
    opened_at     timestamptz NOT NULL,
    closed_at     timestamptz
);

-- Each pair's programme (a pair started on its own names one too).
CREATE TABLE programme_health.pairs (
    pair_id       text PRIMARY KEY,
    programme_id  text NOT NULL
);

-- Every rating given: a session's feedback or a final evaluation, by the mentor or the mentee.
CREATE TABLE programme_health.ratings (
    position      bigint      PRIMARY KEY,
    pair_id       text        NOT NULL,
    programme_id  text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('session', 'final')),
    session_no    integer,
    by_role       text        NOT NULL,
    rating        integer     NOT NULL,
    at            timestamptz NOT NULL
);
CREATE INDEX ratings_by_programme ON programme_health.ratings (programme_id);

-- Every follow-up answer: does the person still use what was learnt, so many days after the end.
CREATE TABLE programme_health.follow_ups (
    position        bigint      PRIMARY KEY,
    pair_id         text        NOT NULL,
    programme_id    text        NOT NULL,
    follow_up_no    integer,
    days_after_end  integer     NOT NULL,
    by_role         text        NOT NULL,
    still_using     boolean     NOT NULL,
    at              timestamptz NOT NULL
);
CREATE INDEX follow_ups_by_programme ON programme_health.follow_ups (programme_id);

-- Each spell at risk: from the flag to back on track or the pair's end (open while it lasts).
CREATE TABLE programme_health.risk_spells (
    pair_id       text        NOT NULL,
    spell         integer     NOT NULL,
    programme_id  text        NOT NULL,
    since         timestamptz NOT NULL,
    until         timestamptz,
    PRIMARY KEY (pair_id, spell)
);
CREATE INDEX risk_spells_by_programme ON programme_health.risk_spells (programme_id);

-- Collective sessions held, with how many came.
CREATE TABLE programme_health.group_sessions (
    position      bigint      PRIMARY KEY,
    programme_id  text        NOT NULL,
    session_no    integer     NOT NULL,
    attendees     integer     NOT NULL,
    pairs         integer     NOT NULL,
    at            timestamptz NOT NULL
);
CREATE INDEX group_sessions_by_programme ON programme_health.group_sessions (programme_id);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mentoring_app') THEN
        GRANT USAGE ON SCHEMA programme_health TO mentoring_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA programme_health TO mentoring_app;
    END IF;
END $$;
