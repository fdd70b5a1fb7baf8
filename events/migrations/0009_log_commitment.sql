-- One commitment over the whole log: every event is a leaf of a Merkle tree (RFC 9162), in commit
-- order, and checkpoints sign the tree's size and root (events/ledger.py). A stream deleted with
-- its head row, a cut tail, a reordered pair of transactions, an altered or forged event: each
-- changes the root that a checkpoint kept outside the database signed.

CREATE TABLE log_leaves (
    leaf_index  bigint PRIMARY KEY CHECK (leaf_index >= 0),
    -- No foreign key to events: TRUNCATE events must meet the append-only trigger, not the key.
    position    bigint NOT NULL UNIQUE,
    -- Kept to name what is missing when an event has gone.
    stream_id   text   NOT NULL,
    version     bigint NOT NULL,
    leaf_hash   bytea  NOT NULL
);

CREATE TABLE log_checkpoints (
    size             bigint PRIMARY KEY CHECK (size >= 0),
    root             bytea       NOT NULL,
    signed_at        timestamptz NOT NULL,
    key_fingerprint  text        NOT NULL,
    signature        bytea       NOT NULL
);

-- Both are append-only like the log, and so is the stream head table now: an append updates a
-- head, nothing deletes one.
CREATE TRIGGER log_leaves_no_update_delete BEFORE UPDATE OR DELETE ON log_leaves
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER log_leaves_no_truncate BEFORE TRUNCATE ON log_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER log_checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER log_checkpoints_no_truncate BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER event_streams_no_delete BEFORE DELETE ON event_streams
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER event_streams_no_truncate BEFORE TRUNCATE ON event_streams
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
