package postgres

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	execpkg "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store"
)

// syncBuffer is a log sink safe for concurrent writes.
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

// pgbouncerBinary finds Debian's pgbouncer; without it the test skips,
// except in CI (.ci/run installs it), where it fails.
func pgbouncerBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"pgbouncer", "/usr/sbin/pgbouncer"} {
		if path, err := execpkg.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("pgbouncer is not installed, and CI is set: install Debian's pgbouncer package (.ci/run does)")
	}
	t.Skip("pgbouncer not installed")
	return ""
}

// startPgBouncer runs a real PgBouncer in transaction pooling in front of
// the test server, on a free loopback port, with its own configuration in
// a temporary directory, and kills it (by PID) when the test ends. It
// returns dbURL rewritten to go through it.
func startPgBouncer(t *testing.T, dbURL string) string {
	t.Helper()
	bin := pgbouncerBinary(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bport := l.Addr().(*net.TCPAddr).Port
	l.Close()

	dir := t.TempDir()
	// PgBouncer refuses to run as root; started as root it switches to the
	// user given with -u, who must read the configuration.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	user := u.User.Username()
	cfg := fmt.Sprintf(`[databases]
* = host=%s port=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 100
default_pool_size = 10
ignore_startup_parameters = extra_float_digits
`, host, port, bport, filepath.Join(dir, "users.txt"))
	for name, body := range map[string]string{"pgbouncer.ini": cfg, "users.txt": fmt.Sprintf("%q \"\"\n", user)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	var out syncBuffer
	cmd := execpkg.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbouncer: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID: our own process only
		<-exited
	})
	addr := fmt.Sprintf("127.0.0.1:%d", bport)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("pgbouncer exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer not listening on %s: %s", addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b := *u
	b.Host = addr
	q := b.Query()
	q.Set("sslmode", "disable")
	// Named prepared statements do not survive transaction pooling.
	q.Set("default_query_exec_mode", "cache_describe")
	b.RawQuery = q.Encode()
	return b.String()
}

// TestPgBouncerTransactionPooling: behind PgBouncer in transaction pooling,
// LISTEN succeeds but nothing ever arrives. The store must notice within
// the deafness bound (metric, log naming --feed-database-url, FeedStatus,
// EventDown) and, with --feed-database-url pointing at Postgres directly,
// must hear every change made through PgBouncer.
func TestPgBouncerTransactionPooling(t *testing.T) {
	direct := pgtest.URL(t)
	bouncer := startPgBouncer(t, direct)
	ctx := t.Context()

	var logs syncBuffer
	reg := prometheus.NewRegistry()
	const interval, bound = 100 * time.Millisecond, 500 * time.Millisecond
	deaf, err := Open(ctx, Config{URL: bouncer, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg,
		HeartbeatInterval: interval, DeafAfter: bound})
	if err != nil {
		t.Fatalf("Open through PgBouncer (migrations included): %v", err)
	}
	t.Cleanup(func() { _ = deaf.Close() })
	r := &recorder{}
	t.Cleanup(deaf.Subscribe(r.add))
	r.waitFor(t, "EventDown: deaf", 0, kind(store.EventDown))
	st := deaf.FeedStatus()
	if !st.Connected || !st.Deaf || !strings.Contains(st.Detail, "--feed-database-url") {
		t.Errorf("FeedStatus = %+v", st)
	}
	if got := testutil.ToFloat64(deaf.feed.deafG); got != 1 {
		t.Errorf("sidecar_store_feed_deaf = %v, want 1", got)
	}
	if l := logs.String(); !strings.Contains(l, "change feed is deaf") || !strings.Contains(l, "--feed-database-url") {
		t.Errorf("log does not tell the operator what to set:\n%s", l)
	}

	// The fix: the listener on a direct connection, the pool through
	// PgBouncer. It hears its heartbeat and every write made through
	// PgBouncer, by either store.
	fixed, err := Open(ctx, Config{URL: bouncer, FeedURL: direct, HeartbeatInterval: interval, DeafAfter: bound})
	if err != nil {
		t.Fatalf("Open with a direct feed URL: %v", err)
	}
	t.Cleanup(func() { _ = fixed.Close() })
	rf := &recorder{}
	t.Cleanup(fixed.Subscribe(rf.add))
	tok := keys.HashHex("sk-through-pgbouncer")
	if err := deaf.Create(ctx, &keys.Key{Token: tok}); err != nil {
		t.Fatalf("Create through PgBouncer: %v", err)
	}
	rf.waitFor(t, "a write through PgBouncer", 0, func(e store.Event) bool { return e.Kind == store.EventChanged && e.Token == tok })
	if _, err := fixed.SetBlocked(ctx, tok, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for fixed.FeedStatus().LastHeartbeat.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("the direct listener never heard its heartbeat")
		}
		time.Sleep(interval)
	}
	if st := fixed.FeedStatus(); st.Deaf || st.Detail != "" {
		t.Errorf("direct feed: %+v", st)
	}
	// The deaf store still answers reads and writes through PgBouncer.
	if k, err := deaf.Get(ctx, tok); err != nil || k.Blocked == nil || !*k.Blocked {
		t.Errorf("Get through PgBouncer = %+v, %v", k, err)
	}
}
