-- Each projection's checkpoint records what it applied: how many events of the log, in commit
-- order, and a running SHA-256 over their ids (projections/range_digest.py). An auditor recomputes
-- it from the log (`mentoring audit prove projections`): the read model was built from exactly
-- that range, nothing more, nothing less. NULL: the checkpoint moved before digests were kept (a
-- rebuild records one).
ALTER TABLE projection_checkpoints
    ADD COLUMN applied_events bigint,
    ADD COLUMN range_digest   bytea CHECK (octet_length(range_digest) = 32);
-- A checkpoint still at the start of the log has applied nothing: its digest is the empty one.
UPDATE projection_checkpoints SET applied_events = 0, range_digest = '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
    WHERE transaction_id = 0 AND position = 0;
