package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The change triggers: the only objects the sidecar attaches to LiteLLM's
// tables. Statement-level with transition tables, so a statement sends one
// notification whatever the number of rows (see migrations/0001_feed.sql).
// Prisma's schema model has no triggers: `prisma migrate diff` and
// `prisma db pull` neither see nor drop them.
type trigger struct {
	table, name, def string
}

var triggers = []trigger{
	{keyTableName, "litellm_sidecar_insert", `AFTER INSERT ON "LiteLLM_VerificationToken" REFERENCING NEW TABLE AS new_rows
		FOR EACH STATEMENT EXECUTE FUNCTION litellm_sidecar.notify_rows()`},
	{keyTableName, "litellm_sidecar_update", `AFTER UPDATE ON "LiteLLM_VerificationToken" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
		FOR EACH STATEMENT EXECUTE FUNCTION litellm_sidecar.key_update_notify()`},
	{keyTableName, "litellm_sidecar_delete", `AFTER DELETE ON "LiteLLM_VerificationToken" REFERENCING OLD TABLE AS old_rows
		FOR EACH STATEMENT EXECUTE FUNCTION litellm_sidecar.notify_rows()`},
	{keyTableName, "litellm_sidecar_truncate", `AFTER TRUNCATE ON "LiteLLM_VerificationToken"
		FOR EACH STATEMENT EXECUTE FUNCTION litellm_sidecar.notify_truncate()`},
	{deprecatedTableName, "litellm_sidecar_insert", `AFTER INSERT ON "LiteLLM_DeprecatedVerificationToken" REFERENCING NEW TABLE AS new_rows
		FOR EACH STATEMENT EXECUTE FUNCTION litellm_sidecar.notify_rows()`},
	{deprecatedTableName, "litellm_sidecar_update", `AFTER UPDATE ON "LiteLLM_DeprecatedVerificationToken" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
		FOR EACH STATEMENT EXECUTE FUNCTION litellm_sidecar.notify_rows()`},
	{deprecatedTableName, "litellm_sidecar_delete", `AFTER DELETE ON "LiteLLM_DeprecatedVerificationToken" REFERENCING OLD TABLE AS old_rows
		FOR EACH STATEMENT EXECUTE FUNCTION litellm_sidecar.notify_rows()`},
	{deprecatedTableName, "litellm_sidecar_truncate", `AFTER TRUNCATE ON "LiteLLM_DeprecatedVerificationToken"
		FOR EACH STATEMENT EXECUTE FUNCTION litellm_sidecar.notify_truncate()`},
}

// triggerState maps table/name to pg_trigger.tgenabled ('O' origin only,
// 'A' always, 'D' disabled, 'R' replica only).
type triggerState map[string]byte

func (ts triggerState) missing() []string {
	var out []string
	for _, t := range triggers {
		if _, ok := ts[t.table+"/"+t.name]; !ok {
			out = append(out, t.name+" on "+t.table)
		}
	}
	return out
}

func readTriggers(ctx context.Context, q pgx.Tx) (triggerState, error) {
	rows, err := q.Query(ctx, `SELECT c.relname, t.tgname, t.tgenabled::text FROM pg_trigger t
		JOIN pg_class c ON c.oid = t.tgrelid
		WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1) AND t.tgname LIKE 'litellm_sidecar_%'`,
		[]string{keyTableName, deprecatedTableName})
	if err != nil {
		return nil, fmt.Errorf("read triggers: %w", err)
	}
	ts := triggerState{}
	var table, name, enabled string
	if _, err := pgx.ForEachRow(rows, []any{&table, &name, &enabled}, func() error {
		ts[table+"/"+name] = enabled[0]
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read triggers: %w", err)
	}
	return ts, nil
}

// ensureTriggers (re)generates the key table's UPDATE function from the
// table's columns, creates the triggers that are missing and makes them
// fire under session_replication_role = replica too (ENABLE ALWAYS), so
// logical replication and replica-role restores invalidate caches as well.
// ENABLE ALWAYS needs the table's owner; without it the triggers stay
// "origin" triggers and a warning says so.
func (s *Store) ensureTriggers(ctx context.Context, tx pgx.Tx) error {
	_, types, err := loadColumns(ctx, tx)
	if err != nil {
		return fmt.Errorf("read key table columns: %w", err)
	}
	if _, err := tx.Exec(ctx, keyUpdateFunction(types)); err != nil {
		return fmt.Errorf("create %s.key_update_notify: %w", Schema, err)
	}
	// Whoever writes LiteLLM's tables runs these functions (even where
	// default privileges revoke EXECUTE from PUBLIC).
	if _, err := tx.Exec(ctx, `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA `+Schema+` TO PUBLIC`); err != nil {
		return fmt.Errorf("grant execute on %s: %w", Schema, err)
	}
	ts, err := readTriggers(ctx, tx)
	if err != nil {
		return err
	}
	var notAlways []string
	for _, t := range triggers {
		state, ok := ts[t.table+"/"+t.name]
		if !ok {
			if _, err := tx.Exec(ctx, `CREATE TRIGGER `+t.name+` `+t.def); err != nil {
				return fmt.Errorf("create trigger %s on %s: %w", t.name, t.table, err)
			}
			s.log.Info("postgres: created change trigger", "table", t.table, "trigger", t.name)
		}
		if state == 'A' {
			continue
		}
		_, err := tx.Exec(ctx, `SAVEPOINT enable_always`)
		if err == nil {
			_, err = tx.Exec(ctx, `ALTER TABLE `+quote(t.table)+` ENABLE ALWAYS TRIGGER `+t.name)
		}
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			_, err = tx.Exec(ctx, `RELEASE SAVEPOINT enable_always`)
		case errors.As(err, &pgErr) && pgErr.Code == "42501": // insufficient_privilege: not the owner
			notAlways = append(notAlways, t.name+" on "+t.table)
			_, err = tx.Exec(ctx, `ROLLBACK TO SAVEPOINT enable_always`)
		}
		if err != nil {
			return fmt.Errorf("enable trigger %s on %s always: %w", t.name, t.table, err)
		}
	}
	if len(notAlways) > 0 {
		s.log.Warn("postgres: not the owner of LiteLLM's key tables: change triggers do not fire under session_replication_role = replica (logical replication, pg_restore); see docs/litellm-database.md",
			"triggers", notAlways)
	}
	return nil
}

