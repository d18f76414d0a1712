package authz_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store/postgres"
)

// replica is one sidecar: its own Postgres store (pool + change feed),
// cache and Check service on a real gRPC listener.
type replica struct {
	store  *postgres.Store
	cache  *cache.Cache
	client authv3.AuthorizationClient
}

const lookupTimeout = 300 * time.Millisecond

func newReplica(t *testing.T, dbURL string) *replica { return startReplica(t, dbURL, false) }

// startReplica starts a replica; withOrg adds the team/user cache, as the
// sidecar has.
func startReplica(t *testing.T, dbURL string, withOrg bool) *replica {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, postgres.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	// Lister: the known-key filter is on, as in the sidecar.
	c, err := cache.New(cache.Config{Loader: st, Lister: st, LookupTimeout: lookupTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	t.Cleanup(c.Attach(st))
	cfg := authz.Config{Cache: c, MasterKey: master}
	if withOrg {
		oc, err := cache.NewOrg(cache.OrgConfig{Loader: st, LookupTimeout: lookupTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(oc.Close)
		t.Cleanup(oc.Attach(st))
		cfg.Org = oc
	}
	a, err := authz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := authz.NewServer(a)
	conn := serveCheck(t, srv)
	return &replica{store: st, cache: c, client: authv3.NewAuthorizationClient(conn)}
}

// verdict is "allow", a denial's error type, or a gRPC error code name.
func (r *replica) verdict(raw, model string) string {
	resp, err := r.client.Check(context.Background(), req(chat, bearer(raw), body(model), false))
	if err != nil {
		return "rpc:" + status.Code(err).String()
	}
	if resp.GetOkResponse() != nil {
		return "allow"
	}
	b := resp.GetDeniedResponse().GetBody()
	for _, typ := range []string{"token_not_found_in_db", "key_model_access_denied", "budget_exceeded", "expired_key", "auth_error"} {
		if contains(b, `"type":"`+typ+`"`) {
			return typ
		}
	}
	return "deny:" + b
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// eventually polls until r's verdict is want, failing after within.
func (r *replica) eventually(t *testing.T, raw, model, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got string
	for {
		if got = r.verdict(raw, model); got == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("verdict for %s after %v = %q, want %q", keys.Redact(raw), within, got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// warm makes r cache raw's current state.
func (r *replica) warm(t *testing.T, raw, model, want string) {
	t.Helper()
	if got := r.verdict(raw, model); got != want {
		t.Fatalf("warm verdict = %q, want %q", got, want)
	}
	r.cache.Wait()
}

const propagation = 100 * time.Millisecond

func TestTwoReplicasPostgres(t *testing.T) {
	dbURL := pgtest.URL(t)
	a, b := newReplica(t, dbURL), newReplica(t, dbURL)
	ctx := context.Background()
	raw := keys.Generate()
	h := keys.HashHex(raw)
	if err := a.store.Create(ctx, &keys.Key{Token: h, Models: []string{"gpt-4o"}, MaxBudget: ptr(10.0)}); err != nil {
		t.Fatal(err)
	}
	b.eventually(t, raw, "gpt-4o", "allow", propagation)
	sql, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer sql.Close(ctx)

	steps := []struct {
		name  string
		write func() error
		model string
		want  string
	}{
		{"block via A", func() error { _, err := a.store.SetBlocked(ctx, h, true); return err }, "gpt-4o", "auth_error"},
		{"unblock via A", func() error { _, err := a.store.SetBlocked(ctx, h, false); return err }, "gpt-4o", "allow"},
		{"models change via A", func() error {
			_, err := a.store.Update(ctx, h, func(k *keys.Key) error { k.Models = []string{"claude-3"}; return nil })
			return err
		}, "gpt-4o", "key_model_access_denied"},
		{"models back via A", func() error {
			_, err := a.store.Update(ctx, h, func(k *keys.Key) error { k.Models = nil; return nil })
			return err
		}, "gpt-4o", "allow"},
		{"spend via A (spend-only event)", func() error { return a.store.AddSpend(ctx, map[string]float64{h: 10}) }, "gpt-4o", "budget_exceeded"},
		{"budget raised by plain SQL", func() error {
			_, err := sql.Exec(ctx, `UPDATE "LiteLLM_VerificationToken" SET max_budget = 100 WHERE token = $1`, h)
			return err
		}, "gpt-4o", "allow"},
		{"blocked by plain SQL", func() error {
			_, err := sql.Exec(ctx, `UPDATE "LiteLLM_VerificationToken" SET blocked = true WHERE token = $1`, h)
			return err
		}, "gpt-4o", "auth_error"},
		{"unblocked by plain SQL", func() error {
			_, err := sql.Exec(ctx, `UPDATE "LiteLLM_VerificationToken" SET blocked = false WHERE token = $1`, h)
			return err
		}, "gpt-4o", "allow"},
	}
	for _, s := range steps {
		b.warm(t, raw, s.model, b.verdict(raw, s.model))
		if err := s.write(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		d := b.eventually(t, raw, s.model, s.want, propagation)
		t.Logf("%s: B enforced in %v", s.name, d)
	}

	// Regenerate without grace: the old key dies on B, the new one works.
	b.warm(t, raw, "gpt-4o", "allow")
	raw2 := keys.Generate()
	if _, err := a.store.Regenerate(ctx, h, keys.HashHex(raw2), nil, nil); err != nil {
		t.Fatal(err)
	}
	b.eventually(t, raw, "gpt-4o", "token_not_found_in_db", propagation)
	b.eventually(t, raw2, "gpt-4o", "allow", propagation)

	// Delete.
	b.warm(t, raw2, "gpt-4o", "allow")
	if _, err := a.store.Delete(ctx, []string{keys.HashHex(raw2)}); err != nil {
		t.Fatal(err)
	}
	b.eventually(t, raw2, "gpt-4o", "token_not_found_in_db", propagation)
}

// TestListenerTerminated: a change made while B's listener is down is not
// notified to B; B purges on reconnect, so it serves no stale data after.
func TestListenerTerminated(t *testing.T) {
	dbURL := pgtest.URL(t)
	a, b := newReplica(t, dbURL), newReplica(t, dbURL)
	ctx := context.Background()
	raw := keys.Generate()
	h := keys.HashHex(raw)
	if err := a.store.Create(ctx, &keys.Key{Token: h}); err != nil {
		t.Fatal(err)
	}
	b.warm(t, raw, "gpt-4o", "allow")
	sql, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer sql.Close(ctx)
	// Both replicas listen; terminate every listener, then write at once,
	// before they can reconnect.
	tag, err := sql.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'`)
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() < 2 {
		t.Fatalf("terminated %d listeners, want 2", tag.RowsAffected())
	}
	if _, err := sql.Exec(ctx, `UPDATE "LiteLLM_VerificationToken" SET blocked = true WHERE token = $1`, h); err != nil {
		t.Fatal(err)
	}
	// The feed reconnects with backoff; after it, B must not serve the
	// stale allow.
	deadline := time.Now().Add(15 * time.Second)
	for b.verdict(raw, "gpt-4o") != "auth_error" {
		if time.Now().After(deadline) {
			t.Fatal("B still serves the key blocked while its listener was down")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The deny came through the reconnected feed (its purge, or a
	// notification received right after its LISTEN, before the store marks
	// itself connected): the feed must be up, at the latest a moment later.
	for !b.store.FeedConnected() {
		if time.Now().After(deadline) {
			t.Fatal("B denies but its feed never reconnected: who purged?")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// proxy forwards TCP to target until closed; Close cuts every connection.
type proxy struct {
	lis    net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(u, c); _ = u.Close() })
		p.wg.Go(func() { _, _ = io.Copy(c, u); _ = c.Close() })
	}
}

func (p *proxy) Close() {
	_ = p.lis.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestOutage: B's database goes away. Cached keys keep working; unknown
// keys fail closed (ext_authz error -> Envoy's status_on_error) within the
// lookup timeout.
func TestOutage(t *testing.T) {
	dbURL := pgtest.URL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, u.Host)
	u.Host = p.lis.Addr().String()
	b := newReplica(t, u.String())
	ctx := context.Background()
	raw := keys.Generate()
	if err := b.store.Create(ctx, &keys.Key{Token: keys.HashHex(raw)}); err != nil {
		t.Fatal(err)
	}
	uncached := keys.Generate()
	if err := b.store.Create(ctx, &keys.Key{Token: keys.HashHex(uncached)}); err != nil {
		t.Fatal(err)
	}
	b.cache.Purge() // our own Creates' events may have landed; start clean
	b.warm(t, raw, "gpt-4o", "allow")

	p.Close()
	for i := range 50 {
		if got := b.verdict(raw, "gpt-4o"); got != "allow" {
			t.Fatalf("cached key during outage (try %d) = %q", i, got)
		}
	}
	for _, k := range []string{uncached, keys.Generate()} {
		start := time.Now()
		got := b.verdict(k, "gpt-4o")
		d := time.Since(start)
		if got != "rpc:"+codes.Unavailable.String() {
			t.Fatalf("uncached key during outage = %q, want an Unavailable ext_authz error", got)
		}
		if d > lookupTimeout+200*time.Millisecond {
			t.Fatalf("uncached key took %v to fail, want <= lookup timeout %v + margin", d, lookupTimeout)
		}
		t.Logf("uncached key failed closed in %v", d)
	}
}
