package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseCPU(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.34\n", 12.34, true},
		{"process_cpu_seconds_total 1e+02\n", 100, true},
		{"go_goroutines 7\n", 0, false},
		{"process_cpu_seconds_total abc\n", 0, false},
	} {
		got, err := parseCPU(strings.NewReader(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseCPU(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServeAndRun runs both modes against each other over real gRPC.
func TestServeAndRun(t *testing.T) {
	o := options{addr: freeAddr(t), metricsAddr: freeAddr(t), key: "sk-loadgen-test-key", master: "sk-m", concurrency: 4, conns: 2, n: 500, path: "/v1/chat/completions"}
	o.metrics = "http://" + o.metricsAddr + "/metrics"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var sout bytes.Buffer
	go func() { done <- serve(ctx, o, &sout) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", o.addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var out bytes.Buffer
	if err := run(context.Background(), o, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"checks      500 (allowed 500, denied 0, errors 0)", "p99 ", "server CPU  "} {
		if !strings.Contains(s, want) {
			t.Fatalf("report lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "unknown") {
		t.Fatalf("server CPU not measured:\n%s", s)
	}
	// A wrong key is denied, and run says so.
	o.key = "sk-not-seeded"
	out.Reset()
	if err := run(context.Background(), o, &out); err == nil || !strings.Contains(out.String(), "allowed 0, denied 500") {
		t.Fatalf("wrong key: err=%v\n%s", err, out.String())
	}
}
