-- Projections: the runner's bookkeeping and the read models it builds from the event log.
--
-- Each read model lives in its own schema, named after its projection. The projection's code
-- names its tables unqualified and the runner points search_path at the schema, so a rebuild can
-- fill a fresh copy of the schema (tables cloned with LIKE ... INCLUDING ALL) and swap it in by
-- renaming schemas in one transaction. Read models hold pseudonymous ids only: names are joined
-- from `people` at query time, so erasing a person needs no rebuild; private comments never
-- enter them. Every value comes from the events (no now(), no serial ids), so a rebuilt read
-- model equals the incrementally built one row for row.

-- Where each projection stands in the log, moved in the same transaction as its read model.
CREATE TABLE projection_checkpoints (
    name            text PRIMARY KEY,
    transaction_id  bigint      NOT NULL DEFAULT 0,
    position        bigint      NOT NULL DEFAULT 0,
    status          text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'failed')),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events a projection could not apply. The projection stops at the event (status 'failed')
-- until someone resumes it: retried after a fix, skipped (recorded here), or rebuilt.
CREATE TABLE projection_failures (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection      text        NOT NULL,
    position        bigint      NOT NULL,
    transaction_id  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    error           text        NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolution      text CHECK (resolution IN ('retried', 'skipped', 'rebuilt')),
    resolved_by     text
);
CREATE INDEX projection_failures_by_projection ON projection_failures (projection, failed_at);

-- --- pair overview: where each pair stands --------------------------------------------------------
CREATE SCHEMA pair_overview;
CREATE TABLE pair_overview.pairs (
    pair_id             text        PRIMARY KEY,
    programme_id        text        NOT NULL,
    stage               text        NOT NULL,
    stage_since         timestamptz NOT NULL,
    mentor_id           text        NOT NULL,
    mentee_id           text        NOT NULL,
    nominated_by        text        NOT NULL,
    nominated_at        timestamptz NOT NULL,
    sessions_planned    integer     NOT NULL,
    sessions_held       integer     NOT NULL,
    rating_sum          integer     NOT NULL,  -- average = rating_sum / rating_count, at query time
    rating_count        integer     NOT NULL,
    at_risk             boolean     NOT NULL,
    paused              boolean     NOT NULL,
    next_deadline       timestamptz,
    next_deadline_kind  text,
    last_activity_at    timestamptz NOT NULL,  -- last event recorded by a person, not a timer
    ended_at            timestamptz,
    last_position       bigint      NOT NULL,
    facts               jsonb       NOT NULL   -- the fold's working state: ids, flags, sessions
);
CREATE INDEX pairs_by_programme ON pair_overview.pairs (programme_id, stage);
CREATE INDEX pairs_by_mentor ON pair_overview.pairs (mentor_id);
CREATE INDEX pairs_by_mentee ON pair_overview.pairs (mentee_id);

-- --- programme funnel: how pairs move through the stages -------------------------------------------
CREATE SCHEMA programme_funnel;
CREATE TABLE programme_funnel.pairs (
    pair_id       text        PRIMARY KEY,
    programme_id  text        NOT NULL,
    stage         text        NOT NULL,
    visits        integer     NOT NULL,  -- stage visits so far; numbers the next one
    invited       boolean     NOT NULL,
    consented     boolean     NOT NULL,
    outcome       text,                  -- how the pair ended, null while it lives
    facts         jsonb       NOT NULL
);
CREATE INDEX funnel_pairs_by_programme ON programme_funnel.pairs (programme_id);
CREATE TABLE programme_funnel.stage_visits (
    pair_id       text        NOT NULL,
    visit         integer     NOT NULL,
    programme_id  text        NOT NULL,
    stage         text        NOT NULL,
    entered_at    timestamptz NOT NULL,
    left_at       timestamptz,
    PRIMARY KEY (pair_id, visit)
);
CREATE INDEX stage_visits_by_programme ON programme_funnel.stage_visits (programme_id, stage);