// spendCol, resetCol: the columns a spend-only change and the sidecar's
// budget reset may change without the key's configuration changing.
const (
	spendCol = "spend"
	resetCol = "budget_reset_at"
)

// keyUpdateFunction generates litellm_sidecar.key_update_notify(): it
// classifies each updated row without row-to-JSON conversions:
//   - token changed (a rotation), or a column the store reads changed: "t"
//     (drop the key);
//   - budget_reset_at (and spend) changed inside the sidecar's own budget
//     reset (setting litellm_sidecar.budget_reset = 'on'): "r" with the new
//     values;
//   - only spend (and columns the store does not read, such as updated_at)
//     changed: "s" with the new spend;
//   - nothing the store reads changed: nothing.
//
// Only columns the store reads are compared: a change to any other column
// cannot change a cached key. model_spend is left out too: metering flushes
// change it with spend, and no cached decision reads it, so such a flush
// stays a spend-only change that caches apply in place.
func keyUpdateFunction(types map[string]string) string {
	var cmp []string
	for _, kc := range knownColumns {
		typ, ok := types[kc.name]
		if !ok || kc.name == "token" || kc.name == spendCol || kc.name == resetCol || kc.name == "updated_at" || kc.name == "model_spend" {
			continue
		}
		o, n := "o."+quote(kc.name), "n."+quote(kc.name)
		if typ == "json" { // no equality operator
			o, n = o+"::text", n+"::text"
		}
		cmp = append(cmp, o+" IS DISTINCT FROM "+n)
	}
	slices.Sort(cmp)
	changed := "false"
	if len(cmp) > 0 {
		changed = strings.Join(cmp, "\n\t\t\t\tOR ")
	}
	_, hasSpend := types[spendCol]
	_, hasReset := types[resetCol]
	spend, reset := "NULL::float8", "NULL::timestamp"
	spendDiff, resetDiff := "false", "false"
	if hasSpend {
		spend, spendDiff = "n.spend", "o.spend IS DISTINCT FROM n.spend"
	}
	if hasReset {
		reset, resetDiff = "n.budget_reset_at", "o.budget_reset_at IS DISTINCT FROM n.budget_reset_at"
	}
	classify := `SELECT coalesce(n.token, o.token) AS token, ` + spend + ` AS spend, ` + reset + ` AS reset_at,
			CASE
				WHEN o.token IS NULL OR n.token IS NULL THEN 't'
				WHEN ` + changed + ` THEN 't'
				WHEN ` + resetDiff + ` THEN CASE WHEN resetting THEN 'r' ELSE 't' END
				WHEN ` + spendDiff + ` THEN 's'
			END AS cls
			FROM old_rows o FULL JOIN new_rows n ON n.token = o.token`
	return `CREATE OR REPLACE FUNCTION ` + Schema + `.key_update_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
	resetting boolean := coalesce(current_setting('litellm_sidecar.budget_reset', true), '') = 'on';
	n bigint;
	payload text;
BEGIN
	SELECT count(*) INTO n FROM (` + classify + `) j WHERE cls IS NOT NULL;
	IF n = 0 THEN
		RETURN NULL;
	ELSIF n > litellm_sidecar.max_listed() THEN
		PERFORM litellm_sidecar.purge('rows', n);
		RETURN NULL;
	END IF;
	SELECT json_build_object('k', 'b',
		't', coalesce(json_agg(token) FILTER (WHERE cls = 't'), '[]'),
		's', coalesce(json_agg(json_build_array(token, spend)) FILTER (WHERE cls = 's'), '[]'),
		'r', coalesce(json_agg(json_build_array(token, spend, reset_at)) FILTER (WHERE cls = 'r'), '[]'))::text
	INTO payload FROM (` + classify + `) j;
	PERFORM litellm_sidecar.send(payload);
	RETURN NULL;
EXCEPTION WHEN OTHERS THEN
	PERFORM litellm_sidecar.purge('error', NULL);
	RETURN NULL;
END
$fn$`
}
