package webhook

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// receiver is a real HTTP webhook receiver that answers with the statuses
// given, in order (the last one repeats), and records what it got.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []*http.Request
	bodies   [][]byte
	done     chan struct{}
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses, done: make(chan struct{}, 100)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		n := len(r.got)
		r.got = append(r.got, req)
		r.bodies = append(r.bodies, b)
		st := r.statuses[min(n, len(r.statuses)-1)]
		r.mu.Unlock()
		w.WriteHeader(st)
		r.done <- struct{}{}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.got) }

func start(t *testing.T, cfg Config) (*Sender, *prometheus.Registry, func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Backoff == 0 {
		cfg.Backoff, cfg.MaxBackoff = time.Millisecond, 4*time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return s, reg, stop
}

func outcome(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sidecar_webhook_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == name {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func str(s string) *string { return &s }

func TestDeliveredSignedAndShaped(t *testing.T) {
	rcv := newReceiver(t, 200)
	s, reg, _ := start(t, Config{URLs: []string{rcv.URL + "/hook"}, Secret: "shh"})
	budget := 10.0
	s.Send(Event{Event: "key_created", EventGroup: "key", EventMessage: "API Key Created", Token: str("abc123"), KeyAlias: str("demo"), MaxBudget: &budget})
	<-rcv.done
	waitFor(t, "delivered metric", func() bool { return outcome(t, reg, "delivered") == 1 })

	req, body := rcv.got[0], rcv.bodies[0]
	if req.Method != http.MethodPost || req.URL.Path != "/hook" || req.Header.Get("Content-Type") != "application/json" {
		t.Errorf("request %s %s %s", req.Method, req.URL.Path, req.Header.Get("Content-Type"))
	}
	if req.Header.Get(HeaderEvent) != "key_created" || len(req.Header.Get(HeaderDelivery)) != 32 {
		t.Errorf("headers %v", req.Header)
	}
	if err := Verify("shh", req.Header.Get(HeaderSignature), body, time.Now(), time.Minute); err != nil {
		t.Errorf("signature: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	// LiteLLM's WebhookEvent fields, nulls included.
	for _, f := range []string{"event", "event_group", "event_message", "spend", "max_budget", "soft_budget", "token", "customer_id", "user_id", "team_id", "team_alias", "user_email", "key_alias", "projected_exceeded_date", "projected_spend"} {
		if _, ok := m[f]; !ok {
			t.Errorf("body lacks %s: %s", f, body)
		}
	}
	if m["token"] != "abc123" || m["max_budget"] != 10.0 || m["event_group"] != "key" {
		t.Errorf("body %s", body)
	}
}

func TestRetriesThenDelivers(t *testing.T) {
	rcv := newReceiver(t, 503, 429, 200)
	s, reg, _ := start(t, Config{URLs: []string{rcv.URL}})
	s.Send(Event{Event: "key_updated", EventGroup: "key"})
	waitFor(t, "delivery", func() bool { return outcome(t, reg, "delivered") == 1 })
	if n := rcv.count(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	if a, b := rcv.got[0].Header.Get(HeaderDelivery), rcv.got[2].Header.Get(HeaderDelivery); a != b {
		t.Errorf("delivery id changed between retries: %s %s", a, b)
	}
}

func TestFinalStatusIsNotRetried(t *testing.T) {
	rcv := newReceiver(t, 400)
	s, reg, _ := start(t, Config{URLs: []string{rcv.URL}})
	s.Send(Event{Event: "key_deleted"})
	waitFor(t, "failure", func() bool { return outcome(t, reg, "failed") == 1 })
	if n := rcv.count(); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}

// A receiver that is down: Send never blocks, attempts stop at MaxAttempts,
// the event counts as failed, and a second, healthy URL still gets it.
func TestReceiverDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	up := newReceiver(t, 200)
	s, reg, _ := start(t, Config{URLs: []string{down, up.URL}, MaxAttempts: 3})
	begin := time.Now()
	s.Send(Event{Event: "key_blocked"})
	if time.Since(begin) > time.Second {
		t.Error("Send blocked")
	}
	waitFor(t, "outcomes", func() bool { return outcome(t, reg, "failed") == 1 && outcome(t, reg, "delivered") == 1 })
	if got := testutil.ToFloat64(s.attempts.WithLabelValues("error")); got != 3 {
		t.Errorf("%v attempts at the dead URL, want 3", got)
	}
}

func TestQueueFullDropsWithoutBlocking(t *testing.T) {
	s, err := New(Config{URLs: []string{"http://127.0.0.1:1"}, QueueSize: 2, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	// Not running: nothing drains the queue.
	for range 5 {
		s.Send(Event{Event: "key_created"})
	}
	if got := testutil.ToFloat64(s.dropped); got != 3 {
		t.Errorf("dropped %v, want 3", got)
	}
	if got := testutil.ToFloat64(s.queued); got != 2 {
		t.Errorf("queued %v, want 2", got)
	}
}

func TestShutdownDrainsQueue(t *testing.T) {
	rcv := newReceiver(t, 200)
	s, err := New(Config{URLs: []string{rcv.URL}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s.Send(Event{Event: "key_created"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // already shutting down: Run only drains
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rcv.count(); n != 3 {
		t.Errorf("%d delivered at shutdown, want all 3", n)
	}
	if d, dl := testutil.ToFloat64(s.delivered), testutil.ToFloat64(s.dropped); d+dl != 3 {
		t.Errorf("delivered %v + dropped %v != 3", d, dl)
	}
}

func TestNoURLsIsANoOp(t *testing.T) {
	var nilSender *Sender
	nilSender.Send(Event{Event: "x"}) // must not panic
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.Send(Event{Event: "x"})
	if s.Enabled() {
		t.Error("enabled without URLs")
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"ftp://x", "not a url", "/relative", "http://"} {
		if _, err := New(Config{URLs: []string{u}}); err == nil || !strings.Contains(err.Error(), "webhook URL") {
			t.Errorf("%q: err %v", u, err)
		}
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"event":"key_created"}`)
	now := time.Unix(1_700_000_000, 0)
	h := Sign("secret", now, body)
	for _, tc := range []struct {
		name, secret, header string
		body                 []byte
		now                  time.Time
		ok                   bool
	}{
		{"good", "secret", h, body, now, true},
		{"wrong secret", "other", h, body, now, false},
		{"tampered body", "secret", h, []byte(`{"event":"key_deleted"}`), now, false},
		{"replayed later", "secret", h, body, now.Add(10 * time.Minute), false},
		{"malformed", "secret", "v1=abc", body, now, false},
		{"empty", "secret", "", body, now, false},
	} {
		err := Verify(tc.secret, tc.header, tc.body, tc.now, 5*time.Minute)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
		}
	}
}
