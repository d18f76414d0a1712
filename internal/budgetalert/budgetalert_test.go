package budgetalert_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/virtualkeys/sidecar/internal/budgetalert"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/extproc"
	"github.com/virtualkeys/sidecar/internal/extproc/extproctest"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pricing"
	"github.com/virtualkeys/sidecar/internal/spend"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
	"github.com/virtualkeys/sidecar/internal/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ptr[T any](v T) *T { return &v }

type sent struct {
	mu  sync.Mutex
	evs []webhook.Event
}

func (s *sent) Send(ev webhook.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	s.mu.Unlock()
}

func (s *sent) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.evs {
		out = append(out, e.Event+": "+e.EventMessage)
	}
	s.evs = nil
	return out
}

// keyEnv is a key in a real cache on a real embedded store.
type keyEnv struct {
	st    *sqlite.Store
	cache *cache.Cache
	hash  string
}

func newKey(t *testing.T, k keys.Key) *keyEnv {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "keys.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := cache.New(cache.Config{Loader: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k.Token = keys.HashHex("sk-alert-key-0001")
	if err := st.Create(context.Background(), &k); err != nil {
		t.Fatal(err)
	}
	var h [32]byte
	if _, err := hex.Decode(h[:], []byte(k.Token)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background(), h); err != nil { // the Check loaded it
		t.Fatal(err)
	}
	c.Wait()
	return &keyEnv{st: st, cache: c, hash: k.Token}
}

// TestCrossings: each level is alerted once, when first reached, with
// LiteLLM's event and message; a jump alerts only the highest level
// reached; a reset re-arms them.
func TestCrossings(t *testing.T) {
	ke := newKey(t, keys.Key{MaxBudget: ptr(10.0), KeyAlias: ptr("alerts"), UserID: ptr("u1"), TeamID: ptr("t1"),
		Metadata: map[string]any{"soft_budget": 4.0}})
	s := &sent{}
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	a, err := budgetalert.New(budgetalert.Config{Keys: ke.cache, Sender: s, Registerer: reg, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	var n int
	charge := func(usd float64) []string {
		total += usd
		n++
		ke.cache.AddSpend(ke.hash, usd)
		a.Spent(&spend.Record{KeyHash: ke.hash, Cost: usd})
		return s.take()
	}
	steps := []struct {
		usd  float64
		want []string
	}{
		{3, nil},
		{1, []string{"soft_budget_crossed: Soft Budget Crossed: Total Soft Budget:`4.0`"}},
		{1, nil},
		{3.5, []string{"threshold_crossed: Key Budget: 15% Threshold Crossed"}}, // 8.5: 15% left
		{0.1, nil},
		{0.9, []string{"threshold_crossed: Key Budget: 5% Threshold Crossed "}}, // 9.5
		{0.4, nil},
		{0.1, []string{"budget_crossed: Key Budget: Budget Crossed\n Total Budget:`10.0`"}}, // 10
		{5, nil},
	}
	for i, st := range steps {
		if got := charge(st.usd); strings.Join(got, "|") != strings.Join(st.want, "|") {
			t.Fatalf("step %d (+%v): alerts %q, want %q", i, st.usd, got, st.want)
		}
	}
	// A budget reset (spend back to 0) re-arms; a jump past every level
	// alerts the highest one only (and the soft budget).
	ke.cache.SettleSpend(ke.hash, total, n, total) // flushed
	ke.cache.ApplyBudgetReset(ke.hash, 0, time.Now().Add(time.Hour))
	ke.cache.Wait()
	a.Spent(&spend.Record{KeyHash: ke.hash, Cost: 0.001})
	if got := s.take(); len(got) != 0 {
		t.Fatalf("after reset: %q", got)
	}
	if got := charge(12); strings.Join(got, "|") != "budget_crossed: Key Budget: Budget Crossed\n Total Budget:`10.0`|soft_budget_crossed: Soft Budget Crossed: Total Soft Budget:`4.0`" {
		t.Fatalf("jump: %q", got)
	}
	if n := testutil.ToFloat64(counter(t, reg, "budget_crossed")); n != 2 {
		t.Errorf("budget_crossed metric %v", n)
	}
	if c := strings.Count(logs.String(), `"msg":"budget alert"`); c != 6 {
		t.Errorf("%d alert log lines, want 6:\n%s", c, logs.String())
	}
}

// TestSoftBudgetCooldown: a key LiteLLM already alerted (soft_budget_cooldown)
// is not alerted again after a restart.
func TestSoftBudgetCooldown(t *testing.T) {
	ke := newKey(t, keys.Key{Spend: 5, SoftBudgetCooldown: true, Metadata: map[string]any{"soft_budget": 4.0}})
	s := &sent{}
	a, err := budgetalert.New(budgetalert.Config{Keys: ke.cache, Sender: s})
	if err != nil {
		t.Fatal(err)
	}
	a.Spent(&spend.Record{KeyHash: ke.hash, Cost: 1})
	if got := s.take(); len(got) != 0 {
		t.Fatalf("alerts %q", got)
	}
}

func counter(t *testing.T, g prometheus.Gatherer, event string) prometheus.Counter {
	t.Helper()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "snap"})
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sidecar_budget_alerts_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == event {
				c.Add(m.GetCounter().GetValue())
			}
		}
	}
	return c
}

type fixedPrices struct{ t *pricing.Table }

func (f fixedPrices) Table() *pricing.Table { return f.t }

