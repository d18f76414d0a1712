package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// checkScript counts one request for one descriptor. KEYS: window,
// requests, tokens, max_parallel_requests (all under one hash tag). ARGV:
// now (s), window (s), rpm, tpm, parallel limit (-1 = none), lease member,
// now (ms), lease expiry (ms), lease key TTL (ms). Returns {window start,
// requests in window, tokens in window, lease: 1 taken, 0 refused, -1 n/a}.
// The window starts at the first request and resets once now - start >=
// window; the counter is incremented first (LiteLLM's semantics).
var checkScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local start = tonumber(redis.call('GET', KEYS[1]))
local n
if not start or now - start >= win then
  start = now
  redis.call('SET', KEYS[1], now, 'EX', win)
  redis.call('SET', KEYS[2], 1, 'EX', win)
  redis.call('DEL', KEYS[3])
  n = 1
else
  n = redis.call('INCR', KEYS[2])
end
local tokens = tonumber(redis.call('GET', KEYS[3]) or '0')
local lease = -1
local plim = tonumber(ARGV[5])
if plim >= 0 then
  lease = 0
  local rpm = tonumber(ARGV[3])
  local tpm = tonumber(ARGV[4])
  if not ((rpm >= 0 and n > rpm) or (tpm >= 0 and tokens >= tpm)) then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[7])
    if redis.call('ZCARD', KEYS[4]) < plim then
      redis.call('ZADD', KEYS[4], ARGV[8], ARGV[6])
      redis.call('PEXPIRE', KEYS[4], ARGV[9])
      lease = 1
    end
  end
