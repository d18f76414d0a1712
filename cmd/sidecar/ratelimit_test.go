package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
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

// Three sidecars on one Postgres and one Redis admit rpm_limit requests in
// total, not each: 100 concurrent Checks spread over them, 10 allowed.
func TestRateLimitThreeReplicasOneRedis(t *testing.T) {
	db, ru := pgtest.URL(t), testRedisURL(t)
	prefix := fmt.Sprintf("e2e:%d:", time.Now().UnixNano())
	var cs []checker
	var first *running
	var all []*running
	for range 3 {
		// A generous timeout: on a loaded machine a 100 ms one falls back to
		// local counting (by design), and then each replica admits 10; and
		// 33 concurrent first lookups must not fail closed either.
		r := start(t, "--master-key", master, "--database-url", db, "--redis-url", ru, "--redis-key-prefix", prefix, "--redis-timeout", "5s", "--lookup-timeout", "5s")
		if first == nil {
			first = r
		}
		cs = append(cs, newChecker(t, r.grpc))
		all = append(all, r)
	}
	_, gen := admin(t, first.http, "/key/generate", map[string]any{"rpm_limit": 10})
	key := gen["key"].(string)
	var mu sync.Mutex
	allowed := 0
	var denied []verdict
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			v := cs[i%3].check(t, key, "gpt-4o")
			mu.Lock()
			defer mu.Unlock()
			if v.allowed {
				allowed++
				if headerValue(v.resp.GetOkResponse().GetResponseHeadersToAdd(), "x-ratelimit-limit-requests") != "10" {
					t.Errorf("allow without x-ratelimit-limit-requests: %v", v.resp)
				}
			} else {
				denied = append(denied, v)
			}
		})
	}
	wg.Wait()
	for i, r := range all {
		if _, m := get(t, r.http+"/metrics"); !strings.Contains(m, "sidecar_ratelimit_local_fallback_total 0") {
			t.Errorf("replica %d counted locally (Redis too slow?): %s", i, r.logs.String())
		}
	}
	if allowed != 10 {
		t.Fatalf("three replicas admitted %d, want 10", allowed)
	}
	for _, v := range denied {
		if v.status != 429 || !strings.Contains(v.body, "Rate limit exceeded for api_key: ") || !strings.Contains(v.body, "Limit type: requests. Current limit: 10, Remaining: 0") {
			t.Fatalf("denial: %d %s", v.status, v.body)
		}
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