// TestWebhookOncePerCrossing meters many concurrent requests through the
// real ext_proc server over gRPC, the real accountant and cache, and the
// real webhook sender to an HTTP receiver: each budget event arrives
// exactly once, in LiteLLM's WebhookEvent JSON.
func TestWebhookOncePerCrossing(t *testing.T) {
	body, err := os.ReadFile("../usage/testdata/openai_chat.json")
	if err != nil {
		t.Fatal(err)
	}
	const perRequest = 86*2.5e-6 + 1920*1.25e-6 + 300*1e-5 // gpt-4o, as extproc's test
	ke := newKey(t, keys.Key{MaxBudget: ptr(20 * perRequest), KeyAlias: ptr("hooked"), TeamID: ptr("team-9"),
		Metadata: map[string]any{"soft_budget": 10 * perRequest}})

	var mu sync.Mutex
	var got []map[string]any
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("body %q: %v", b, err)
		}
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}))
	defer rcv.Close()
	hooks, err := webhook.New(webhook.Config{URLs: []string{rcv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	hctx, stopHooks := context.WithCancel(context.Background())
	hooksDone := make(chan error, 1)
	go func() { hooksDone <- hooks.Run(hctx) }()

	alerts, err := budgetalert.New(budgetalert.Config{Keys: ke.cache, Sender: hooks})
	if err != nil {
		t.Fatal(err)
	}
	acct, err := spend.New(spend.Config{Writer: ke.st, Local: ke.cache, Observers: []spend.Observer{alerts}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := extproc.New(extproc.Config{Accountant: acct, Prices: fixedPrices{pricing.Default()}})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 5 {
				_, err := extproctest.Drive(context.Background(), client, &extproctest.Exchange{
					RequestHeaders:  [][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {"x-request-id", "r" + string(rune('a'+w)) + string(rune('a'+i))}},
					Metadata:        map[string]string{"key_hash": ke.hash, "key_alias": "hooked", "model": "gpt-4o"},
					ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "application/json"}},
					Chunks:          extproctest.Split(body, 64),
				})
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	stopHooks() // Run drains the queue before returning
	if err := <-hooksDone; err != nil {
		t.Fatal(err)
	}

	count := map[string]int{}
	for _, m := range got {
		count[m["event"].(string)+" "+m["event_message"].(string)]++
		if m["event_group"] != "key" || m["token"] != ke.hash || m["key_alias"] != "hooked" || m["team_id"] != "team-9" {
			t.Errorf("event %v", m)
		}
		if m["event"] != "soft_budget_crossed" && m["max_budget"] != 20*perRequest {
			t.Errorf("max_budget in %v", m)
		}
	}
	for ev, n := range count {
		if n != 1 {
			t.Errorf("%q delivered %d times", ev, n)
		}
	}
	// 40 requests spend twice the budget: the soft budget and the budget
	// are crossed once each; the 15% level may be passed over by
	// concurrent requests, the 5% one too, but neither arrives twice.
	if count["budget_crossed Key Budget: Budget Crossed\n Total Budget:`"+jsonFloat(20*perRequest)+"`"] != 1 ||
		count["soft_budget_crossed Soft Budget Crossed: Total Soft Budget:`"+jsonFloat(10*perRequest)+"`"] != 1 {
		t.Errorf("events %v", count)
	}
}

func jsonFloat(f float64) string { b, _ := json.Marshal(f); return string(b) }

// TestSoftBudgetCooldownWritten: the soft alert sets soft_budget_cooldown
// in the store (asynchronously), so a restarted alerter does not repeat it;
// the spend back under the soft budget clears it.
func TestSoftBudgetCooldownWritten(t *testing.T) {
	ke := newKey(t, keys.Key{Metadata: map[string]any{"soft_budget": 4.0}})
	s := &sent{}
	a, err := budgetalert.New(budgetalert.Config{Keys: ke.cache, Sender: s, Store: ke.st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ke.cache.AddSpend(ke.hash, 5)
	a.Spent(&spend.Record{KeyHash: ke.hash, Cost: 5})
	if got := s.take(); len(got) != 1 {
		t.Fatalf("alerts %q", got)
	}
	cooldown := func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			k, err := ke.st.Get(context.Background(), ke.hash)
			if err != nil {
				t.Fatal(err)
			}
			if k.SoftBudgetCooldown == want {
				return
			}
		}
		t.Fatalf("soft_budget_cooldown never became %v", want)
	}
	cooldown(true)

	// A restart: a fresh cache reads the row (spend 5, flag set).
	ke.cache.SettleSpend(ke.hash, 5, 1, 5)
	if _, err := ke.st.Update(context.Background(), ke.hash, func(k *keys.Key) error { k.Spend = 5; return nil }); err != nil {
		t.Fatal(err)
	}
	fresh := newCacheOn(t, ke.st, ke.hash)
	b, err := budgetalert.New(budgetalert.Config{Keys: fresh, Sender: s, Store: ke.st})
	if err != nil {
		t.Fatal(err)
	}
	b.Spent(&spend.Record{KeyHash: ke.hash, Cost: 0.5})
	if got := s.take(); len(got) != 0 {
		t.Fatalf("restart re-alerted: %q", got)
	}
	// Back under the soft budget (a reset): the flag is cleared.
	fresh.ApplyBudgetReset(ke.hash, 0, time.Now().Add(time.Hour))
	fresh.Wait()
	a2, err := budgetalert.New(budgetalert.Config{Keys: fresh, Sender: s, Store: ke.st})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- a2.Run(ctx2) }()
	defer func() { cancel2(); <-done2 }()
	a2.Spent(&spend.Record{KeyHash: ke.hash, Cost: 0.5})
	cooldown(false)
}

func newCacheOn(t *testing.T, st *sqlite.Store, hash string) *cache.Cache {
	t.Helper()
	c, err := cache.New(cache.Config{Loader: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var h [32]byte
	if _, err := hex.Decode(h[:], []byte(hash)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	return c
}
