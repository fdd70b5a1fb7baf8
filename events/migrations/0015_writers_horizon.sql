-- Readers of the log no longer wait for every open transaction on the server, only for the ones
-- that write events (events/store.py, "The readers' horizon").
--
-- A writer takes a shared advisory lock (class 'logw', key 1) for its transaction before it has a
-- transaction id; events_begin_write() takes it, and append_events calls it. A transaction that
-- already wrote something else (so it has an id) and did not take the lock first is refused: a
-- reader may already have moved past its id. Such a transaction calls events_begin_write() as its
-- first statement. (The lock itself is the proof, looked up only when the transaction already has
-- an id: a setting could be set by anyone.)
--
-- events_horizon() is the reader's bound: events with a transaction id below it are all committed
-- and visible in the reader's snapshot. It is the oldest transaction of the snapshot that holds the
-- writer lock now or has ended since the snapshot was taken (it may have been a writer), else the
-- snapshot's xmax. A transaction that holds the lock but has no id yet will get one above xmax.
-- Unrelated transactions (other databases, an idle session, a projection's FOR UPDATE, a rebuild's
-- swap, a prepared transaction that wrote no events) hold nobody back.
CREATE FUNCTION events_begin_write() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF pg_current_xact_id_if_assigned() IS NULL THEN
        PERFORM pg_advisory_xact_lock_shared(1819240311, 1);  -- taken again: harmless
    ELSIF NOT EXISTS (SELECT FROM pg_locks
                       WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted
                         AND classid = 1819240311::oid AND objid = 1::oid AND objsubid = 2) THEN
        RAISE EXCEPTION 'events are appended before any other write of their transaction: '
            'call events_begin_write() first' USING ERRCODE = 'ES428';
    END IF;
END $$;

-- When a writer holding the lock has an id the snapshot shows but the lock table does not yet
-- (PostgreSQL publishes the id first, its lock a moment later), its id cannot be told apart from
-- an unrelated one: the horizon is then the snapshot's xmin, as if every open transaction wrote.
CREATE FUNCTION events_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    WITH writer_locks AS (
        SELECT w.virtualtransaction,
               (SELECT t.transactionid::text::bigint FROM pg_locks t
                 WHERE t.virtualtransaction = w.virtualtransaction AND t.locktype = 'transactionid'
                 LIMIT 1) AS xid32
          FROM pg_locks w
         WHERE w.locktype = 'advisory' AND w.classid = 1819240311::oid AND w.objid = 1::oid
           AND w.objsubid = 2 AND w.granted
           AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
    SELECT CASE
        WHEN EXISTS (SELECT FROM writer_locks WHERE xid32 IS NULL) THEN pg_snapshot_xmin(snap.s)
        ELSE coalesce(
            (SELECT min(x) FROM pg_snapshot_xip(snap.s) AS x
              WHERE x::text::bigint % 4294967296 IN (SELECT xid32 FROM writer_locks)
                 OR pg_xact_status(x) IS DISTINCT FROM 'in progress'),
            pg_snapshot_xmax(snap.s)) END
      FROM (SELECT pg_current_snapshot() AS s) AS snap
$$;

CREATE OR REPLACE FUNCTION append_events(
    p_stream_id text, p_expected_version bigint, p_event_ids uuid[], p_event_types text[],
    p_schema_versions integer[], p_payloads jsonb[], p_metadata jsonb[]
) RETURNS TABLE (out_event_id uuid, out_position bigint, out_version bigint,
                 out_recorded_at timestamptz, out_duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_count      integer := coalesce(array_length(p_event_ids, 1), 0);
    v_current    bigint;
    v_prev_hash  bytea;
    v_known      integer;
    v_matching   integer;
    v_now        timestamptz := clock_timestamp();
    v_position   bigint;
    v_version    bigint;
    v_hash       bytea;
    i            integer;
BEGIN
    IF v_count = 0 THEN
        RETURN;
    END IF;
    PERFORM events_begin_write();

    INSERT INTO event_streams AS s (stream_id, version, last_hash)
        VALUES (p_stream_id, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
        ON CONFLICT (stream_id) DO NOTHING;
    SELECT s.version, s.last_hash INTO v_current, v_prev_hash
        FROM event_streams s WHERE s.stream_id = p_stream_id FOR UPDATE;

    IF v_current <> p_expected_version THEN
        SELECT count(*), count(*) FILTER (
                   WHERE e.stream_id = p_stream_id AND e.event_type = n.event_type
                     AND e.payload = n.payload)
            INTO v_known, v_matching
            FROM unnest(p_event_ids, p_event_types, p_payloads) AS n(event_id, event_type, payload)
            JOIN events e ON e.event_id = n.event_id;
        IF v_known = v_count AND v_matching = v_count THEN
            RETURN QUERY
                SELECT e.event_id, e.position, e.version, e.recorded_at, true
                FROM events e WHERE e.event_id = ANY (p_event_ids) ORDER BY e.version;
            RETURN;
        ELSIF v_known > 0 THEN
            RAISE EXCEPTION 'event id already recorded with a different content in stream %',
                p_stream_id USING ERRCODE = 'ES422';
        END IF;
        RAISE EXCEPTION 'stream % is at version %, expected %', p_stream_id, v_current,
            p_expected_version
            USING ERRCODE = 'ES409', DETAIL = v_current::text;
    END IF;

    FOR i IN 1 .. v_count LOOP
        v_position := nextval('event_position_seq');
        v_version := v_current + i;
        v_hash := sha256(v_prev_hash || event_hash_input(
            v_position, p_stream_id, v_version, p_event_ids[i], p_event_types[i],
            p_schema_versions[i], p_payloads[i], p_metadata[i], v_now));
        INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                            payload, metadata, recorded_at, prev_hash, hash)
            VALUES (v_position, p_stream_id, v_version, p_event_ids[i], p_event_types[i],
                    p_schema_versions[i], p_payloads[i], p_metadata[i], v_now, v_prev_hash, v_hash)
            ON CONFLICT (event_id) DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'event id % already recorded (in stream % or another)',
                p_event_ids[i], p_stream_id USING ERRCODE = 'ES422';
        END IF;
        out_event_id := p_event_ids[i];
        out_position := v_position;
        out_version := v_version;
        out_recorded_at := v_now;
        out_duplicate := false;
        RETURN NEXT;
        v_prev_hash := v_hash;
    END LOOP;

    UPDATE event_streams s SET version = v_current + v_count, last_hash = v_prev_hash
        WHERE s.stream_id = p_stream_id;
END $$;
