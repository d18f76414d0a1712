-- The change feed: every write to the key table (by the sidecar, LiteLLM or
-- plain SQL) notifies channel sidecar_key_changes, so every replica can drop
-- its cached copy. Payload: {"op", "token"[, "old_token"][, "spend_only",
-- "spend"]}. spend_only marks an UPDATE that changed nothing but spend and
-- updated_at. Triggers are our own objects; the tables are not altered.

CREATE OR REPLACE FUNCTION sidecar_notify_key_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload json;
BEGIN
    IF TG_OP = 'DELETE' THEN
        payload := json_build_object('op', 'DELETE', 'token', OLD.token);
    ELSIF TG_OP = 'INSERT' THEN
        payload := json_build_object('op', 'INSERT', 'token', NEW.token);
    ELSIF OLD.token IS DISTINCT FROM NEW.token THEN
        payload := json_build_object('op', 'UPDATE', 'token', NEW.token, 'old_token', OLD.token);
    ELSIF (to_jsonb(OLD) - 'spend' - 'updated_at') = (to_jsonb(NEW) - 'spend' - 'updated_at') THEN
        payload := json_build_object('op', 'UPDATE', 'token', NEW.token, 'spend_only', true, 'spend', NEW.spend);
    ELSE
        payload := json_build_object('op', 'UPDATE', 'token', NEW.token);
    END IF;
    PERFORM pg_notify('sidecar_key_changes', payload::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sidecar_key_change ON "LiteLLM_VerificationToken";
CREATE TRIGGER sidecar_key_change
    AFTER INSERT OR UPDATE OR DELETE ON "LiteLLM_VerificationToken"
    FOR EACH ROW EXECUTE FUNCTION sidecar_notify_key_change();

-- A token entering or leaving its grace period changes what Lookup returns
-- for it: notify the deprecated token as changed.
CREATE OR REPLACE FUNCTION sidecar_notify_deprecated_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('sidecar_key_changes', json_build_object('op', TG_OP, 'token', OLD.token)::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('sidecar_key_changes', json_build_object('op', TG_OP, 'token', NEW.token)::text);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sidecar_deprecated_change ON "LiteLLM_DeprecatedVerificationToken";
CREATE TRIGGER sidecar_deprecated_change
    AFTER INSERT OR UPDATE OR DELETE ON "LiteLLM_DeprecatedVerificationToken"
    FOR EACH ROW EXECUTE FUNCTION sidecar_notify_deprecated_change();
