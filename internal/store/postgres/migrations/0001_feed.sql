-- The change feed's functions, in the sidecar's own schema. The triggers
-- that call them are attached to LiteLLM's key tables by the store (see
-- triggers.go), which also generates litellm_sidecar.key_update_notify()
-- from the key table's columns.
--
-- The functions run as whoever writes the table (LiteLLM's role too), so
-- everyone may use the schema. They only read the statement's transition
-- tables and call pg_notify; they never fail the write they observe: on any
-- error they ask every cache to purge instead.
--
-- Payloads on channel sidecar_key_changes (one per statement, at most):
--   {"k":"b","t":[token,...],"s":[[token,spend],...],"r":[[token,spend,budget_reset_at],...]}
--       t: drop these keys; s: spend-only changes; r: the sidecar's own
--       budget resets (applied in place by caches)
--   {"k":"purge","why":"rows"|"truncate"|"size"|"error","n":N}   drop everything
--   {"k":"hb","id":"..."}                                         a store's heartbeat

GRANT USAGE ON SCHEMA litellm_sidecar TO PUBLIC;

-- Above this many changed rows a statement sends one purge instead of a
-- list (a NOTIFY payload is limited to 8000 bytes).
CREATE OR REPLACE FUNCTION litellm_sidecar.max_listed() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 100';

CREATE OR REPLACE FUNCTION litellm_sidecar.purge(why text, n bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('sidecar_key_changes', json_build_object('k', 'purge', 'why', why, 'n', n)::text);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'litellm_sidecar: change notification failed: %', SQLERRM;
END
$$;

CREATE OR REPLACE FUNCTION litellm_sidecar.send(payload text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF octet_length(payload) > 7900 THEN
        PERFORM litellm_sidecar.purge('size', NULL);
    ELSE
        PERFORM pg_notify('sidecar_key_changes', payload);
    END IF;
END
$$;

-- TRUNCATE: everything is gone.
CREATE OR REPLACE FUNCTION litellm_sidecar.notify_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM litellm_sidecar.purge('truncate', NULL);
    RETURN NULL;
END
$$;

-- INSERT, DELETE (and UPDATE on the grace-period table): the tokens of the
-- rows the statement touched.
CREATE OR REPLACE FUNCTION litellm_sidecar.notify_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    toks text[];
    n bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO n FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT count(*) INTO n FROM old_rows;
    ELSE
        SELECT count(*) INTO n FROM (SELECT token FROM old_rows UNION SELECT token FROM new_rows) u;
    END IF;
    IF n = 0 THEN
        RETURN NULL;
    ELSIF n > litellm_sidecar.max_listed() THEN
        PERFORM litellm_sidecar.purge('rows', n);
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(token) INTO toks FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(token) INTO toks FROM old_rows;
    ELSE
        SELECT array_agg(token) INTO toks FROM (SELECT token FROM old_rows UNION SELECT token FROM new_rows) u;
    END IF;
    PERFORM litellm_sidecar.send(json_build_object('k', 'b', 't', toks)::text);
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    PERFORM litellm_sidecar.purge('error', NULL);
    RETURN NULL;
END
$$;
