package main

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Every metric the sidecar exposes (after serving some traffic, so that
// labelled metrics have children) is described in docs/metrics.md.
func TestEveryMetricIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, "--master-key", "sk-test-master", "--webhook-url", "http://127.0.0.1:1/hook")
	// Traffic on every face: a management call, an HTTP authz decision, a 404,
	// and a gRPC Check.
	for _, c := range []struct{ method, path string }{
		{"POST", "/key/generate"}, {"GET", "/authz/v1/chat/completions"}, {"GET", "/nothing"},
	} {
		req, _ := http.NewRequest(c.method, r.http+c.path, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer sk-test-master")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	conn, err := grpc.NewClient(r.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{})

	resp, err := http.Get(r.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	seen := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, ok := strings.CutPrefix(sc.Text(), "# HELP ")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		seen++
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("metric %s is not in docs/metrics.md", name)
		}
	}
	if seen < 15 {
		t.Fatalf("saw %d sidecar metrics; the scrape or the filter is wrong", seen)
	}
}
