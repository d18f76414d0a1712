package postgres

import (
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

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
	return newFeed(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, 0, 0, nil)
}

func TestDecodePayload(t *testing.T) {
	tok := strings.Repeat("a", 64)
	at := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		payload string
		want    []store.Event
		hb      string
	}{
		{"changed", `{"k":"b","t":["a","b"],"s":[],"r":[]}`, []store.Event{{Kind: store.EventChanged, Token: "a"}, {Kind: store.EventChanged, Token: "b"}}, ""},
		{"spend", `{"k":"b","t":[],"s":[["a",1.25],["b",0]],"r":[]}`,
			[]store.Event{{Kind: store.EventSpend, Token: "a", Spend: 1.25}, {Kind: store.EventSpend, Token: "b"}}, ""},
		{"spend NaN (a JSON string): reload", `{"k":"b","s":[["a","NaN"]]}`, []store.Event{{Kind: store.EventChanged, Token: "a"}}, ""},
		{"spend null: reload", `{"k":"b","s":[["a",null]]}`, []store.Event{{Kind: store.EventChanged, Token: "a"}}, ""},
		{"spend without token", `{"k":"b","s":[[null,1]]}`, []store.Event{{Kind: store.EventReset}}, ""},
		{"budget reset", `{"k":"b","r":[["` + tok + `",0,"2026-11-30T00:00:00"]]}`,
			[]store.Event{{Kind: store.EventBudgetReset, Token: tok, BudgetResetAt: at}}, ""},
		{"budget reset, milliseconds", `{"k":"b","r":[["a",0,"2026-11-30T00:00:00.125"]]}`,
			[]store.Event{{Kind: store.EventBudgetReset, Token: "a", BudgetResetAt: at.Add(125 * time.Millisecond)}}, ""},
		{"budget reset, bad time: reload", `{"k":"b","r":[["a",0,"soon"]]}`, []store.Event{{Kind: store.EventChanged, Token: "a"}}, ""},
		{"budget reset, short", `{"k":"b","r":[["a"]]}`, []store.Event{{Kind: store.EventChanged, Token: "a"}}, ""},
		{"mixed", `{"k":"b","t":["a"],"s":[["b",2]],"r":[["c",0,"2026-11-30T00:00:00"]]}`, []store.Event{
			{Kind: store.EventChanged, Token: "a"}, {Kind: store.EventSpend, Token: "b", Spend: 2},
			{Kind: store.EventBudgetReset, Token: "c", BudgetResetAt: at}}, ""},
		{"purge", `{"k":"purge","why":"rows","n":100000}`, []store.Event{{Kind: store.EventReset}}, ""},
		{"heartbeat", `{"k":"hb","id":"abc"}`, nil, "abc"},
		{"heartbeat without id", `{"k":"hb"}`, []store.Event{{Kind: store.EventReset}}, ""},
		{"earlier version's row payload", `{"op":"INSERT","token":"a"}`, []store.Event{{Kind: store.EventReset}}, ""},
		{"not json", `not json`, []store.Event{{Kind: store.EventReset}}, ""},
		{"empty", ``, []store.Event{{Kind: store.EventReset}}, ""},
	}
	f := testFeed()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, hb := f.decode(tc.payload)
			if !slices.Equal(got, tc.want) || hb != tc.hb {
				t.Errorf("decode(%q) = %+v, %q; want %+v, %q", tc.payload, got, hb, tc.want, tc.hb)
			}
		})
	}
}

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{`{"k":"b","t":["a"]}`, `{"k":"b","s":[["a",1e308]]}`, `{"k":"b","r":[["a",0,"2026-11-30T00:00:00"]]}`,
		`{"k":"purge"}`, `{"k":"hb","id":"x"}`, `not json`, `{"k":null}`} {
		f.Add(s)
	}
	fd := testFeed()
	f.Fuzz(func(t *testing.T, payload string) {
		evs, hb := fd.decode(payload)
		if hb != "" {
			if len(evs) != 0 {
				t.Fatalf("decode(%q) = heartbeat and events", payload)
			}
			return
		}
		for _, e := range evs {
			if e.Kind != store.EventReset && e.Token == "" {
				t.Fatalf("decode(%q) = event without token %+v", payload, e)
			}
			if e.Kind == store.EventSpend && (math.IsNaN(e.Spend) || math.IsInf(e.Spend, 0)) {
				t.Fatalf("decode(%q) = non-finite spend %+v", payload, e)
			}
		}
	})
}

// TestDeafness drives the deafness logic with a fake clock: deaf after
// DeafAfter without this store's heartbeat (EventDown, metric, status
// detail naming --feed-database-url), hearing again purges (EventReset).
func TestDeafness(t *testing.T) {
	f := newFeed(nil, slog.New(slog.DiscardHandler), nil, time.Second, 3*time.Second, nil)
	clock := time.Unix(1000, 0)
	f.now = func() time.Time { return clock }
	var evs []store.Event
	f.subscribe(func(e store.Event) { evs = append(evs, e) })
	f.setConnected(true)
	step := func(d time.Duration) { clock = clock.Add(d); f.checkDeaf() }

	step(3 * time.Second)
	if st := f.status(); st.Deaf || len(evs) != 0 {
		t.Fatalf("deaf at the bound: %+v %+v", st, evs)
	}
	f.handle(`{"k":"hb","id":"someone-else"}`) // another replica's heartbeat does not count
	step(time.Millisecond)
	st := f.status()
	if !st.Deaf || !strings.Contains(st.Detail, "--feed-database-url") || testutil.ToFloat64(f.deafG) != 1 {
		t.Fatalf("not deaf past the bound: %+v", st)
	}
	if len(evs) != 1 || evs[0].Kind != store.EventDown {
		t.Fatalf("events = %+v, want [EventDown]", evs)
	}
	step(time.Minute) // stays deaf; no repeated EventDown
	if len(evs) != 1 {
		t.Fatalf("events = %+v", evs)
	}
	f.handle(`{"k":"hb","id":"` + f.id + `"}`)
	if st := f.status(); st.Deaf || st.Detail != "" || !st.LastHeartbeat.Equal(clock) || testutil.ToFloat64(f.deafG) != 0 {
		t.Fatalf("still deaf after hearing: %+v", st)
	}
	if len(evs) != 2 || evs[1].Kind != store.EventReset {
		t.Fatalf("events = %+v, want EventReset after hearing again", evs)
	}
	step(2 * time.Second)
	f.handle(`{"k":"hb","id":"` + f.id + `"}`)
	step(2 * time.Second) // 2s since the last heartbeat: fine
	if f.status().Deaf {
		t.Fatal("deaf within the bound of the last heartbeat")
	}
	f.setConnected(false)
	step(time.Hour)
	if st := f.status(); st.Deaf || !strings.Contains(st.Detail, "disconnected") {
		t.Fatalf("disconnected feed: %+v", st)
	}
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
