package mgmt_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/mgmt"
)

// auditSpy records the audit rows the API appends, then passes them on.
type auditSpy struct {
	mgmt.Store
	mu   sync.Mutex
	rows []keys.Audit
}

func (s *auditSpy) AppendAudit(ctx context.Context, a *keys.Audit) error {
	s.mu.Lock()
	s.rows = append(s.rows, *a)
	s.mu.Unlock()
	return s.Store.AppendAudit(ctx, a)
}

// auditReader is storetest.AuditReader: backends that can read audit rows
// back get them checked as stored.
type auditReader interface {
	Audits(ctx context.Context, objectID string) ([]*keys.Audit, error)
}

// rawKeyRE matches a raw key (key_name's "sk-...abcd" does not match).
var rawKeyRE = regexp.MustCompile(`sk-[A-Za-z0-9_-]{5,}`)

func TestAudit(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		inner := open(t)
		spy := &auditSpy{Store: inner}
		e := newEnv(t, spy)
		h := func(changedBy string) http.Header {
			hd := http.Header{"Authorization": {"Bearer " + master}}
			if changedBy != "" {
				hd.Set("litellm-changed-by", changedBy)
			}
			return hd
		}
		do := func(path, body, changedBy string) map[string]any {
			t.Helper()
			r := e.callH("POST", path, h(changedBy), body)
			if r.status != 200 {
				t.Fatalf("%s: %d %s", path, r.status, r.body)
			}
			return r.obj(t)
		}
		out := do("/key/generate", `{"key_alias":"aud","metadata":{"m":1}}`, "alice")
		raw, hash := out["key"].(string), out["token"].(string)
		e.sawRaw(raw)
		do("/key/update", `{"key":"`+raw+`","max_budget":3}`, "")
		do("/key/block", `{"key":"`+raw+`"}`, "bob")
		do("/key/unblock", `{"key":"`+raw+`"}`, "bob")
		out = do("/key/regenerate", `{"key":"`+raw+`"}`, "carol")
		raw2 := out["key"].(string)
		e.sawRaw(raw2)
		hash2 := keys.HashHex(raw2)
		do("/key/delete", `{"keys":["`+raw2+`"]}`, "dave")

		type want struct{ action, object, changedBy string }
		wants := []want{
			{keys.ActionCreated, hash, "alice"},
			{keys.ActionUpdated, hash, mgmt.DefaultChangedBy},
			{keys.ActionBlocked, hash, "bob"},
			{keys.ActionUnblocked, hash, "bob"},
			{keys.ActionRegenerated, hash2, "carol"},
			{keys.ActionDeleted, hash2, "dave"},
		}
		spy.mu.Lock()
		rows := slices.Clone(spy.rows)
		spy.mu.Unlock()
		if len(rows) != len(wants) {
			t.Fatalf("%d audit rows, want %d", len(rows), len(wants))
		}
		for i, w := range wants {
			a := rows[i]
			if a.Action != w.action || a.ObjectID != w.object || a.ChangedBy != w.changedBy ||
				a.ChangedByAPIKey != keys.HashHex(master) || a.TableName != keys.KeyTable {
				t.Errorf("row %d: action %q object %s changed_by %q api_key %s table %q; want %+v",
					i, a.Action, keys.Redact(a.ObjectID), a.ChangedBy, keys.Redact(a.ChangedByAPIKey), a.TableName, w)
			}
			switch a.Action {
			case keys.ActionCreated:
				if a.BeforeValue != nil || a.UpdatedValues["key_alias"] != "aud" {
					t.Errorf("created: before %v after alias %v", a.BeforeValue, a.UpdatedValues["key_alias"])
				}
			case keys.ActionUpdated:
				if a.BeforeValue["max_budget"] != nil || jsonStr(a.UpdatedValues["max_budget"]) != "3" { // numbers kept exactly (json.Number)
					t.Errorf("updated: before %v after %v", a.BeforeValue["max_budget"], a.UpdatedValues["max_budget"])
				}
			case keys.ActionBlocked:
				if a.UpdatedValues["blocked"] != true {
					t.Errorf("blocked: after %v", a.UpdatedValues["blocked"])
				}
			case keys.ActionRegenerated:
				if a.BeforeValue["token"] != hash || a.UpdatedValues["token"] != hash2 {
					t.Errorf("regenerated: before token %v after token %v", a.BeforeValue["token"], a.UpdatedValues["token"])
				}
			case keys.ActionDeleted:
				if a.BeforeValue["token"] != hash2 {
					t.Errorf("deleted: before %v", a.BeforeValue)
				}
			}
		}
		check := func(where string, v any) {
			b, _ := json.Marshal(v)
			for _, r := range []string{raw, raw2, master} {
				if strings.Contains(string(b), r) {
					t.Errorf("%s contains raw key %s", where, keys.Redact(r))
				}
			}
			if m := rawKeyRE.FindString(string(b)); m != "" {
				t.Errorf("%s contains something like a raw key: %s", where, keys.Redact(m))
			}
		}
		check("audit rows", rows)

		ar, ok := inner.(auditReader)
		if !ok {
			return
		}
		for _, obj := range []string{hash, hash2} {
			stored, err := ar.Audits(t.Context(), obj)
			if err != nil {
				t.Fatalf("Audits: %v", err)
			}
			var actions []string
			for _, a := range stored {
				actions = append(actions, a.Action)
			}
			wantN := 4
			if obj == hash2 {
				wantN = 2
			}
			if len(stored) != wantN {
				t.Errorf("stored audit rows for %s: %v", keys.Redact(obj), actions)
			}
			check("stored audit rows", stored)
		}
	})
}

func TestLogsHoldNoRawKey(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw, _, _ := e.generate(`{"key_alias":"logs"}`)
		e.admin("POST", "/key/update", `{"key":"`+raw+`","max_budget":1}`, 200)
		e.admin("POST", "/key/"+raw+"/regenerate", `{}`, 200)
		e.call("POST", "/key/"+raw+"/regenerate", master, `{}`) // now 404
		e.call("GET", "/key/info", raw, "")
		e.call("GET", "/key/info", "sk-not-a-known-key-0000", "")
		if !strings.Contains(e.logs.String(), "key created") {
			t.Errorf("mutations are not logged: %s", e.logs.String())
		}
		if m := rawKeyRE.FindString(e.logs.String()); m != "" {
			t.Errorf("log holds something like a raw key: %s", keys.Redact(m))
		}
		// newEnv's cleanup also scans for every raw key seen.
	})
}
