-- The append-only event log, its stream heads, and the one function that appends to it.

CREATE SEQUENCE event_position_seq AS bigint;

-- One row per stream: its current version and the hash of its last event. Appends lock this row,
-- so writers to the same stream queue up while writers to other streams run in parallel.
CREATE TABLE event_streams (
    stream_id  text PRIMARY KEY,
    version    bigint NOT NULL CHECK (version >= 0),
    last_hash  bytea  NOT NULL
);

CREATE TABLE events (
    position        bigint PRIMARY KEY DEFAULT nextval('event_position_seq'),
    -- The writing transaction. Readers follow (transaction_id, position) and only read below the
    -- oldest transaction still open, so a late commit of an early position is never skipped.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    UNIQUE (stream_id, version)
);
ALTER SEQUENCE event_position_seq OWNED BY events.position;

CREATE INDEX events_commit_order ON events (transaction_id, position);

-- The log is append-only at the database level: UPDATE, DELETE and TRUNCATE are refused.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- The text an event's hash covers. Built from jsonb's canonical text, so the same stored row
-- always gives the same bytes; verification rebuilds it in its own query.
CREATE FUNCTION event_hash_input(
    p_position bigint, p_stream_id text, p_version bigint, p_event_id uuid, p_event_type text,
    p_schema_version integer, p_payload jsonb, p_metadata jsonb, p_recorded_at timestamptz
) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_to(jsonb_build_array(
        p_position, p_stream_id, p_version, p_event_id, p_event_type, p_schema_version,
        p_payload, p_metadata, (extract(epoch FROM p_recorded_at) * 1000000)::bigint
    )::text, 'UTF8')
$$;

-- Append events to one stream, in one round trip.
--   * optimistic concurrency: p_expected_version must be the stream's current version
--     (0 for a new stream), else SQLSTATE ES409;
--   * idempotent by event id: the same events again (a retried activity) return the stored rows
--     with duplicate = true; a known event id with a different content is SQLSTATE ES422;
--   * each event's hash chains to the previous event of its stream;
--   * NOTIFY is the last statement: it is only a wake-up, readers catch up from their checkpoint.
CREATE FUNCTION append_events(
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

    SELECT count(*), count(*) FILTER (
               WHERE e.stream_id = p_stream_id AND e.event_type = n.event_type
                 AND e.payload = n.payload)
        INTO v_known, v_matching
        FROM unnest(p_event_ids, p_event_types, p_payloads) AS n(event_id, event_type, payload)
        JOIN events e ON e.event_id = n.event_id;
    IF v_known > 0 THEN
        IF v_known = v_count AND v_matching = v_count THEN
            RETURN QUERY
                SELECT e.event_id, e.position, e.version, e.recorded_at, true
                FROM events e WHERE e.event_id = ANY (p_event_ids) ORDER BY e.version;
            RETURN;
        END IF;
        RAISE EXCEPTION 'event id already recorded with a different content in stream %', p_stream_id
            USING ERRCODE = 'ES422';
    END IF;

    IF v_current <> p_expected_version THEN
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
                    p_schema_versions[i], p_payloads[i], p_metadata[i], v_now, v_prev_hash, v_hash);
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

    PERFORM pg_notify('mentoring_events', p_stream_id);
END $$;
