package ratelimit

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// testRedisAddr is the machine's Redis (TEST_REDIS_ADDR overrides).
func testRedisAddr() string {
	if a := os.Getenv("TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// redisClient connects to the test Redis; without one the test skips,
// except under CI, where it fails.
func redisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	if err := c.Ping(t.Context()).Err(); err != nil {
		c.Close()
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis at %s: %v", addr, err)
		}
		t.Skipf("no Redis at %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// prefix is a key prefix no other test uses; its keys are deleted after.
func prefix(t *testing.T, c *redis.Client) string {
	p := fmt.Sprintf("rltest:%s:%d:", t.Name(), time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, p+"*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return p
}

// replicas builds n limiters, each with its own Redis client, as n sidecars.
func replicas(t *testing.T, n int, pfx string, clk *clock, reg prometheus.Registerer) []*Limiter {
	t.Helper()
	var out []*Limiter
	for range n {
		c := redisClient(t, testRedisAddr())
		cfg := Config{Redis: c, KeyPrefix: pfx, RedisTimeout: 5 * time.Second, ProbeInterval: 20 * time.Millisecond} // generous: a loaded machine must not fall back
		if clk != nil {
			cfg.Now = clk.Now
		}
		if len(out) == 0 {
			cfg.Registerer = reg
		}
		l, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		out = append(out, l)
	}
	return out
}

func TestRedisReplicasAdmitExactly(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			pfx := prefix(t, redisClient(t, testRedisAddr()))
			ls := replicas(t, n, pfx, nil, nil)
			limits := []Limit{{Descriptor: DescAPIKey, Value: "k", RPM: 10, TPM: NoLimit, Parallel: NoLimit}}
			plans := make([]*Plan, n)
			for i, l := range ls {
				plans[i] = l.Compile(limits)
			}
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Go(func() {
					r := ls[i%n].Check(context.Background(), plans[i%n], "")
					if !r.remote {
						t.Error("counted locally")
					}
					if _, d := r.Denied(); !d {
						allowed.Add(1)
					}
				})
			}
			wg.Wait()
			if got := allowed.Load(); got != 10 {
				t.Fatalf("%d replicas admitted %d, want exactly 10", n, got)
			}
		})
	}
}

// TestRedisSemantics: window reset (injected clock passed to the script),
// tokens recorded on another replica, parallel slots released by Finish on
// any replica, model limits.
func TestRedisSemantics(t *testing.T) {
	c := redisClient(t, testRedisAddr())
	pfx := prefix(t, c)
	clk := newClock()
	ls := replicas(t, 3, pfx, clk, nil)
	ctx := t.Context()
	limits := []Limit{
		{Descriptor: DescAPIKey, Value: "k", RPM: 3, TPM: 10, Parallel: 1},
		{Descriptor: DescModelPerKey, Value: "k:m", Model: "m", RPM: 1, TPM: NoLimit, Parallel: NoLimit},
	}
	p := []*Plan{ls[0].Compile(limits), ls[1].Compile(limits), ls[2].Compile(limits)}
	check := func(i int, model string) Result { return ls[i].Check(ctx, p[i], model) }
	msg := func(r Result) string {
		if _, d := r.Denied(); d {
			return r.Message()
		}
		return ""
	}

	r := check(0, "m")
	if msg(r) != "" || r.Lease() == "" || r.Lease()[0] != 'r' {
		t.Fatalf("first: %q lease %q", msg(r), r.Lease())
	}
	// One slot: a second request on another replica is denied...
	if got := msg(check(1, "")); got != "Rate limit exceeded for api_key: k. Limit type: max_parallel_requests. Current limit: 1, Remaining: 0. Limit resets at: 2025-05-14 10:31:00 UTC" {
		t.Fatalf("second: %q", got)
	}
	// ...until the first ends on a third replica, with 10 output tokens.
	ls[2].Finish(ctx, Subject{KeyHash: "k", Model: "m", Lease: r.Lease()}, Usage{InputTokens: 1, OutputTokens: 10})
	if got := msg(check(1, "")); !strings.Contains(got, "Limit type: tokens. Current limit: 10, Remaining: 0") {
		t.Fatalf("after 10 tokens: %q", got)
	}
	// New window: counters, tokens reset; the model limit applies to m only.
	clk.Add(time.Minute)
	r = check(1, "m")
	if msg(r) != "" {
		t.Fatalf("new window: %q", msg(r))
	}
	ls[0].Release(ctx, Subject{KeyHash: "k", Lease: r.Lease()})
	if got := msg(check(2, "m")); !strings.Contains(got, "for model_per_key: k:m. Limit type: requests. Current limit: 1, Remaining: 0") {
		t.Fatalf("model: %q", got)
	}
	r = check(2, "other")
	if msg(r) != "" {
		t.Fatalf("other model: %q", msg(r))
	}
	ls[2].Release(ctx, Subject{KeyHash: "k", Lease: r.Lease()})
	if got := msg(check(0, "")); !strings.Contains(got, "Limit type: requests. Current limit: 3") { // 4th request in the window
		t.Fatalf("rpm: %q", got)
	}
	// A lease whose end never comes expires.
	clk.Add(time.Minute)
	r = check(0, "")
	if msg(r) != "" {
		t.Fatal(msg(r))
	}
	clk.Add(DefaultLeaseTimeout + time.Minute)
	if got := msg(check(1, "")); got != "" {
		t.Fatalf("lease did not expire: %q", got)
	}
}

