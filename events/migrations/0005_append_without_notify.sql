-- Append events to one stream, in one round trip.
--   * optimistic concurrency: p_expected_version must be the stream's current version
--     (0 for a new stream), else SQLSTATE ES409;
--   * idempotent by event id: the same events again (a retried activity) return the stored rows
--     with duplicate = true; a known event id with a different content is SQLSTATE ES422.
--     A retry always finds the stream moved past p_expected_version, so the lookup of known ids
--     runs only then; on the normal path, ON CONFLICT on the event id catches a reused id;
--   * each event's hash chains to the previous event of its stream;
--   * no NOTIFY here: a notifying transaction holds a server-wide lock from its pre-commit to
--     the end of its WAL flush, which serialises every append. The store wakes readers after the
--     commit instead (see PostgresEventStore.append).
CREATE OR REPLACE FUNCTION append_events(
    p_stream_id text, p_expected_version bigint, p_event_ids uuid[], p_event_types text[],
    p_schema_versions integer[], p_payloads jsonb[], p_metadata jsonb[]
) RETURNS TABLE (out_event_id uuid, out_position bigint, out_version bigint,
                 out_recorded_at timestamptz, out_duplicate boolean)
LANGUAGE plpgsql AS $$
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
