package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/virtualkeys/sidecar/internal/pgtest"
)

// testRedisURL is the machine's Redis; without it the test skips, except
// under CI, where it fails.
func testRedisURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("TEST_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	opts, _ := redis.ParseURL(u)
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis at %s: %v", u, err)
		}
		t.Skipf("no Redis at %s: %v", u, err)
	}
	return u
}

// Two sidecars on one Postgres and one Redis admit rpm_limit requests in
// total, not each.
func TestRateLimitTwoReplicasOneRedis(t *testing.T) {
	db, ru := pgtest.URL(t), testRedisURL(t)
	prefix := fmt.Sprintf("e2e:%d:", time.Now().UnixNano())
	a := start(t, "--master-key", master, "--database-url", db, "--redis-url", ru, "--redis-key-prefix", prefix)
	b := start(t, "--master-key", master, "--database-url", db, "--redis-url", ru, "--redis-key-prefix", prefix)
	_, gen := admin(t, a.http, "/key/generate", map[string]any{"rpm_limit": 3})
	key := gen["key"].(string)
	cs := []checker{newChecker(t, a.grpc), newChecker(t, b.grpc)}
	allowed := 0
	var last verdict
	for i := range 10 {
		v := cs[i%2].check(t, key, "gpt-4o")
		if v.allowed {
			allowed++
			if headerValue(v.resp.GetOkResponse().GetResponseHeadersToAdd(), "x-ratelimit-limit-requests") != "3" {
				t.Fatalf("allow without x-ratelimit-limit-requests: %v", v.resp)
			}
		} else {
			last = v
		}
	}
	if allowed != 3 {
		t.Fatalf("two replicas admitted %d, want 3", allowed)
	}
	if last.status != 429 || !strings.Contains(last.body, "Rate limit exceeded for api_key: ") || !strings.Contains(last.body, "Limit type: requests. Current limit: 3, Remaining: 0") {
		t.Fatalf("denial: %d %s", last.status, last.body)
	}
}

// With Redis unreachable the sidecar starts, counts locally, and says so
// in /readyz and /metrics.
func TestRateLimitRedisDownCountsLocally(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // a closed port: connection refused
	r := start(t, "--master-key", master, "--redis-url", "redis://127.0.0.1:"+strconv.Itoa(port))
	_, gen := admin(t, r.http, "/key/generate", map[string]any{"rpm_limit": 1})
	key := gen["key"].(string)
	c := newChecker(t, r.grpc)
	if v := c.check(t, key, "gpt-4o"); !v.allowed {
		t.Fatalf("first request denied: %s", v.body)
	}
	if v := c.check(t, key, "gpt-4o"); v.status != 429 {
		t.Fatalf("second request: %d %s, want 429 counted locally", v.status, v.body)
	}
	code, body := get(t, r.http+"/readyz")
	if code != 200 || !strings.Contains(body, "degraded: rate limits: Redis unreachable") {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	_, metrics := get(t, r.http+"/metrics")
	for _, m := range []string{"sidecar_ratelimit_redis_up 0", "sidecar_ratelimit_local_fallback_total 2", `sidecar_ratelimit_denials_total{type="requests"} 1`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	if !strings.Contains(r.logs.String(), "Redis unreachable") {
		t.Errorf("no log line for the fallback: %s", r.logs.String())
	}
}
