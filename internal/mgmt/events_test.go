package mgmt_test

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

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/webhook"
)

// hookReceiver is a real HTTP webhook receiver that verifies signatures.
type hookReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	events []map[string]any
	bodies []string
	bad    int
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	h := &hookReceiver{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if webhook.Verify(secret, r.Header.Get(webhook.HeaderSignature), b, time.Now(), time.Minute) != nil {
			h.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		h.events = append(h.events, m)
		h.bodies = append(h.bodies, string(b))
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) snapshot() ([]map[string]any, []string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.events...), append([]string(nil), h.bodies...), h.bad
}

func startSender(t *testing.T, urls ...string) *webhook.Sender {
	t.Helper()
	s, err := webhook.New(webhook.Config{URLs: urls, Secret: "hook-secret", Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxAttempts: 3, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// Every committed key mutation reaches a real receiver once, as LiteLLM's
// WebhookEvent, signed, with the key's hash and never a raw key.
func TestKeyEventsReachAWebhook(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		rcv := newHookReceiver(t, "hook-secret")
		sender := startSender(t, rcv.URL)
		e := newEnv(t, open(t), func(c *mgmt.Config) { c.Events = sender })

		raw, hash, _ := e.generate(`{"key_alias":"hooked","team_id":"t1","max_budget":5}`)
		e.admin("POST", "/key/update", `{"key":"`+hash+`","max_budget":7}`, 200)
		e.admin("POST", "/key/block", `{"key":"`+hash+`"}`, 200)
		e.admin("POST", "/key/unblock", `{"key":"`+hash+`"}`, 200)
		out := e.admin("POST", "/key/regenerate", `{"key":"`+raw+`"}`, 200)
		newRaw, newHash := out["key"].(string), out["token"].(string)
		e.sawRaw(newRaw)
		e.admin("POST", "/key/delete", `{"keys":["`+newHash+`"]}`, 200)
		e.call("POST", "/key/block", master, `{"key":"`+keys.Generate()+`"}`) // 404: no event

		want := []struct{ event, token string }{
			{"key_created", hash}, {"key_updated", hash}, {"key_blocked", hash},
			{"key_unblocked", hash}, {"key_regenerated", newHash}, {"key_deleted", newHash},
		}
		deadline := time.Now().Add(10 * time.Second)
		var got []map[string]any
		var bodies []string
		for {
			var bad int
			got, bodies, bad = rcv.snapshot()
			if bad > 0 {
				t.Fatalf("%d deliveries failed signature verification", bad)
			}
			if len(got) >= len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // a stray extra event would show up now
		got, bodies, _ = rcv.snapshot()
		if len(got) != len(want) {
			t.Fatalf("receiver got %d events, want %d: %v", len(got), len(want), bodies)
		}
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || (g["event"] == w.event && g["token"] == w.token)
			}
			if !found {
				t.Errorf("no %s event for %s in %v", w.event, keys.Redact(w.token), bodies)
			}
		}
		for _, g := range got {
			if g["event_group"] != "key" || g["key_alias"] != "hooked" || g["team_id"] != "t1" {
				t.Errorf("event %v: want event_group key, alias hooked, team t1", g)
			}
		}
		for _, b := range bodies {
			if strings.Contains(b, raw) || strings.Contains(b, newRaw) {
				t.Errorf("a raw key was sent to the webhook: %s", b)
			}
		}
	})
}

// A receiver that is down never blocks or fails a management call.
func TestKeyEventsReceiverDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	each(t, func(t *testing.T, open opener) {
		sender := startSender(t, down)
		e := newEnv(t, open(t), func(c *mgmt.Config) { c.Events = sender })
		begin := time.Now()
		for range 20 {
			_, hash, _ := e.generate(`{}`)
			e.admin("POST", "/key/block", `{"key":"`+hash+`"}`, 200)
		}
		if d := time.Since(begin); d > 20*time.Second {
			t.Errorf("40 calls took %s with the receiver down", d)
		}
	})
}
