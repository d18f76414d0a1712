package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/virtualkeys/sidecar/internal/pgtest"
)

// syncBuffer is a goroutine-safe log sink.
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

// running is a sidecar started by a test on ephemeral ports.
type running struct {
	s      *sidecar
	http   string // base URL
	grpc   string // dial target
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// start builds and serves a sidecar from args (plus ephemeral listen
// addresses and a temp data dir unless given), and stops it when the test ends.
func start(t *testing.T, args ...string) *running {
	t.Helper()
	base := []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-format", "text"}
	cfg, err := parseConfig(append(base, args...), envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := newSidecar(ctx, cfg, logs)
	if err != nil {
		cancel()
		t.Fatalf("newSidecar: %v", err)
	}
	r := &running{s: s, http: "http://" + s.httpLn.Addr().String(), grpc: s.grpcLn.Addr().String(), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.serve(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	waitReady(t, r.http)
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
		r.done <- nil // later calls see a clean stop
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar did not stop")
	}
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 10s (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func healthStatus(t *testing.T, target, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health check %q: %v", service, err)
	}
	return resp.Status
}

func TestSidecarServesOnEachStore(t *testing.T) {
	stores := []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"embedded", func(*testing.T) []string { return nil }},
		{"postgres", func(t *testing.T) []string { return []string{"--database-url", pgtest.URL(t)} }},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			r := start(t, append(st.args(t), "--master-key", "sk-test-master")...)
			for _, path := range []string{"/healthz", "/readyz"} {
				if code, body := get(t, r.http+path); code != 200 {
					t.Errorf("%s = %d %q", path, code, body)
				}
			}
			code, body := get(t, r.http+"/metrics")
			if code != 200 || !strings.Contains(body, "process_cpu_seconds_total") {
				t.Errorf("/metrics = %d, lacks process metrics", code)
			}
			for _, svc := range []string{"", authzServiceName} {
				if s := healthStatus(t, r.grpc, svc); s != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("grpc health %q = %v", svc, s)
				}
			}
			// grpc-go's standard server metrics: the two health checks just
			// made, and ext_proc's series present from the start (the Check is
			// skipped: its own metrics count it more cheaply).
			_, body = get(t, r.http+"/metrics")
			for _, want := range []string{
				`grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 2`,
				`grpc_server_started_total{grpc_method="Process",grpc_service="envoy.service.ext_proc.v3.ExternalProcessor",grpc_type="bidi_stream"} 0`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}

func TestShutdownGoesNotReadyBeforeDraining(t *testing.T) {
	r := start(t, "--master-key", "sk-test-master", "--shutdown-delay", "400ms")
	r.cancel()
	// During the shutdown delay the servers still answer, but report not ready.
	deadline := time.Now().Add(300 * time.Millisecond)
	var sawNotReady, sawNotServing bool
	for time.Now().Before(deadline) && !(sawNotReady && sawNotServing) {
		if code, _ := get(t, r.http+"/readyz"); code == http.StatusServiceUnavailable {
			sawNotReady = true
		}
		if healthStatus(t, r.grpc, authzServiceName) == healthpb.HealthCheckResponse_NOT_SERVING {
			sawNotServing = true
		}
		if code, _ := get(t, r.http+"/healthz"); code != 200 {
			t.Errorf("/healthz = %d during drain; liveness must hold", code)
		}
	}
	if !sawNotReady || !sawNotServing {
		t.Errorf("during shutdown delay: readyz 503 seen=%v, grpc NOT_SERVING seen=%v", sawNotReady, sawNotServing)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
		r.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}

func TestGeneratedMasterKeySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	r1 := start(t, "--data-dir", dir)
	r1.stop(t)
	key1, err := os.ReadFile(filepath.Join(dir, masterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r1.logs.String(), strings.TrimSpace(string(key1))) {
		t.Error("first start did not print the generated key")
	}
	r2 := start(t, "--data-dir", dir)
	if strings.Contains(r2.logs.String(), strings.TrimSpace(string(key1))) {
		t.Error("restart printed the master key again")
	}
	key2, _ := os.ReadFile(filepath.Join(dir, masterKeyFile))
	if string(key1) != string(key2) {
		t.Error("restart changed the master key")
	}
}

func TestGRPCOnUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "authz.sock")
	// A stale socket file from a crashed process must not block start-up.
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(sock)
	r := start(t, "--master-key", "sk-m", "--grpc-addr", "unix://"+sock)
	if s := healthStatus(t, "unix://"+sock, authzServiceName); s != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over unix socket = %v", s)
	}
	_ = r
}

func TestRunRejectsBadSetupWithOneMessage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined"},
		{"unwritable data dir", []string{"--data-dir", filepath.Join(file, "sub")}, "data dir"},
		{"unreachable postgres", []string{"--master-key", "sk-m", "--database-url", "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2"}, "postgres"},
		{"port in use", []string{"--master-key", "sk-m", "--http-addr", busy.Addr().String()}, "--http-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Later flags win, so a case's own --http-addr overrides this one.
			args := append([]string{"--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, tt.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			err := run(ctx, args, envOf(nil), io.Discard, io.Discard)
			if err == nil {
				t.Fatal("run succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q lacks %q", msg, tt.want)
			}
			if strings.Contains(msg, "goroutine ") || strings.Count(msg, "\n") > 2 {
				t.Errorf("error is not one clear message: %q", msg)
			}
		})
	}
}
