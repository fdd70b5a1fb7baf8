-- A pair's curriculum objectives are free text that may name people: they are kept with the
-- private notes (erasable), not in the append-only log. `kind` tells them from comments.
ALTER TABLE private_notes ADD COLUMN kind text NOT NULL DEFAULT 'comment'
    CHECK (kind IN ('comment', 'curriculum_objectives'));
