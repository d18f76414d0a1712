package pricing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/virtualkeys/sidecar/internal/usage"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tableV1 = `{"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}`
	tableV2 = `{"m": {"input_cost_per_token": 5e-6, "output_cost_per_token": 2e-6}, "n": {"input_cost_per_token": 1e-6}}`
)

func inputPrice(t *testing.T, s *Source) float64 {
	t.Helper()
	c, ok := s.Table().Cost("m", usage.Usage{PromptTokens: 1})
	if !ok {
		t.Fatal("model m unknown")
	}
	return c
}

func reloads(s *Source, result string) float64 {
	return testutil.ToFloat64(s.reloads.WithLabelValues(result))
}

func TestSourceBundled(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	s, err := NewSource(t.Context(), Config{
		Custom:      map[string]map[string]float64{"m": {"input_cost_per_token": 1e-6}},
		Deployments: map[string]string{"dep": "gpt-4o"},
		Aliases:     map[string]string{"alias-of-m": "m"},
	}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Table().Lookup("dep", ""); !ok {
		t.Error("deployment mapping not applied")
	}
	if got, _ := s.Table().Lookup("alias-of-m", "gpt-4o"); got != "m" {
		t.Errorf("alias not applied: Lookup(alias-of-m) = %q", got)
	}
	if got := inputPrice(t, s); got != 1e-6 {
		t.Errorf("custom price = %g", got)
	}
	if n := testutil.ToFloat64(s.models); n != float64(Default().Len()+1) {
		t.Errorf("models gauge = %g", n)
	}
}

func TestSourceFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "prices.json")
	write := func(body string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write(tableV1, base)
	s, err := NewSource(t.Context(), Config{Location: path,
		Custom:  map[string]map[string]float64{"n": {"output_cost_per_token": 7e-6}},
		Aliases: map[string]string{"alias-of-n": "n"}}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if got := inputPrice(t, s); got != 1e-6 {
		t.Fatalf("v1 price = %g", got)
	}

	if changed, err := s.Reload(t.Context()); err != nil || changed {
		t.Fatalf("unchanged file: changed=%v err=%v", changed, err)
	}
	write(tableV2, base.Add(time.Second))
	if changed, err := s.Reload(t.Context()); err != nil || !changed {
		t.Fatalf("changed file: changed=%v err=%v", changed, err)
	}
	if got := inputPrice(t, s); got != 5e-6 {
		t.Errorf("v2 price = %g", got)
	}
	// Custom prices stay on top of a reloaded table (merged with its entry).
	if c, _ := s.Table().Cost("n", usage.Usage{PromptTokens: 1, OutputTokens: 1}); !near(c, 1e-6+7e-6) {
		t.Errorf("custom price after reload: %g", c)
	}
	// So do the aliases.
	if c, _ := s.Table().Cost("alias-of-n", usage.Usage{PromptTokens: 1, OutputTokens: 1}); !near(c, 1e-6+7e-6) {
		t.Errorf("alias price after reload: %g", c)
	}

	write(`{"m": {"input_cost_per_`, base.Add(2*time.Second)) // a half-written file
	if _, err := s.Reload(t.Context()); err == nil {
		t.Error("bad file: no error")
	}
	if got := inputPrice(t, s); got != 5e-6 {
		t.Errorf("bad file replaced the last good table: %g", got)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reload(t.Context()); err == nil {
		t.Error("missing file: no error")
	}
	if got := inputPrice(t, s); got != 5e-6 {
		t.Errorf("missing file replaced the last good table: %g", got)
	}
	if reloads(s, "loaded") != 2 || reloads(s, "unchanged") != 1 || reloads(s, "error") != 2 {
		t.Errorf("reload metrics: loaded %g unchanged %g error %g", reloads(s, "loaded"), reloads(s, "unchanged"), reloads(s, "error"))
	}
}

func TestSourceURL(t *testing.T) {
	t.Parallel()
	var body atomic.Value
	body.Store(tableV1)
	var status atomic.Int32
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := body.Load().(string)
		etag := `"` + strconv.Itoa(len(b)) + `"` // the test tables differ in length
		if code := int(status.Load()); code != 200 {
			w.WriteHeader(code)
			return
		}
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		_, _ = w.Write([]byte(b))
	}))
	defer srv.Close()
	s, err := NewSource(t.Context(), Config{Location: srv.URL + "/prices.json", Client: srv.Client()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Reload(t.Context()); err != nil || changed {
		t.Fatalf("304: changed=%v err=%v", changed, err)
	}
	body.Store(tableV2)
	if changed, err := s.Reload(t.Context()); err != nil || !changed {
		t.Fatalf("new table: changed=%v err=%v", changed, err)
	}
	if got := inputPrice(t, s); got != 5e-6 {
		t.Errorf("v2 price = %g", got)
	}
	status.Store(503)
	if _, err := s.Reload(t.Context()); err == nil {
		t.Error("503: no error")
	}
	status.Store(200)
	body.Store(`<html>oops</html>`)
	if _, err := s.Reload(t.Context()); err == nil {
		t.Error("HTML body: no error")
	}
	if got := inputPrice(t, s); got != 5e-6 {
		t.Errorf("errors replaced the last good table: %g", got)
	}
}

func TestNewSourceErrors(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"missing file":       {Location: filepath.Join(t.TempDir(), "nope.json")},
		"ftp url":            {Location: "ftp://example.com/prices.json"},
		"negative":           {Interval: -time.Second},
		"bad custom":         {Custom: map[string]map[string]float64{"m": {"typo": 1}}},
		"empty deployment":   {Deployments: map[string]string{"d": ""}},
		"empty alias":        {Aliases: map[string]string{"": "m"}},
		"empty alias target": {Aliases: map[string]string{"a": ""}},
	} {
		if _, err := NewSource(t.Context(), cfg, nil, nil); err == nil {
			t.Errorf("%s: NewSource succeeded", name)
		}
	}
}

func TestSourceRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "prices.json")
		if err := os.WriteFile(path, []byte(tableV1), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := NewSource(t.Context(), Config{Location: path, Interval: 10 * time.Second}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()

		if err := os.WriteFile(path, []byte(tableV2), 0o600); err != nil {
			t.Fatal(err)
		}
		future := time.Now().Add(time.Hour) // fake clock: make sure the mtime differs
		if err := os.Chtimes(path, future, future); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := inputPrice(t, s); got != 1e-6 {
			t.Errorf("reloaded before the interval: %g", got)
		}
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if got := inputPrice(t, s); got != 5e-6 {
			t.Errorf("not reloaded after the interval: %g", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}
