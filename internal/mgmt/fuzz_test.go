package mgmt_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/mgmt"
)

var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/key/generate"},
	{"POST", "/key/update"},
	{"POST", "/key/delete"},
	{"POST", "/v2/key/info"},
	{"POST", "/key/block"},
	{"POST", "/key/unblock"},
	{"POST", "/key/regenerate"},
	{"POST", "/key/sk-fuzz0000000000000000000/regenerate"},
	{"GET", "/key/list?"},
	{"GET", "/key/info?key="},
}

// FuzzRequests sends random bodies (and, for GET routes, random query
// strings) to every endpoint: the API must never panic or answer 500, and
// every error must be the LiteLLM envelope.
func FuzzRequests(f *testing.F) {
	seeds := []string{
		`{}`, ``, `null`, `[]`, `{"key":"sk-fuzz0000000000000000000"}`, `{"keys":["sk-x"]}`, `{"key_aliases":["a"]}`,
		`{"key_alias":"a","models":["m"],"max_budget":-1}`, `{"duration":"30d","budget_duration":"1mo"}`,
		`{"duration":"-1"}`, `{"duration":"1x"}`, `{"metadata":{"a":[1,{"b":null}]},"tags":["t"]}`,
		`{"tpm_limit":1e400}`, `{"max_budget":1e308}`, `{"spend":null}`, `{"key":"sk-a","new_key":"sk-b","grace_period":"1h"}`,
		`{"temp_budget_expiry":"2030-01-01T00:00:00Z"}`, `{"models":`, `{} x`, "\xff\xfe",
		`page=0&size=101`, `sort_by=spend&sort_order=asc`, `user_id=%27%20OR%201=1`, `page=99999999999999999999`,
		`{"team_id":"t","models":["x"],"tpm_limit":5,"tpm_limit_type":"guaranteed_throughput","model_rpm_limit":{"m":"x"}}`,
		`{"rpm_limit_type":null,"team_id":null}`, `include_team_keys=true&user_id=u`,
	}
	for i, s := range seeds {
		for r := range fuzzRoutes {
			if (i+r)%3 == 0 {
				f.Add(uint8(r), s)
			}
		}
	}
	st := backends()[0].open(f)
	api, err := mgmt.New(mgmt.Config{Store: st, MasterKey: master})
	if err != nil {
		f.Fatal(err)
	}
	h := api.Handler()
	f.Fuzz(func(t *testing.T, route uint8, body string) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		var req *http.Request
		if rt.method == "GET" {
			req = httptest.NewRequest(rt.method, "/", nil)
			req.URL.Path, _, _ = strings.Cut(rt.path, "?")
			req.URL.RawQuery = body
			if strings.HasSuffix(rt.path, "key=") {
				req.URL.RawQuery = "key=" + body
			}
		} else {
			req = httptest.NewRequest(rt.method, rt.path, strings.NewReader(body))
		}
		req.Header.Set("Authorization", "Bearer "+master)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, rt.path, body, w.Code, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s %q: response is not JSON: %s", rt.method, rt.path, body, w.Body)
		}
		if w.Code >= 400 {
			var env struct {
				Error struct {
					Type, Message, Code string
				} `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil || env.Error.Type == "" || env.Error.Message == "" || env.Error.Code != strconv.Itoa(w.Code) {
				t.Fatalf("%s %s %q: %d not an envelope: %s", rt.method, rt.path, body, w.Code, w.Body)
			}
		}
	})
}
