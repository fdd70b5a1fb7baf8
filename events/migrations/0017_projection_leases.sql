-- Who runs each projection, until when (projections/runner.py, "Fail-over"). The runner holding a
-- projection's advisory lock renews its lease every few seconds from a connection of its own pool;
-- another runner that finds the lease expired ends the holder's server session
-- (pg_terminate_backend), which rolls back its batch and frees the lock. A runner frozen (SIGSTOP, a
-- stalled host) keeps its session alive on the server, and its lock with it, for as long as its
-- kernel answers TCP: the lease is what notices it.
CREATE TABLE projection_leases (
    name            text        PRIMARY KEY,
    holder_pid      integer     NOT NULL,  -- the server session holding the lock: its pid,
    holder_started  timestamptz NOT NULL,  -- and its start (a pid is reused; a session is not)
    expires_at      timestamptz NOT NULL
);
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mentoring_app') THEN
        GRANT SELECT, INSERT, UPDATE ON projection_leases TO mentoring_app;
    END IF;
END $$;
