package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
)

const master = "sk-e2e-master-key"

// admin calls the management API with the master key and decodes the JSON answer.
func admin(t *testing.T, base, path string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+master)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %d %q is not JSON", path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

type checker struct {
	c authv3.AuthorizationClient
}

func newChecker(t *testing.T, target string) checker {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return checker{authv3.NewAuthorizationClient(conn)}
}

// verdict is the part of a CheckResponse the tests compare.
type verdict struct {
	allowed bool
	status  int    // denied_response HTTP status
	errType string // error.type of the denial body
	body    string
	resp    *authv3.CheckResponse
}

func (c checker) check(t *testing.T, key, model string) verdict {
	t.Helper()
	headers := map[string]string{":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}
	if key != "" {
		headers["authorization"] = "Bearer " + key
	}
	body := `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/v1/chat/completions", Headers: headers, RawBody: []byte(body)},
	}}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	v := verdict{allowed: resp.GetStatus().GetCode() == int32(codes.OK), resp: resp}
	if d := resp.GetDeniedResponse(); d != nil {
		v.status = int(d.GetStatus().GetCode())
		v.body = d.GetBody()
		var env struct {
			Error struct{ Type string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(v.body), &env); err != nil {
			t.Fatalf("denial body %q is not the envelope: %v", v.body, err)
		}
		v.errType = env.Error.Type
	}
	return v
}

// eventually polls check until want holds or 100 ms pass (the
// cross-replica bound the product promises), then fails.
func eventually(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func headerValue(hs []*corev3.HeaderValueOption, name string) string {
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), name) {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

func TestEndToEndKeyLifecycle(t *testing.T) {
	for _, st := range []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"embedded", func(*testing.T) []string { return nil }},
		{"postgres", func(t *testing.T) []string { return []string{"--database-url", pgtest.URL(t)} }},
	} {
		t.Run(st.name, func(t *testing.T) {
			r := start(t, append(st.args(t), "--master-key", master)...)
			c := newChecker(t, r.grpc)

			code, gen := admin(t, r.http, "/key/generate", map[string]any{"key_alias": "e2e", "models": []string{"gpt-4o", "openai/*"}, "max_budget": 10, "user_id": "u1"})
			if code != 200 {
				t.Fatalf("generate: %d %v", code, gen)
			}
			key, _ := gen["key"].(string)
			if gen["token"] != keys.HashHex(key) {
				t.Fatalf("token %v is not the hash of the key", gen["token"])
			}

			v := c.check(t, key, "gpt-4o")
			if !v.allowed {
				t.Fatalf("fresh key denied: %d %s", v.status, v.body)
			}
			ok := v.resp.GetOkResponse()
			if !contains(ok.GetHeadersToRemove(), "authorization") {
				t.Errorf("allow does not strip the key: headers_to_remove=%v", ok.GetHeadersToRemove())
			}
			if got := headerValue(ok.GetHeaders(), "x-litellm-key-hash"); got != keys.HashHex(key) {
				t.Errorf("x-litellm-key-hash = %q", got)
			}
			if got := headerValue(ok.GetHeaders(), "x-litellm-user-id"); got != "u1" {
				t.Errorf("x-litellm-user-id = %q", got)
			}
			if v := c.check(t, key, "openai/gpt-4.1"); !v.allowed {
				t.Errorf("glob model denied: %s", v.body)
			}

			steps := []struct {
				name    string
				path    string
				body    map[string]any
				key     string // "" = the current key
				model   string
				allowed bool
				status  int
				errType string
			}{
				{"model not allowed", "", nil, "", "claude-3", false, 401, "key_model_access_denied"},
				{"blocked", "/key/block", map[string]any{"key": key}, "", "gpt-4o", false, 401, "auth_error"},
				{"unblocked", "/key/unblock", map[string]any{"key": key}, "", "gpt-4o", true, 0, ""},
				{"budget zero", "/key/update", map[string]any{"key": key, "max_budget": 0}, "", "gpt-4o", false, 400, "budget_exceeded"},
				{"budget back", "/key/update", map[string]any{"key": key, "max_budget": nil}, "", "gpt-4o", true, 0, ""},
				{"models changed", "/key/update", map[string]any{"key": key, "models": []string{"claude-3"}}, "", "gpt-4o", false, 401, "key_model_access_denied"},
				{"expired", "/key/update", map[string]any{"key": key, "models": []string{}, "duration": "1s"}, "", "gpt-4o", true, 0, ""},
				{"no key", "", nil, "-", "gpt-4o", false, 401, "auth_error"},
				{"unknown key", "", nil, "sk-unknown-key-000000000", "gpt-4o", false, 401, "token_not_found_in_db"},
				{"not a virtual key", "", nil, "not-a-virtual-key", "gpt-4o", false, 401, "auth_error"},
				{"master key", "", nil, master, "anything", true, 0, ""},
			}
			for _, s := range steps {
				if s.path != "" {
					if code, out := admin(t, r.http, s.path, s.body); code != 200 {
						t.Fatalf("%s: %s = %d %v", s.name, s.path, code, out)
					}
				}
				k := key
				switch s.key {
				case "":
				case "-":
					k = ""
				default:
					k = s.key
				}
				v := c.check(t, k, s.model)
				if v.allowed != s.allowed || v.status != s.status || v.errType != s.errType {
					t.Errorf("%s: got allowed=%v %d %q (%s), want allowed=%v %d %q", s.name, v.allowed, v.status, v.errType, v.body, s.allowed, s.status, s.errType)
				}
			}

			// The 1s duration set above runs out: the key expires.
			eventually(t, "expiry enforced", 3*time.Second, func() bool { return c.check(t, key, "gpt-4o").errType == "expired_key" })
			if code, out := admin(t, r.http, "/key/update", map[string]any{"key": key, "duration": nil}); code != 200 {
				t.Fatalf("un-expire: %d %v", code, out)
			}

			code, regen := admin(t, r.http, "/key/regenerate", map[string]any{"key": key})
			if code != 200 {
				t.Fatalf("regenerate: %d %v", code, regen)
			}
			newKey, _ := regen["key"].(string)
			if v := c.check(t, key, "gpt-4o"); v.allowed || v.errType != "token_not_found_in_db" {
				t.Errorf("old key after regenerate: allowed=%v %q", v.allowed, v.errType)
			}
			if v := c.check(t, newKey, "gpt-4o"); !v.allowed {
				t.Errorf("new key denied: %s", v.body)
			}

			if code, out := admin(t, r.http, "/key/delete", map[string]any{"keys": []string{newKey}}); code != 200 {
				t.Fatalf("delete: %d %v", code, out)
			}
			if v := c.check(t, newKey, "gpt-4o"); v.allowed || v.errType != "token_not_found_in_db" {
				t.Errorf("deleted key: allowed=%v %q", v.allowed, v.errType)
			}
		})
	}
}

// Two sidecars on one Postgres: writes through A, or plain SQL, are
// enforced by B within 100 ms.
func TestTwoReplicasOnePostgres(t *testing.T) {
	db := pgtest.URL(t)
	a := start(t, "--master-key", master, "--database-url", db)
	b := start(t, "--master-key", master, "--database-url", db)
	cb := newChecker(t, b.grpc)

	_, gen := admin(t, a.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}, "key_alias": "shared"})
	key := gen["key"].(string)
	// B's management API serves it at once (no cache between it and the database).
	req, _ := http.NewRequest(http.MethodGet, b.http+"/key/info?key="+key, nil)
	req.Header.Set("Authorization", "Bearer "+master)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Info struct {
			KeyAlias string `json:"key_alias"`
		} `json:"info"`
	}
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if resp.StatusCode != 200 || info.Info.KeyAlias != "shared" {
		t.Fatalf("B's /key/info for A's new key: %d %+v", resp.StatusCode, info)
	}
	// A key generated on A is served by B at once (a miss goes to the store).
	if v := cb.check(t, key, "gpt-4o"); !v.allowed {
		t.Fatalf("B denies A's new key: %s", v.body)
	}

	within := 100 * time.Millisecond
	if code, out := admin(t, a.http, "/key/block", map[string]any{"key": key}); code != 200 {
		t.Fatalf("block: %d %v", code, out)
	}
	eventually(t, "block through A enforced by B", within, func() bool { return cb.check(t, key, "gpt-4o").errType == "auth_error" })
	admin(t, a.http, "/key/unblock", map[string]any{"key": key})
	eventually(t, "unblock through A seen by B", within, func() bool { return cb.check(t, key, "gpt-4o").allowed })

	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `UPDATE "LiteLLM_VerificationToken" SET spend = 5, max_budget = 5 WHERE token = $1`, keys.HashHex(key)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "plain-SQL budget change enforced by B", within, func() bool { return cb.check(t, key, "gpt-4o").errType == "budget_exceeded" })
	if _, err := conn.Exec(t.Context(), `UPDATE "LiteLLM_VerificationToken" SET spend = 1 WHERE token = $1`, keys.HashHex(key)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "plain-SQL spend-only change seen by B", within, func() bool { return cb.check(t, key, "gpt-4o").allowed })

	if code, out := admin(t, a.http, "/key/delete", map[string]any{"keys": []string{key}}); code != 200 {
		t.Fatalf("delete: %d %v", code, out)
	}
	eventually(t, "delete through A enforced by B", within, func() bool { return cb.check(t, key, "gpt-4o").errType == "token_not_found_in_db" })
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
