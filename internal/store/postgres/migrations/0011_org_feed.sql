-- The change feed for teams, users, memberships and budgets: every write
-- (by the sidecar, LiteLLM or plain SQL) notifies channel
-- sidecar_key_changes, in the key feed's format plus "table" and the row's
-- identity: {"op", "table", "team_id" | "user_id" | "budget_id"
-- [, "spend_only", "spend"]}. An UPDATE that moves a row to a new identity
-- notifies the old identity too. Triggers are our own objects; the tables
-- are not altered. The function lives in schema litellm_sidecar, like the
-- key feed's, so DROP SCHEMA litellm_sidecar CASCADE removes these triggers
-- too. These are row-level: team, user, membership and budget tables are
-- small and rarely written in bulk (the key table's triggers are
-- statement-level, see triggers.go).

CREATE OR REPLACE FUNCTION litellm_sidecar.notify_org_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o jsonb;
    n jsonb;
    id_cols text[];
    ident jsonb;
    old_ident jsonb;
    c text;
BEGIN
    id_cols := CASE TG_TABLE_NAME
        WHEN 'LiteLLM_TeamTable' THEN ARRAY['team_id']
        WHEN 'LiteLLM_UserTable' THEN ARRAY['user_id']
        WHEN 'LiteLLM_TeamMembership' THEN ARRAY['team_id', 'user_id']
        ELSE ARRAY['budget_id'] END;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        o := to_jsonb(OLD);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        n := to_jsonb(NEW);
    END IF;
    ident := jsonb_build_object('op', TG_OP, 'table', TG_TABLE_NAME);
    old_ident := ident;
    FOREACH c IN ARRAY id_cols LOOP
        ident := ident || jsonb_build_object(c, COALESCE(n, o) -> c);
        IF o IS NOT NULL THEN
            old_ident := old_ident || jsonb_build_object(c, o -> c);
        END IF;
    END LOOP;
    IF TG_OP = 'UPDATE' AND old_ident IS DISTINCT FROM ident THEN
        PERFORM pg_notify('sidecar_key_changes', old_ident::text);
    ELSIF TG_OP = 'UPDATE' AND TG_TABLE_NAME <> 'LiteLLM_BudgetTable'
        AND (o - 'spend' - 'updated_at') = (n - 'spend' - 'updated_at') THEN
        ident := ident || jsonb_build_object('spend_only', true, 'spend', n -> 'spend');
    END IF;
    PERFORM pg_notify('sidecar_key_changes', ident::text);
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    -- Never fail the write being observed: ask every cache to purge.
    PERFORM litellm_sidecar.purge('error', 0);
    RETURN NULL;
END
$$;

-- Attached to whichever of the four tables exist (a key table set up
-- without LiteLLM's migrations may lack them; the store then has no teams).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['LiteLLM_TeamTable', 'LiteLLM_UserTable', 'LiteLLM_TeamMembership', 'LiteLLM_BudgetTable'] LOOP
        IF to_regclass(format('%I', t)) IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER IF EXISTS litellm_sidecar_org ON %I', t);
            EXECUTE format('CREATE TRIGGER litellm_sidecar_org AFTER INSERT OR UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION litellm_sidecar.notify_org_change()', t);
        END IF;
    END LOOP;
END
$$;
