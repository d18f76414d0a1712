package mgmt_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

func TestAuth(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		own, ownHash, _ := e.generate(`{"user_id":"u1","key_alias":"own"}`)
		_, sibHash, _ := e.generate(`{"user_id":"u1"}`)
		_, otherHash, _ := e.generate(`{"user_id":"u2"}`)
		noUser, noUserHash, _ := e.generate(`{}`)
		_, noUser2Hash, _ := e.generate(`{}`)
		blocked, _, _ := e.generate(`{"blocked":true}`)
		expired := keys.Generate()
		e.sawRaw(expired)
		past := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
		e.create(&keys.Key{Token: keys.HashHex(expired), KeyName: ptr(keys.Name(expired)), Expires: &past})
		unknown := keys.Generate()

		hdr := func(kv ...string) http.Header {
			h := http.Header{}
			for i := 0; i < len(kv); i += 2 {
				h.Set(kv[i], kv[i+1])
			}
			return h
		}
		bearer := func(k string) http.Header { return hdr("Authorization", "Bearer "+k) }

		tests := []struct {
			name       string
			h          http.Header
			method     string
			path       string
			body       string
			wantStatus int
			wantType   string
			wantMsg    string // prefix
		}{
			{"no credential", nil, "GET", "/key/list", "", 401, "auth_error", "Authentication Error, No api key passed in."},
			{"empty bearer", hdr("Authorization", "Bearer "), "GET", "/key/list", "", 401, "auth_error", "Authentication Error, No api key passed in."},
			{"malformed authorization", hdr("Authorization", "Token "+master), "GET", "/key/list", "", 401, "auth_error", "Authentication Error, Malformed API Key"},
			{"no scheme", hdr("Authorization", master), "GET", "/key/list", "", 401, "auth_error", "Authentication Error, Malformed API Key"},
			{"master bearer", bearer(master), "GET", "/key/list", "", 200, "", ""},
			{"master basic", hdr("Authorization", "Basic "+master), "GET", "/key/list", "", 200, "", ""},
			{"master x-litellm-api-key", hdr("x-litellm-api-key", master), "GET", "/key/list", "", 200, "", ""},
			{"master API-Key", hdr("API-Key", master), "GET", "/key/list", "", 200, "", ""},
			{"master x-api-key", hdr("x-api-key", master), "GET", "/key/list", "", 200, "", ""},
			{"master x-goog-api-key", hdr("x-goog-api-key", master), "GET", "/key/list", "", 200, "", ""},
			{"master Ocp-Apim-Subscription-Key", hdr("Ocp-Apim-Subscription-Key", master), "GET", "/key/list", "", 200, "", ""},
			{"x-litellm-api-key wins over Authorization", hdr("x-litellm-api-key", master, "Authorization", "Bearer "+own), "GET", "/key/list", "", 200, "", ""},
			{"Authorization wins over x-api-key", hdr("Authorization", "Bearer "+own, "x-api-key", master), "GET", "/key/list", "", 401, "auth_error", "Authentication Error, only the proxy admin"},
			{"master prefix is not master", bearer(master[:len(master)-1]), "GET", "/key/list", "", 401, "token_not_found_in_db", "Authentication Error, Invalid proxy server token passed."},
			{"not sk-", bearer("hello-world-1234"), "GET", "/key/list", "", 401, "auth_error", "LiteLLM Virtual Key expected. Received=hell****1234, expected to start with 'sk-'."},
			{"hash is not a credential", bearer(ownHash), "GET", "/key/info", "", 401, "auth_error", "LiteLLM Virtual Key expected."},
			{"unknown key", bearer(unknown), "GET", "/key/info", "", 401, "token_not_found_in_db", "Authentication Error, Invalid proxy server token passed. Received API Key = " + keys.Name(unknown)},
			{"blocked key", bearer(blocked), "GET", "/key/info", "", 401, "auth_error", "Authentication Error, Key is blocked."},
			{"expired key", bearer(expired), "GET", "/key/info", "", 401, "expired_key", "Authentication Error - Expired Key."},
			{"virtual own info implicit", bearer(own), "GET", "/key/info", "", 200, "", ""},
			{"virtual own info by raw", bearer(own), "GET", "/key/info?key=" + own, "", 200, "", ""},
			{"virtual own info by hash", bearer(own), "GET", "/key/info?key=" + ownHash, "", 200, "", ""},
			{"virtual same user_id", bearer(own), "GET", "/key/info?key=" + sibHash, "", 200, "", ""},
			{"virtual other user_id", bearer(own), "GET", "/key/info?key=" + otherHash, "", 401, "auth_error", ""},
			{"virtual no user reads no-user key", bearer(noUser), "GET", "/key/info?key=" + noUser2Hash, "", 401, "auth_error", ""},
			{"virtual no user reads own", bearer(noUser), "GET", "/key/info?key=" + noUserHash, "", 200, "", ""},
			{"virtual unknown target", bearer(own), "GET", "/key/info?key=" + keys.HashHex(unknown), "", 401, "auth_error", ""},
			{"virtual health", bearer(own), "POST", "/key/health", "", 200, "", ""},
			{"master health", bearer(master), "POST", "/key/health", "", 200, "", ""},
			{"virtual generate", bearer(own), "POST", "/key/generate", "{}", 401, "auth_error", "Authentication Error, only the proxy admin"},
			{"virtual update", bearer(own), "POST", "/key/update", `{"key":"` + own + `","max_budget":1000}`, 401, "auth_error", ""},
			{"virtual delete", bearer(own), "POST", "/key/delete", `{"keys":["` + otherHash + `"]}`, 401, "auth_error", ""},
			{"virtual list", bearer(own), "GET", "/key/list", "", 401, "auth_error", ""},
			{"virtual v2 info", bearer(own), "POST", "/v2/key/info", `{"keys":["` + ownHash + `"]}`, 401, "auth_error", ""},
			{"virtual block", bearer(own), "POST", "/key/block", `{"key":"` + otherHash + `"}`, 401, "auth_error", ""},
			{"virtual unblock", bearer(own), "POST", "/key/unblock", `{"key":"` + ownHash + `"}`, 401, "auth_error", ""},
			{"virtual regenerate", bearer(own), "POST", "/key/regenerate", `{"key":"` + ownHash + `"}`, 401, "auth_error", ""},
			{"virtual regenerate path", bearer(own), "POST", "/key/" + own + "/regenerate", "", 401, "auth_error", ""},
			{"openapi needs no key", nil, "GET", "/openapi.json", "", 200, "", ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r := e.callH(tc.method, tc.path, tc.h, tc.body)
				if r.status != tc.wantStatus {
					t.Fatalf("status %d, want %d: %s", r.status, tc.wantStatus, r.body)
				}
				if tc.wantStatus == 200 {
					return
				}
				typ, msg, _, code := r.errBody(t)
				if typ != tc.wantType || !strings.HasPrefix(msg, tc.wantMsg) || code != "401" {
					t.Errorf("got type %q code %q message %q; want type %q message prefix %q", typ, code, msg, tc.wantType, tc.wantMsg)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("content-type %q", ct)
				}
				if strings.Contains(string(r.body), master) {
					t.Errorf("error body leaks the master key: %s", r.body)
				}
			})
		}
	})
}

func TestRouting(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw, _, _ := e.generate("")
		tests := []struct {
			name, method, path string
			want               int
			allow              string
		}{
			{"unknown route", "GET", "/key/nope", 404, ""},
			{"root", "GET", "/", 404, ""},
			{"generate with GET", "GET", "/key/generate", 405, "POST"},
			{"info with POST", "POST", "/key/info", 405, "GET"},
			{"list with DELETE", "DELETE", "/key/list", 405, "GET"},
			{"regenerate path with GET", "GET", "/key/" + raw + "/regenerate", 405, "POST"},
			{"openapi with POST", "POST", "/openapi.json", 405, "GET"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r := e.call(tc.method, tc.path, master, "")
				if r.status != tc.want {
					t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
				}
				typ, msg, _, code := r.errBody(t)
				if code != strconv.Itoa(tc.want) || typ == "" || msg == "" {
					t.Errorf("envelope: type %q code %q message %q", typ, code, msg)
				}
				if got := r.header.Get("Allow"); got != tc.allow {
					t.Errorf("Allow %q, want %q", got, tc.allow)
				}
				if strings.Contains(string(r.body), raw) {
					t.Errorf("error body echoes the raw key: %s", r.body)
				}
			})
		}
	})
}
