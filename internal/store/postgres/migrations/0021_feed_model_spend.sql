-- Metering flushes change spend, model_spend and updated_at together: count
-- such an UPDATE as spend-only too, so other replicas update the cached
-- spend in place instead of reloading the key.

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
    ELSIF (to_jsonb(OLD) - 'spend' - 'model_spend' - 'updated_at') = (to_jsonb(NEW) - 'spend' - 'model_spend' - 'updated_at') THEN
        payload := json_build_object('op', 'UPDATE', 'token', NEW.token, 'spend_only', true, 'spend', NEW.spend);
    ELSE
        payload := json_build_object('op', 'UPDATE', 'token', NEW.token);
    END IF;
    PERFORM pg_notify('sidecar_key_changes', payload::text);
    RETURN NULL;
END
$$;