end
return {start, n, tokens, lease}
`)

// finishScript records a response end for one descriptor. KEYS: window,
// tokens, max_parallel_requests. ARGV: tokens, lease member ("" = none).
// Tokens count in the current window only, and expire with it.
var finishScript = redis.NewScript(`
local n = tonumber(ARGV[1])
if n > 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('INCRBY', KEYS[2], n)
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return 0
`)

type redisBackend struct {
	l        *Limiter
	c        redis.UniversalClient
	prefix   string
	timeout  time.Duration
	probe    time.Duration
	down     atomic.Bool
	probing  atomic.Bool
	leaseTTL string // ms
}

func newRedisBackend(l *Limiter, cfg Config) *redisBackend {
	b := &redisBackend{l: l, c: cfg.Redis, prefix: cfg.KeyPrefix, timeout: cfg.RedisTimeout, probe: cfg.ProbeInterval}
	if b.timeout <= 0 {
		b.timeout = DefaultRedisTimeout
	}
	if b.probe <= 0 {
		b.probe = time.Second
	}
	b.leaseTTL = strconv.FormatInt((l.leaseTO + time.Minute).Milliseconds(), 10)
	return b
}

func (b *redisBackend) key(tag, suffix string) string { return b.prefix + tag + ":" + suffix }

// check runs checkScript for every descriptor of p that applies, in one
// pipeline (one round trip).
func (b *redisBackend) check(ctx context.Context, p *Plan, model string, r *Result) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	nowS := r.now.Unix()
	nowMS := r.now.UnixMilli()
	var member string
	type item struct {
		d   *desc
		cmd *redis.Cmd
	}
	var items [8]item
	run := func() ([]item, error) {
		its := items[:0]
		pipe := b.c.Pipeline()
		for i := range p.descs {
			d := &p.descs[i]
			if !applies(d, model) {
				continue
			}
			m := ""
			if d.parallel >= 0 {
				if member == "" {
					member = b.l.instance + "-" + strconv.FormatUint(b.l.seq.Add(1), 36)
				}
				m = member
			}
			cmd := checkScript.EvalSha(ctx, pipe, d.keys, nowS, b.l.window, d.rpm, d.tpm, d.parallel, m,
				nowMS, nowMS+b.l.leaseTO.Milliseconds(), b.leaseTTL)
			its = append(its, item{d, cmd})
		}
		_, err := pipe.Exec(ctx)
		return its, err
	}
	its, err := run()
	if err != nil && isNoScript(err) {
		if err = b.load(ctx); err == nil {
			its, err = run()
		}
	}
	if err != nil {
		return err
	}
	for _, it := range its {
		v, err := it.cmd.Int64Slice()
		if err != nil || len(v) != 4 {
			return fmt.Errorf("rate limit script answered %v: %w", v, err)
		}
		d, n, used, lease := it.d, v[1], v[2], v[3]
		if d.rpm >= 0 {
			r.add(Status{Descriptor: d.name, Value: d.value, Kind: Requests, Limit: d.rpm, Remaining: d.rpm - n, Over: n > d.rpm})
		}
		if d.tpm >= 0 {
			r.add(Status{Descriptor: d.name, Value: d.value, Kind: Tokens, Limit: d.tpm, Remaining: d.tpm - used, Over: used >= d.tpm})
			r.tokenMask |= 1 << d.bit
		}
		switch lease {
		case 1:
			r.hasLease, r.member, r.leaseTag = true, member, d.tag
		case 0:
			r.add(Status{Descriptor: d.name, Value: d.value, Kind: Parallel, Limit: d.parallel, Remaining: 0, Over: r.denied < 0})
		}
	}
	r.remote = true
	return nil
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

func (b *redisBackend) load(ctx context.Context) error {
	for _, s := range []*redis.Script{checkScript, finishScript} {
		if err := s.Load(ctx, b.c).Err(); err != nil {
			return err
		}
	}
	return nil
}

// finish runs finishScript for each descriptor tag (index = token mask bit)
// in one pipeline.
func (b *redisBackend) finish(ctx context.Context, tags [6]string, ls lease, tokens int64) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	run := func() error {
		pipe := b.c.Pipeline()
		cmds := 0
		for bit, tag := range tags {
			if tag == "" {
				continue
			}
			n, m := int64(0), ""
			if ls.mask&(1<<bit) != 0 {
				n = tokens
			}
			if bit == 0 && ls.hasLease {
				m = ls.member
			}
			finishScript.EvalSha(ctx, pipe, []string{b.key(tag, "window"), b.key(tag, "tokens"), b.key(tag, "max_parallel_requests")}, n, m)
			cmds++
		}
		if cmds == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run()
	if isNoScript(err) {
		if err = b.load(ctx); err == nil {
			err = run()
		}
	}
	return err
}

func (b *redisBackend) releaseMember(ctx context.Context, tag, member string) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.c.ZRem(ctx, b.key(tag, "max_parallel_requests"), member).Err()
}

// fail marks Redis down after an error (unless the caller's own context
// ended), so Checks count locally at once, and starts the probe that
// brings Redis back.
func (b *redisBackend) fail(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	b.l.errs.Inc()
	if !b.down.CompareAndSwap(false, true) {
		return
	}
	b.l.redisUp.Set(0)
	b.l.log.Warn("rate limits: Redis unreachable, counting locally until it answers", "err", err)
	if !b.probing.CompareAndSwap(false, true) {
		return
	}
	b.l.wg.Add(1)
	go b.probeLoop()
}

func (b *redisBackend) probeLoop() {
	defer b.l.wg.Done()
	t := time.NewTicker(b.probe)
	defer t.Stop()
	for {
		select {
		case <-b.l.stop:
			b.probing.Store(false)
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(b.timeout, time.Second))
		err := b.c.Ping(ctx).Err()
		if err == nil {
			err = b.load(ctx)
		}
		cancel()
		if err == nil {
			b.probing.Store(false) // before down: a failure after this starts a new probe
			b.down.Store(false)
			b.l.redisUp.Set(1)
			b.l.log.Info("rate limits: Redis answers again, counting there")
			return
		}
	}
}
