-- Personal data lives outside the hash-chained log, so erasing it never breaks the chain.
-- Events refer to people by pseudonymous employee ids only.

CREATE TABLE people (
    employee_id   text PRIMARY KEY,
    display_name  text,
    email         text,
    time_zone     text NOT NULL DEFAULT 'UTC',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    erased_at     timestamptz  -- set on an erasure request; name and e-mail are nulled then
);

-- What is said in a session stays with the pair: comments are kept here, out of the log and out
-- of the read models, and only shown when their author chooses to share them.
CREATE TABLE private_notes (
    event_id    uuid PRIMARY KEY,        -- the FeedbackGiven / FinalEvaluationGiven event it belongs to
    pair_id     text NOT NULL,
    author_id   text NOT NULL,
    body        text,
    shared      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz
);
CREATE INDEX private_notes_pair ON private_notes (pair_id);
CREATE INDEX private_notes_author ON private_notes (author_id);
