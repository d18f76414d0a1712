package postgres

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u:pw@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://u:pw@h:notaport/db", "postgres://u:xxxxx@h:notaport/db"},
		{"host=h port=1 password=pw dbname=x", "host=h port=1 password=xxxxx dbname=x"},
		{"host=h password = 'p w\\'x' dbname=x", "host=h password = xxxxx dbname=x"},
		{"host=h PASSWORD=pw", "host=h PASSWORD=xxxxx"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := redactURL(tc.in); got != tc.want {
				t.Errorf("redactURL = %q, want %q", got, tc.want)
			}
		})
	}
}

func testFeed() *feed {
	return newFeed(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

func TestDecodePayload(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    []store.Event
	}{
		{"insert", `{"op":"INSERT","token":"a"}`, []store.Event{{Kind: store.EventChanged, Token: "a"}}},
		{"delete", `{"op":"DELETE","token":"a"}`, []store.Event{{Kind: store.EventChanged, Token: "a"}}},
		{"spend only", `{"op":"UPDATE","token":"a","spend_only":true,"spend":1.25}`, []store.Event{{Kind: store.EventSpend, Token: "a", Spend: 1.25}}},
		{"spend only, zero", `{"op":"UPDATE","token":"a","spend_only":true,"spend":0}`, []store.Event{{Kind: store.EventSpend, Token: "a"}}},
		{"spend only without spend", `{"op":"UPDATE","token":"a","spend_only":true}`, []store.Event{{Kind: store.EventChanged, Token: "a"}}},
		{"spend NaN (a JSON string)", `{"op":"UPDATE","token":"a","spend_only":true,"spend":"NaN"}`, []store.Event{{Kind: store.EventReset}}},
		{"moved", `{"op":"UPDATE","token":"b","old_token":"a"}`, []store.Event{{Kind: store.EventChanged, Token: "b"}, {Kind: store.EventChanged, Token: "a"}}},
		{"moved to itself", `{"op":"UPDATE","token":"a","old_token":"a"}`, []store.Event{{Kind: store.EventChanged, Token: "a"}}},
		{"no token", `{"op":"INSERT"}`, []store.Event{{Kind: store.EventReset}}},
		{"not json", `not json`, []store.Event{{Kind: store.EventReset}}},
		{"empty", ``, []store.Event{{Kind: store.EventReset}}},
	}
	f := testFeed()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := f.decode(tc.payload); !slices.Equal(got, tc.want) {
				t.Errorf("decode(%q) = %+v, want %+v", tc.payload, got, tc.want)
			}
		})
	}
}

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{`{"op":"INSERT","token":"a"}`, `{"token":"b","old_token":"a"}`,
		`{"token":"a","spend_only":true,"spend":1e308}`, `not json`, `{"token":null}`} {
		f.Add(s)
	}
	fd := testFeed()
	f.Fuzz(func(t *testing.T, payload string) {
		evs := fd.decode(payload)
		if len(evs) == 0 || len(evs) > 2 {
			t.Fatalf("decode(%q) = %d events", payload, len(evs))
		}
		for _, e := range evs {
			if e.Kind != store.EventReset && e.Token == "" {
				t.Fatalf("decode(%q) = event without token %+v", payload, e)
			}
		}
	})
}

func TestMetricsSharedAcrossReopen(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := testFeed(), testFeed()
	a.reg, b.reg = reg, reg
	if err := a.registerMetrics(); err != nil {
		t.Fatal(err)
	}
	if err := b.registerMetrics(); err != nil {
		t.Fatalf("second store on the same registry: %v", err)
	}
	b.reconnects.Inc()
	if got := testutil.ToFloat64(a.reconnects); got != 1 {
		t.Errorf("shared counter = %v, want 1", got)
	}
}

func TestPoolLimits(t *testing.T) {
	url := pgtest.URL(t)
	tests := []struct {
		max, want int32
	}{{0, defaultMaxConns}, {3, 3}}
	for _, tc := range tests {
		s, err := Open(t.Context(), Config{URL: url, MaxConns: tc.max})
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.pool.Config()
		if cfg.MaxConns != tc.want || cfg.MaxConnLifetime != maxConnLifetime || cfg.ConnConfig.ConnectTimeout != connectTimeout {
			t.Errorf("MaxConns %d: pool config MaxConns=%d lifetime=%v timeout=%v", tc.max, cfg.MaxConns, cfg.MaxConnLifetime, cfg.ConnConfig.ConnectTimeout)
		}
		if !strings.Contains(cfg.ConnConfig.RuntimeParams["application_name"], "sidecar") {
			t.Errorf("application_name = %q", cfg.ConnConfig.RuntimeParams["application_name"])
		}
		_ = s.Close()
	}
}