// TestRedisFallback: a Redis that goes away makes the Check count locally
// at once (metric, Degraded), and counting returns to Redis when it is back.
func TestRedisFallback(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not installed")
		}
		t.Skip("redis-server not installed")
	}
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis-server on %s did not start", addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return cmd
	}
	srv := start()
	stop := func(cmd *exec.Cmd) { cmd.Process.Kill(); cmd.Wait() }
	defer func() { stop(srv) }()

	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	reg := prometheus.NewRegistry()
	l, err := New(Config{Redis: c, RedisTimeout: 5 * time.Second, ProbeInterval: 10 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := l.Compile([]Limit{{Descriptor: DescAPIKey, Value: "k", RPM: 1000, TPM: NoLimit, Parallel: NoLimit}})
	ctx := t.Context()
	if r := l.Check(ctx, p, ""); !r.remote || l.Degraded() != "" {
		t.Fatal("not counting in Redis at start")
	}
	stop(srv)
	r := l.Check(ctx, p, "")
	if r.remote {
		t.Fatal("counted in a dead Redis")
	}
	if _, d := r.Denied(); d {
		t.Fatal("fallback denied")
	}
	if l.Degraded() == "" || testutil.ToFloat64(l.redisUp) != 0 || testutil.ToFloat64(l.fallback) != 1 {
		t.Fatalf("degraded %q up %v fallback %v", l.Degraded(), testutil.ToFloat64(l.redisUp), testutil.ToFloat64(l.fallback))
	}
	if r := l.Check(ctx, p, ""); r.remote || testutil.ToFloat64(l.fallback) != 2 {
		t.Fatal("second check while down did not count locally")
	}
	srv = start()
	deadline := time.Now().Add(10 * time.Second)
	for l.Degraded() != "" {
		if time.Now().After(deadline) {
			t.Fatal("did not return to Redis")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := l.Check(ctx, p, ""); !r.remote {
		t.Fatal("not back in Redis")
	}
	if testutil.ToFloat64(l.redisUp) != 1 {
		t.Fatal("redis_up not 1")
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// BenchmarkCheckRedis is one Check against the real Redis.
func BenchmarkCheckRedis(b *testing.B) {
	c := redis.NewClient(&redis.Options{Addr: testRedisAddr()})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		b.Skip(err)
	}
	l, _ := New(Config{Redis: c, KeyPrefix: fmt.Sprintf("rlbench:%d:", time.Now().UnixNano())})
	defer l.Close()
	p := l.Compile([]Limit{{Descriptor: DescAPIKey, Value: "k", RPM: 1 << 30, TPM: 1 << 30, Parallel: NoLimit}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l.Check(ctx, p, "")
	}
}
