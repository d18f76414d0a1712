package mgmt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/mgmt"
)

const master = "sk-master-test-0123456789"

// opener returns a fresh, empty store for one test; it closes it itself.
type opener func(t testing.TB) mgmt.Store

type backend struct {
	name string
	open opener
}

// each runs fn once per store backend, as subtests.
func each(t *testing.T, fn func(t *testing.T, open opener)) {
	t.Helper()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { fn(t, b.open) })
	}
}

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one API over one store behind a real HTTP server, seen from one
// (sub)test: use e.T(t) inside t.Run so failures land on the right test.
type env struct {
	*state
	t *testing.T
}

// T returns the env for subtest t.
func (e *env) T(t *testing.T) *env { return &env{state: e.state, t: t} }

type state struct {
	st     mgmt.Store
	srv    *httptest.Server
	logs   *syncBuffer
	offset atomic.Int64 // added to time.Now by the API's clock

	mu          sync.Mutex
	invalidated []string
	raws        []string // every raw key the test has seen, to scan logs and audits for
}

// newEnv serves an API over st; opts may adjust its Config.
func newEnv(t *testing.T, st mgmt.Store, opts ...func(*mgmt.Config)) *env {
	t.Helper()
	e := &env{t: t, state: &state{st: st, logs: &syncBuffer{}}}
	cfg := mgmt.Config{
		Store:      st,
		MasterKey:  master,
		Logger:     slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: prometheus.NewRegistry(),
		Invalidate: func(hashes ...string) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.invalidated = append(e.invalidated, hashes...)
		},
		MaxBodyBytes: 64 << 10,
		Now:          func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) },
	}
	for _, o := range opts {
		o(&cfg)
	}
	api, err := mgmt.New(cfg)
	if err != nil {
		t.Fatalf("mgmt.New: %v", err)
	}
	e.srv = httptest.NewServer(api.Handler())
	t.Cleanup(e.srv.Close)
	e.raws = append(e.raws, master)
	t.Cleanup(func() { e.checkNoRawKeys() })
	return e
}

// checkNoRawKeys fails the test when any raw key it saw shows up in the logs
// or (when the store can read them back) in audit rows.
func (e *env) checkNoRawKeys() {
	e.t.Helper()
	logs := e.logs.String()
	e.mu.Lock()
	raws := slices.Clone(e.raws)
	e.mu.Unlock()
	for _, raw := range raws {
		if strings.Contains(logs, raw) {
			e.t.Errorf("raw key %s found in logs", keys.Redact(raw))
		}
	}
}

func (e *env) sawRaw(raw string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.raws = append(e.raws, raw)
}

func (e *env) wasInvalidated(hash string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.invalidated, hash)
}

// resp is one HTTP answer.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// errBody decodes the error envelope.
func (r resp) errBody(t *testing.T) (typ, msg string, param any, code string) {
	t.Helper()
	var env struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Param   any    `json:"param"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("not an error envelope: %v: %s", err, r.body)
	}
	return env.Error.Type, env.Error.Message, env.Error.Param, env.Error.Code
}

// call sends one request. auth is the Authorization bearer ("" = none).
func (e *env) call(method, path, auth, body string) resp {
	e.t.Helper()
	h := http.Header{}
	if auth != "" {
		h.Set("Authorization", "Bearer "+auth)
	}
	return e.callH(method, path, h, body)
}

func (e *env) callH(method, path string, h http.Header, body string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// admin sends a request as the master key and requires want.
func (e *env) admin(method, path, body string, want int) map[string]any {
	e.t.Helper()
	r := e.call(method, path, master, body)
	if r.status != want {
		e.t.Fatalf("%s %s %s: status %d, want %d: %s", method, path, body, r.status, want, r.body)
	}
	return r.obj(e.t)
}

// generate creates a key as admin and returns its raw key and hash.
func (e *env) generate(body string) (raw, hash string, out map[string]any) {
	e.t.Helper()
	if body == "" {
		body = "{}"
	}
	out = e.admin("POST", "/key/generate", body, 200)
	raw, _ = out["key"].(string)
	hash, _ = out["token"].(string)
	if raw == "" || hash == "" {
		e.t.Fatalf("generate: no key/token in %v", out)
	}
	e.sawRaw(raw)
	return raw, hash, out
}

// create inserts a key straight into the store (for states the API cannot
// produce directly: expired, past budget reset).
func (e *env) create(k *keys.Key) {
	e.t.Helper()
	if err := e.st.Create(context.Background(), k); err != nil {
		e.t.Fatalf("store.Create: %v", err)
	}
}

func jsonStr(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func ptr[T any](v T) *T { return &v }
