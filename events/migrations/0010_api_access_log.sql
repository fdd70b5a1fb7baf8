-- Who read what through the audit API (and the codec server mounted on it): one row per request,
-- written before the answer leaves (api/app.py). Append-only, like the log it is about.
CREATE TABLE api_access (
    id            bigserial   PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    token_name    text,        -- role and a fingerprint of the token, never the token
    role          text,
    method        text        NOT NULL,
    route         text        NOT NULL,
    path_params   jsonb       NOT NULL,
    query_params  jsonb       NOT NULL,
    status        integer     NOT NULL,
    answer_bytes  bigint      NOT NULL,
    duration_ms   real        NOT NULL
);
CREATE INDEX api_access_at ON api_access (at);
CREATE TRIGGER api_access_no_update_delete BEFORE UPDATE OR DELETE ON api_access
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER api_access_no_truncate BEFORE TRUNCATE ON api_access
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
