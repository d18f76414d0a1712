package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtualkeys/sidecar/internal/keys"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is an injected clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2025, 5, 14, 10, 30, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func i64(n int64) *int64             { return &n }
func newLocal(t *testing.T, c *clock) *Limiter {
	t.Helper()
	l, err := New(Config{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func TestKeyLimits(t *testing.T) {
	k := &keys.Key{Token: "h", RPMLimit: i64(5), Metadata: map[string]any{
		"model_rpm_limit": map[string]any{"gpt-4o": float64(2), "bad": "x"},
		"model_tpm_limit": map[string]any{"gpt-4o": float64(100), "o1": float64(10)},
	}}
	got := map[string]Limit{}
	for _, l := range KeyLimits(k) {
		got[l.Value] = l
	}
	want := map[string]Limit{
		"h":        {Descriptor: DescAPIKey, Value: "h", RPM: 5, TPM: NoLimit, Parallel: NoLimit},
		"h:gpt-4o": {Descriptor: DescModelPerKey, Value: "h:gpt-4o", Model: "gpt-4o", RPM: 2, TPM: 100, Parallel: NoLimit},
		"h:o1":     {Descriptor: DescModelPerKey, Value: "h:o1", Model: "o1", RPM: NoLimit, TPM: 10, Parallel: NoLimit},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("KeyLimits = %v, want %v", got, want)
	}
	if l := KeyLimits(&keys.Key{Token: "h"}); len(l) != 0 {
		t.Fatalf("a key without limits has limits %v", l)
	}
}

// TestLocal runs each limit type through its window with an injected clock.
func TestLocal(t *testing.T) {
	type step struct {
		advance time.Duration
		model   string
		finish  int64 // >0: Finish the previous lease with these output tokens first
		denied  string
	}
	tests := []struct {
		name   string
		limits []Limit
		steps  []step
	}{
		{"rpm 2", []Limit{{Descriptor: DescAPIKey, Value: "k", RPM: 2, TPM: NoLimit, Parallel: NoLimit}}, []step{
			{}, {}, {denied: "Rate limit exceeded for api_key: k. Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: 2025-05-14 10:31:00 UTC"},
			{denied: "requests"},
			{advance: 59 * time.Second, denied: "requests"}, // window still running
			{advance: time.Second},                          // now - start >= window: reset
			{},
			{denied: "requests"},
		}},
		{"rpm 0 denies all", []Limit{{Descriptor: DescAPIKey, Value: "k", RPM: 0, TPM: NoLimit, Parallel: NoLimit}}, []step{
			{denied: "Current limit: 0, Remaining: 0"},
		}},
		{"tpm 10", []Limit{{Descriptor: DescAPIKey, Value: "k", RPM: NoLimit, TPM: 10, Parallel: NoLimit}}, []step{
			{}, {finish: 6}, {finish: 4, denied: "Limit type: tokens. Current limit: 10, Remaining: 0"},
			{advance: time.Minute}, // new window: tokens reset
		}},
		{"parallel 1", []Limit{{Descriptor: DescAPIKey, Value: "k", RPM: NoLimit, TPM: NoLimit, Parallel: 1}}, []step{
			{}, {denied: "Limit type: max_parallel_requests. Current limit: 1, Remaining: 0"},
			{finish: 1}, // the first ended: its slot is free
			{denied: "max_parallel_requests"},
			{advance: DefaultLeaseTimeout}, // a lost end: the lease expired
		}},
		{"model rpm", []Limit{{Descriptor: DescModelPerKey, Value: "k:m", Model: "m", RPM: 1, TPM: NoLimit, Parallel: NoLimit}}, []step{
			{model: "m"}, {model: "other"}, {}, {model: "m", denied: "Rate limit exceeded for model_per_key: k:m. Limit type: requests. Current limit: 1"},
		}},
		{"model tpm", []Limit{{Descriptor: DescModelPerKey, Value: "k:m", Model: "m", RPM: NoLimit, TPM: 5, Parallel: NoLimit}}, []step{
			{model: "m"}, {model: "m", finish: 5, denied: "for model_per_key: k:m. Limit type: tokens. Current limit: 5"},
			{model: "other"},
		}},
		{"team and user in LiteLLM order", SubjectLimits{UserID: "u", TeamID: "t", UserRPM: i64(5), TeamRPM: i64(1), TeamMemberRPM: i64(1)}.Limits(), []step{
			{}, {denied: "Rate limit exceeded for team: t. Limit type: requests"},
		}},
		{"key before model", []Limit{
			{Descriptor: DescModelPerKey, Value: "k:m", Model: "m", RPM: 1, TPM: NoLimit, Parallel: NoLimit},
			{Descriptor: DescAPIKey, Value: "k", RPM: 1, TPM: NoLimit, Parallel: NoLimit},
		}, []step{{model: "m"}, {model: "m", denied: "for api_key: k."}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			l := newLocal(t, c)
			p := l.Compile(tt.limits)
			var last string
			for i, s := range tt.steps {
				c.Add(s.advance)
				if s.finish > 0 {
					l.Finish(t.Context(), Subject{KeyHash: "k", Model: "m", Lease: last, TeamID: "t", UserID: "u"}, Usage{InputTokens: 1000, OutputTokens: s.finish})
				}
				r := l.Check(t.Context(), p, s.model)
				_, denied := r.Denied()
				switch {
				case s.denied == "" && denied:
					t.Fatalf("step %d: denied: %s", i, r.Message())
				case s.denied != "" && !denied:
					t.Fatalf("step %d: allowed, want %q", i, s.denied)
				case denied && !strings.Contains(r.Message(), s.denied):
					t.Fatalf("step %d: message %q does not contain %q", i, r.Message(), s.denied)
				case denied && r.Lease() != "":
					t.Fatalf("step %d: a denial holds a lease %q", i, r.Lease())
				}
				if !denied {
					last = r.Lease()
				}
			}
		})
	}
}

func TestTokenTypes(t *testing.T) {
	for _, tt := range []struct {
		typ  TokenType
		want int64 // tokens counted for Usage{3, 5}
	}{{TokensOutput, 5}, {TokensInput, 3}, {TokensTotal, 8}} {
		c := newClock()
		l, err := New(Config{Now: c.Now, Tokens: tt.typ})
		if err != nil {
			t.Fatal(err)
		}
		p := l.Compile([]Limit{{Descriptor: DescAPIKey, Value: "k", RPM: NoLimit, TPM: 100, Parallel: NoLimit}})
		r := l.Check(t.Context(), p, "")
		l.Finish(t.Context(), Subject{KeyHash: "k", Lease: r.Lease()}, Usage{InputTokens: 3, OutputTokens: 5})
		r = l.Check(t.Context(), p, "")
		if st := r.Statuses(); len(st) != 1 || st[0].Remaining != 100-tt.want {
			t.Errorf("type %d: statuses %+v, want remaining %d", tt.typ, st, 100-tt.want)
		}
		l.Close()
	}
	for _, s := range []string{"output", "input", "total"} {
		if _, err := ParseTokenType(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseTokenType("all"); err == nil {
		t.Error("ParseTokenType(all) did not fail")
	}
}

func TestStatusesForHeaders(t *testing.T) {
	c := newClock()
	l := newLocal(t, c)
	p := l.Compile([]Limit{{Descriptor: DescAPIKey, Value: "k", RPM: 10, TPM: 1000, Parallel: NoLimit}})
	l.Check(t.Context(), p, "")
	r := l.Check(t.Context(), p, "")
	got := fmt.Sprint(r.Statuses())
	want := "[{api_key k requests 10 8 false} {api_key k tokens 1000 1000 false}]"
	if got != want {
		t.Fatalf("statuses %s, want %s", got, want)
	}
	if r.RetryAfter() != "60" || r.ResetAt() != "2025-05-14 10:31:00 UTC" {
		t.Fatalf("retry-after %s reset %s", r.RetryAfter(), r.ResetAt())
	}
}

func TestUnlimitedPlan(t *testing.T) {
	l := newLocal(t, newClock())
	p := l.Compile(KeyLimits(&keys.Key{Token: "h"}))
	if p.Limited() || (*Plan)(nil).Limited() {
		t.Fatal("a plan without limits is limited")
	}
	r := l.Check(t.Context(), p, "")
	if _, d := r.Denied(); d || len(r.Statuses()) != 0 || r.Lease() != "" {
		t.Fatalf("unlimited check: %+v", r)
	}
}

func TestLeaseParse(t *testing.T) {
	for _, s := range []string{"l1", "l3.5.1a2b", "r1.abc-1", "l0.0.1"} {
		if _, ok := parseLease(s); !ok {
			t.Errorf("parseLease(%q) failed", s)
		}
	}
	for _, s := range []string{"", "x1", "l", "lzz", "l1.5", "l1.x.1", "r1."} {
		if _, ok := parseLease(s); ok {
			t.Errorf("parseLease(%q) succeeded", s)
		}
	}
	l := newLocal(t, newClock())
	l.Finish(t.Context(), Subject{KeyHash: "k", Lease: "garbage"}, Usage{OutputTokens: 1}) // logged, no panic
}

func FuzzParseLease(f *testing.F) {
	for _, s := range []string{"l1", "l3.5.1a2b", "r1.abc-1", "r0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ls, ok := parseLease(s)
		if ok && ls.remote != (s[0] == 'r') {
			t.Fatalf("%q: remote %v", s, ls.remote)
		}
	})
}

// TestLocalConcurrentExact: 100 concurrent Checks over rpm 10 admit exactly 10,
// and parallel 3 never has more than 3 leases out.
func TestLocalConcurrentExact(t *testing.T) {
	l := newLocal(t, newClock())
	p := l.Compile([]Limit{{Descriptor: DescAPIKey, Value: "k", RPM: 10, TPM: NoLimit, Parallel: NoLimit}})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			r := l.Check(context.Background(), p, "")
			if _, d := r.Denied(); !d {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 10 {
		t.Fatalf("allowed %d, want 10", allowed.Load())
	}

	p = l.Compile([]Limit{{Descriptor: DescAPIKey, Value: "p", RPM: NoLimit, TPM: NoLimit, Parallel: 3}})
	var inflight, peak atomic.Int64
	for range 50 {
		wg.Go(func() {
			for range 20 {
				r := l.Check(context.Background(), p, "")
				if _, d := r.Denied(); d {
					continue
				}
				n := inflight.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				inflight.Add(-1)
				l.Release(context.Background(), Subject{KeyHash: "p", Lease: r.Lease()})
			}
		})
	}
	wg.Wait()
	if peak.Load() > 3 || peak.Load() < 1 {
		t.Fatalf("peak in flight %d, want 1..3", peak.Load())
	}
}

func TestCheckAllocs(t *testing.T) {
	l := newLocal(t, newClock())
	p := l.Compile([]Limit{
		{Descriptor: DescAPIKey, Value: "k", RPM: 1 << 30, TPM: 1 << 30, Parallel: NoLimit},
		{Descriptor: DescModelPerKey, Value: "k:m", Model: "m", RPM: 1 << 30, TPM: NoLimit, Parallel: NoLimit},
	})
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { l.Check(ctx, p, "m") }); n != 0 {
		t.Fatalf("a local Check allocates %.0f times", n)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{{Window: 1500 * time.Millisecond}, {LeaseTimeout: time.Millisecond}, {KeyPrefix: "a{b"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) did not fail", cfg)
		}
	}
}

func BenchmarkCheckLocal(b *testing.B) {
	l, _ := New(Config{})
	defer l.Close()
	p := l.Compile([]Limit{{Descriptor: DescAPIKey, Value: "k", RPM: 1 << 30, TPM: 1 << 30, Parallel: NoLimit}})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(5) // 10 callers on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Check(ctx, p, "")
		}
	})
}

// BenchmarkFloor is the floor BenchmarkCheckLocal is read against, in the
// same run: a clock read and one shared atomic increment per call, with the
// same callers.
func BenchmarkFloor(b *testing.B) {
	var n atomic.Uint64
	b.SetParallelism(5)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = time.Now()
			n.Add(1)
		}
	})
}
