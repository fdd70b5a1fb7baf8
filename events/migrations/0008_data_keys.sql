-- Data keys of the payload codec (codec/keys.py): Temporal's store holds only ciphertext, and
-- these rows hold the keys, each wrapped by the key-encryption key (KEK) kept outside the
-- database. Destroying a key (crypto-shredding) makes every payload under it unreadable for ever.
CREATE TABLE data_keys (
    key_id       uuid PRIMARY KEY,
    -- 'workflow': the key of one workflow id (a pair, a programme), for every run of it;
    -- 'typed': a key of its own for one input typed in the Web UI (the codec server cannot know
    --          the workflow it is for); found in that workflow's history when it is shredded;
    -- 'general': payloads outside any workflow (none carries personal data today).
    scope        text NOT NULL CHECK (scope IN ('workflow', 'typed', 'general')),
    -- The workflow whose payloads it encrypts (for a typed key: known once shredded with it). A
    -- workflow id used again after its key was destroyed gets a new key.
    workflow_id  text,
    wrapped_key  bytea,
    kek_id       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    shredded_at  timestamptz,
    CHECK (scope <> 'workflow' OR workflow_id IS NOT NULL),
    CHECK (scope <> 'general' OR workflow_id IS NULL),
    CHECK ((wrapped_key IS NULL) = (shredded_at IS NOT NULL))
);
CREATE UNIQUE INDEX data_keys_one_general ON data_keys (scope) WHERE scope = 'general';
CREATE UNIQUE INDEX data_keys_live_per_workflow ON data_keys (workflow_id)
    WHERE scope = 'workflow' AND shredded_at IS NULL;

-- Workflows whose keys are to be destroyed because a person's data is in their payloads: done
-- once the workflow has closed (a running one still needs to read its history).
CREATE TABLE key_shredding (
    workflow_id   text PRIMARY KEY,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    requested_by  text NOT NULL,
    keys_shredded integer,
    done_at       timestamptz
);
CREATE INDEX key_shredding_pending ON key_shredding (requested_at) WHERE done_at IS NULL;