-- --- consent register: every invitation and every answer -------------------------------------------
CREATE SCHEMA consent_register;
CREATE TABLE consent_register.pairs (
    pair_id       text PRIMARY KEY,
    programme_id  text NOT NULL
);
CREATE TABLE consent_register.entries (
    position      bigint      PRIMARY KEY,
    event_id      uuid        NOT NULL,
    pair_id       text        NOT NULL,
    programme_id  text,
    person_id     text        NOT NULL,
    role          text        NOT NULL,
    answer        text        NOT NULL,  -- invited, consent_given, declined, expired, withdrawn, ...
    channel       text,
    recorded_by   text,
    actor         text        NOT NULL,
    at            timestamptz NOT NULL,
    expires_at    timestamptz,
    reason        text                   -- a reason code (payloads carry no free text)
);
CREATE INDEX consent_by_programme ON consent_register.entries (programme_id, at);
CREATE INDEX consent_by_pair ON consent_register.entries (pair_id, position);
CREATE INDEX consent_by_person ON consent_register.entries (person_id, at);

-- --- audit trail: who did what, when, to which subject, for every event ---------------------------
CREATE SCHEMA audit_trail;
CREATE TABLE audit_trail.entries (
    position        bigint      PRIMARY KEY,
    transaction_id  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL,
    pair_id         text,
    action          text        NOT NULL,
    summary         text        NOT NULL,
    actor           text        NOT NULL,
    at              timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    workflow_id     text,
    run_id          text,
    correlation_id  text,
    causation_id    text,
    trace_id        text
);
CREATE INDEX audit_by_pair ON audit_trail.entries (pair_id, position);
CREATE INDEX audit_by_actor ON audit_trail.entries (actor, at);

-- --- mentor recognition: what each junior gave ------------------------------------------------------
CREATE SCHEMA mentor_recognition;
CREATE TABLE mentor_recognition.mentors (
    mentor_id        text    PRIMARY KEY,
    pairs            integer NOT NULL,
    sessions_given   integer NOT NULL,
    rating_sum       integer NOT NULL,  -- ratings given by mentees to sessions this mentor held
    rating_count     integer NOT NULL,
    last_session_at  timestamptz
);
CREATE TABLE mentor_recognition.topics (
    mentor_id  text    NOT NULL,
    topic      text    NOT NULL,
    sessions   integer NOT NULL,
    PRIMARY KEY (mentor_id, topic)
);
CREATE TABLE mentor_recognition.pairs (
    pair_id    text PRIMARY KEY,
    mentor_id  text NOT NULL
);
CREATE TABLE mentor_recognition.sessions (
    pair_id     text    NOT NULL,
    session_no  integer NOT NULL,
    mentor_id   text    NOT NULL,  -- who held it, so later feedback credits the right mentor
    PRIMARY KEY (pair_id, session_no)
);

-- --- session calendar: upcoming and past sessions per person ----------------------------------------
CREATE SCHEMA session_calendar;
CREATE TABLE session_calendar.pairs (
    pair_id       text PRIMARY KEY,
    programme_id  text NOT NULL,
    mentor_id     text NOT NULL,
    mentee_id     text NOT NULL
);
CREATE TABLE session_calendar.sessions (
    pair_id           text        NOT NULL,
    session_no        integer     NOT NULL,
    programme_id      text        NOT NULL,
    mentor_id         text        NOT NULL,
    mentee_id         text        NOT NULL,
    starts_at         timestamptz NOT NULL,
    duration_minutes  integer     NOT NULL,
    format            text        NOT NULL,
    topics            text[]      NOT NULL,
    status            text        NOT NULL,  -- proposed, confirmed, held, cancelled, missed
    topics_covered    text[],
    updated_at        timestamptz NOT NULL,  -- business time of the last change
    PRIMARY KEY (pair_id, session_no)
);
CREATE INDEX sessions_by_mentor ON session_calendar.sessions (mentor_id, starts_at);
CREATE INDEX sessions_by_mentee ON session_calendar.sessions (mentee_id, starts_at);
