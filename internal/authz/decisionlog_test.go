package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/keys"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if s == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("not JSON: %s", s)
		}
		out = append(out, m)
	}
	return out
}

// The decision log writes one line per denial (and per sampled allow) with
// the request id, the key's hash prefix, identity, model, reason and
// status, and never the raw key.
func TestDecisionLog(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sample     float64
		wantAllows int
	}{
		{"denials only", 0, 0},
		{"every allow", 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf lockedBuf
			e := newEnv(t, authz.Config{DecisionLog: authz.DecisionLog{
				Logger: slog.New(slog.NewJSONHandler(&buf, nil)), AllowSample: tc.sample}})
			ctx := context.Background()
			check := func(key, model, reqID string) {
				h := bearer(key)
				h["x-request-id"] = reqID
				if _, err := e.client.Check(ctx, req(chat, h, body(model), true)); err != nil {
					t.Fatal(err)
				}
			}
			check(kAll, "gpt-4o", "r-allow-1")
			check(kAll, "gpt-4o", "r-allow-2")
			check(kLimited, "claude-9", "r-model")
			check(kBlocked, "gpt-4o", "r-blocked")
			check("sk-nobody-knows-this-one", "gpt-4o", "r-unknown")

			lines := buf.lines(t)
			byID := map[string]map[string]any{}
			allows := 0
			for _, l := range lines {
				if l["msg"] != "decision" {
					continue
				}
				byID[l["request_id"].(string)] = l
				if l["reason"] == "allowed" {
					allows++
				}
			}
			if allows != tc.wantAllows {
				t.Errorf("%d allow lines, want %d", allows, tc.wantAllows)
			}
			for id, w := range map[string]struct {
				reason, hash string
				status       float64
			}{
				"r-model":   {"model_not_allowed", keys.HashHex(kLimited)[:12], 401},
				"r-blocked": {"blocked", keys.HashHex(kBlocked)[:12], 401},
				"r-unknown": {"unknown_key", keys.HashHex("sk-nobody-knows-this-one")[:12], 401},
			} {
				l := byID[id]
				if l == nil {
					t.Errorf("no line for %s: %v", id, lines)
					continue
				}
				if l["reason"] != w.reason || l["key_hash"] != w.hash || l["status"] != w.status || l["duration"] == nil {
					t.Errorf("%s: %v, want reason %s key_hash %s status %v", id, l, w.reason, w.hash, w.status)
				}
			}
			if l := byID["r-allow-1"]; tc.sample == 1 && (l["key_alias"] != "team-a-key" || l["team_id"] != "team-1" || l["model"] != "gpt-4o") {
				t.Errorf("allow line %v lacks identity", l)
			}
			buf.mu.Lock()
			all := buf.b.String()
			buf.mu.Unlock()
			for _, raw := range []string{kAll, kLimited, kBlocked, "sk-nobody-knows-this-one"} {
				if strings.Contains(all, raw) {
					t.Errorf("raw key %s in the decision log", keys.Redact(raw))
				}
			}
		})
	}
}
