// Package ratelimit enforces LiteLLM's rate limits (its v3 limiter,
// parallel_request_limiter_v3.py) for the Check: requests per window
// (rpm_limit), tokens per window (tpm_limit) and requests in flight
// (max_parallel_requests), per key ("api_key"), per key and model
// ("model_per_key", from metadata.model_rpm_limit / model_tpm_limit), and per
// user, team and team member once the caller supplies those limits.
//
// Semantics, as LiteLLM's:
//   - A descriptor's window (Config.Window, default 60 s, whole seconds)
//     starts at its first request and resets when now - start >= window.
//   - Every Check first increments the request counter of each descriptor
//     that has a limit, then is denied when a counter exceeds its limit
//     (so exactly rpm_limit requests pass per window). A denied request
//     still counts, as in LiteLLM.
//   - Tokens are recorded by Finish when a response ends (output tokens by
//     default; Config.Tokens selects input or total), and a Check is denied
//     once the window's tokens reached tpm_limit.
//   - max_parallel_requests takes a lease per allowed request, released by
//     Finish or Release; a lease also expires after Config.LeaseTimeout, so a
//     lost end never holds a slot for ever.
//
// Differences from LiteLLM, by choice: LiteLLM adds 1 to the token counter
// on every request (its window script increments every counter) and
// reports remaining tokens net of those; we count tokens only. LiteLLM's
// in-flight counter resets with the window; our leases expire on their own
// timeout instead. LiteLLM names the wrong descriptor in a denial when
// descriptors have different numbers of limits; we name the one that
// denied.
//
// Counting is local (this process) unless a Redis client is configured;
// then every replica shares exact counters in Redis, updated by one atomic
// Lua script per descriptor (EVALSHA, pipelined: one round trip per Check),
// with keys hash-tagged "{<descriptor>:<value>}:requests" so a descriptor's
// keys share a Redis Cluster slot. If Redis fails, the Check counts locally
// at once and the limiter probes Redis until it answers again (metric
// sidecar_ratelimit_redis_up, a log line per transition, Degraded for
// /readyz), as LiteLLM falls back to its in-memory cache.
//
// Cost: a key without limits never reaches the limiter (the caller keeps a
// compiled Plan per key; an empty one is a nil check). A local Check is a few
// atomic operations per descriptor, without locks or allocations.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Descriptor names, as LiteLLM's.
const (
	DescAPIKey      = "api_key"
	DescModelPerKey = "model_per_key"
	DescUser        = "user"
	DescTeam        = "team"
	DescTeamMember  = "team_member"
	DescEndUser     = "end_user"
)

// Kind is what a limit counts.
type Kind uint8

// Kinds, named as LiteLLM's rate_limit_type.
const (
	Requests Kind = iota
	Tokens
	Parallel
)

func (k Kind) String() string {
	switch k {
	case Requests:
		return "requests"
	case Tokens:
		return "tokens"
	}
	return "max_parallel_requests"
}

// TokenType selects which tokens count toward tpm limits
// (LiteLLM's general_settings.token_rate_limit_type).
type TokenType uint8

// Token types.
const (
	TokensOutput TokenType = iota // completion tokens (LiteLLM's default)
	TokensInput                   // prompt tokens
	TokensTotal                   // both
)

// ParseTokenType reads "output", "input" or "total".
func ParseTokenType(s string) (TokenType, error) {
	switch s {
	case "output", "":
		return TokensOutput, nil
	case "input":
		return TokensInput, nil
	case "total":
		return TokensTotal, nil
	}
	return 0, fmt.Errorf("token rate limit type %q is not output, input or total", s)
}

// Limit is one descriptor's limits. A negative limit is no limit.
type Limit struct {
	Descriptor string // DescAPIKey, ...
	Value      string // the key's hash, "<hash>:<model>", a team id, ...
	// Model, for DescModelPerKey: the requested model it applies to.
	Model              string
	RPM, TPM, Parallel int64
}

// NoLimit marks an absent limit.
const NoLimit = -1

// Subject names whose counters a finished response updates.
type Subject struct {
	KeyHash string // token hash
	Model   string // requested model ("" if none)
	TeamID  string
	UserID  string
	Lease   string // lease id from the Check (rl_lease; "" if none)
}

// Usage is what the metering server reports when a response ends.
type Usage struct{ InputTokens, OutputTokens int64 }

// Defaults.
const (
	DefaultWindow       = 60 * time.Second
	DefaultLeaseTimeout = 10 * time.Minute
	DefaultRedisTimeout = 100 * time.Millisecond
	// maxSlots caps the parallel slots of one descriptor (a larger
	// max_parallel_requests behaves as this many).
	maxSlots = 1 << 16
)

// Config configures a Limiter.
type Config struct {
	// Window is the fixed window (whole seconds). 0 = DefaultWindow.
	Window time.Duration
	// Tokens selects the tokens that count toward tpm limits.
	Tokens TokenType
	// LeaseTimeout frees a parallel slot whose end never came. 0 = DefaultLeaseTimeout.
	LeaseTimeout time.Duration
	// Redis, when set, shares counters between replicas. nil = local only.
	Redis redis.UniversalClient
	// KeyPrefix is put before every Redis key (outside the hash tag).
	KeyPrefix string
	// RedisTimeout bounds one Redis round trip. 0 = DefaultRedisTimeout.
	RedisTimeout time.Duration
	// ProbeInterval is how often an unreachable Redis is retried. 0 = 1 s.
	ProbeInterval time.Duration
	// Now is the clock. nil = time.Now.
	Now func() time.Time
	// Registerer receives the metrics. nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives errors and Redis transitions. nil discards.
	Logger *slog.Logger
}

// Limiter counts. Create it with New; it is safe for concurrent use.
type Limiter struct {
	window    int64 // seconds
	tokens    TokenType
	leaseTO   time.Duration
	now       func() time.Time
	base      int64 // unix seconds just before the limiter started
	baseMS    int64 // unix ms at base
	log       *slog.Logger
	instance  string // random, names this process's leases
	seq       atomic.Uint64
	shards    [64]shard
	seed      maphash.Seed
	redis     *redisBackend // nil = local only
	closeOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup

	denials  [3]prometheus.Counter
	errs     prometheus.Counter
	fallback prometheus.Counter
	redisUp  prometheus.Gauge
}

type shard struct {
	mu sync.Mutex
	m  map[string]*counter
	_  [40]byte // keep shards on separate cache lines
}

// New validates cfg and builds the Limiter. Close it to stop its Redis probe.
func New(cfg Config) (*Limiter, error) {
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Window < time.Second || cfg.Window%time.Second != 0 {
		return nil, fmt.Errorf("ratelimit: window %s is not a whole number of seconds >= 1s", cfg.Window)
	}
	if cfg.LeaseTimeout == 0 {
		cfg.LeaseTimeout = DefaultLeaseTimeout
	}
	if cfg.LeaseTimeout < time.Second {
		return nil, fmt.Errorf("ratelimit: lease timeout %s is below 1s", cfg.LeaseTimeout)
	}
	if strings.ContainsAny(cfg.KeyPrefix, "{}") {
		return nil, errors.New("ratelimit: KeyPrefix must not contain { or } (it would change the hash tag)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now()
	l := &Limiter{
		window: int64(cfg.Window / time.Second), tokens: cfg.Tokens, leaseTO: cfg.LeaseTimeout,
		now: cfg.Now, base: now.Unix() - 1, log: cfg.Logger, seed: maphash.MakeSeed(),
		instance: strconv.FormatUint(rand.Uint64()&0xffffffffff, 36), stop: make(chan struct{}),
	}
	l.baseMS = l.base * 1000
	for i := range l.shards {
		l.shards[i].m = map[string]*counter{}
	}
	denials := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_ratelimit_denials_total", Help: "Requests denied by a rate limit, by limit type.",
	}, []string{"type"})
	for k := range l.denials {
		l.denials[k] = denials.WithLabelValues(Kind(k).String())
	}
	l.errs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sidecar_ratelimit_redis_errors_total", Help: "Redis calls of the rate limiter that failed.",
	})
	l.fallback = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sidecar_ratelimit_local_fallback_total", Help: "Checks counted locally because Redis was unreachable.",
	})
	l.redisUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sidecar_ratelimit_redis_up", Help: "1 when the rate limiter counts in Redis, 0 when it has fallen back to local counting (or has no Redis).",
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{denials, l.errs, l.fallback, l.redisUp} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	if cfg.Redis != nil {
		l.redis = newRedisBackend(l, cfg)
		l.redisUp.Set(1)
	}
	return l, nil
}

// Close stops the Redis probe. It does not close the Redis client.
func (l *Limiter) Close() {
	l.closeOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// Degraded reports why the limiter is not counting as configured ("" when
// it is): Redis unreachable, counting locally.
func (l *Limiter) Degraded() string {
	if l.redis != nil && l.redis.down.Load() {
		return "rate limits: Redis unreachable, counting locally on this replica"
	}
	return ""
}

// Window is the rate-limit window.
func (l *Limiter) Window() time.Duration { return time.Duration(l.window) * time.Second }

// desc is one compiled descriptor of a Plan.
type desc struct {
	name, value string
	model       string // model_per_key: the model it applies to
	rpm, tpm    int64
	parallel    int64
	bit         uint8    // token mask bit
	tag         string   // "{name:value}"
	keys        []string // Redis keys: window, requests, tokens, max_parallel_requests
	c           *counter // local counters, shared by every Plan naming it
}

// Plan is the compiled limits of one key (and its team and user): build it
// once per cached key with Compile and keep it with the key.
type Plan struct {
	descs []desc
	// limited is false for a Plan with no limits at all.
	limited bool
}

// Limited reports whether p has any limit. A nil Plan has none.
func (p *Plan) Limited() bool { return p != nil && p.limited }

// token mask bits per descriptor name.
var descBits = map[string]uint8{DescAPIKey: 0, DescModelPerKey: 1, DescUser: 2, DescTeam: 3, DescTeamMember: 4, DescEndUser: 5}

// Compile builds the Plan for limits (from KeyLimits and the caller's
// team/user limits). Limits without any limit are dropped.
func (l *Limiter) Compile(limits []Limit) *Plan {
	p := &Plan{}
	for _, lim := range limits {
		if lim.RPM < 0 && lim.TPM < 0 && lim.Parallel < 0 {
			continue
		}
		bit, ok := descBits[lim.Descriptor]
		if !ok {
			continue
		}
		if lim.Descriptor != DescAPIKey {
			lim.Parallel = NoLimit // LiteLLM supports max_parallel_requests per key only
		}
		d := desc{
			name: lim.Descriptor, value: lim.Value, model: lim.Model, rpm: lim.RPM, tpm: lim.TPM, parallel: lim.Parallel,
			bit: bit, tag: redisTag(lim.Descriptor, lim.Value),
		}
		d.c = l.counter(d.tag, lim.Parallel)
		if l.redis != nil {
			d.keys = []string{l.redis.key(d.tag, "window"), l.redis.key(d.tag, "requests"), l.redis.key(d.tag, "tokens"), l.redis.key(d.tag, "max_parallel_requests")}
		}
		p.descs = append(p.descs, d)
		p.limited = true
	}
	slices.SortStableFunc(p.descs, func(a, b desc) int { return descRank[a.name] - descRank[b.name] })
	return p
}

// descRank is LiteLLM's order of descriptors (which denial is reported).
var descRank = map[string]int{DescAPIKey: 0, DescUser: 1, DescTeam: 2, DescTeamMember: 3, DescEndUser: 4, DescModelPerKey: 5}

func redisTag(name, value string) string { return "{" + name + ":" + value + "}" }

// counter finds or makes the local counters of a descriptor, sizing its
// parallel slots to parallel.
func (l *Limiter) counter(tag string, parallel int64) *counter {
	s := &l.shards[maphash.String(l.seed, tag)%uint64(len(l.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.m[tag]
	if c == nil {
		c = &counter{}
		s.m[tag] = c
	}
	c.resize(parallel)
	return c
}

func (l *Limiter) lookup(tag string) *counter {
	s := &l.shards[maphash.String(l.seed, tag)%uint64(len(l.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[tag]
}

// Status is one counter's state after a Check.
type Status struct {
	Descriptor, Value string
	Kind              Kind
	Limit             int64
	Remaining         int64 // may be negative: render max(0, Remaining)
	Over              bool
}

// maxStatuses bounds the statuses a Result reports (headers); further
// descriptors are still enforced.
const maxStatuses = 8

// Result is the outcome of one Check. It is a value: checking allocates nothing.
type Result struct {
	statuses [maxStatuses]Status
	n        int
	denied   int8 // index into statuses of the denial, -1 = allowed
	deny     Status
	// lease
	remote    bool // counted in Redis
	slot      uint32
	word      uint64
	member    string // Redis lease member
	leaseC    *counter
	leaseTag  string
	hasLease  bool
	tokenMask uint8
	now       time.Time
	window    int64
}

// Denied returns the status that denied the request.
func (r *Result) Denied() (Status, bool) { return r.deny, r.denied >= 0 }

// Statuses returns the counters checked, in LiteLLM's order.
func (r *Result) Statuses() []Status { return r.statuses[:r.n] }

func (r *Result) add(s Status) {
	if s.Over && r.denied < 0 {
		r.denied, r.deny = int8(min(r.n, maxStatuses-1)), s
	}
	if r.n < maxStatuses {
		r.statuses[r.n] = s
		r.n++
	}
}

// Lease returns the lease id for the rl_lease metadata ("" when the request
// holds no lease and no token limit needs its end). Finish and Release
// read it back.
func (r *Result) Lease() string {
	if !r.hasLease && r.tokenMask == 0 {
		return ""
	}
	b := make([]byte, 0, 48)
	if r.remote {
		b = append(b, 'r')
	} else {
		b = append(b, 'l')
	}
	b = strconv.AppendUint(b, uint64(r.tokenMask), 16)
	if r.hasLease {
		b = append(b, '.')
		if r.remote {
			b = append(b, r.member...)
		} else {
			b = strconv.AppendUint(b, uint64(r.slot), 16)
			b = append(b, '.')
			b = strconv.AppendUint(b, r.word, 16)
		}
	}
	return string(b)
}

// ResetAt is when LiteLLM says the limit resets: now + window (its
// conservative estimate), in its format "2006-01-02 15:04:05 UTC".
func (r *Result) ResetAt() string {
	return r.now.Add(time.Duration(r.window)*time.Second).UTC().Format("2006-01-02 15:04:05") + " UTC"
}

// RetryAfter is the retry-after header value: the window, in seconds, as LiteLLM.
func (r *Result) RetryAfter() string { return strconv.FormatInt(r.window, 10) }

// Message is LiteLLM's denial message.
func (r *Result) Message() string {
	s := r.deny
	return "Rate limit exceeded for " + s.Descriptor + ": " + s.Value + ". Limit type: " + s.Kind.String() +
		". Current limit: " + strconv.FormatInt(s.Limit, 10) + ", Remaining: " + strconv.FormatInt(max(0, s.Remaining), 10) +
		". Limit resets at: " + r.ResetAt()
}

// Check counts one request against p for model (the requested model, for
// model_per_key limits). It never fails: when Redis cannot answer it
// counts locally.
func (l *Limiter) Check(ctx context.Context, p *Plan, model string) Result {
	r := Result{denied: -1, now: l.now(), window: l.window}
	if !p.Limited() {
		return r
	}
	if l.redis != nil {
		if !l.redis.down.Load() {
			err := l.redis.check(ctx, p, model, &r)
			if err == nil {
				l.finishCheck(ctx, &r)
				return r
			}
			l.redis.fail(err)
			r = Result{denied: -1, now: r.now, window: l.window} // count this one locally
		}
		l.fallback.Inc()
	}
	l.checkLocal(p, model, &r)
	l.finishCheck(ctx, &r)
	return r
}

// finishCheck counts a denial and gives back a lease taken by a request
// another descriptor denied.
func (l *Limiter) finishCheck(ctx context.Context, r *Result) {
	s, denied := r.Denied()
	if !denied {
		return
	}
	l.denials[s.Kind].Inc()
	if r.hasLease {
		l.release(ctx, r)
		r.hasLease = false
	}
	r.tokenMask = 0
}

func applies(d *desc, model string) bool {
	return d.name != DescModelPerKey || (model != "" && model == d.model)
}

func (l *Limiter) checkLocal(p *Plan, model string, r *Result) {
	nowS := uint32(r.now.Unix() - l.base)
	nowMS := r.now.UnixMilli() - l.baseMS
	for i := range p.descs {
		d := &p.descs[i]
		if !applies(d, model) {
			continue
		}
		start, n := d.c.hit(nowS, uint32(l.window))
		if d.rpm >= 0 {
			r.add(Status{Descriptor: d.name, Value: d.value, Kind: Requests, Limit: d.rpm, Remaining: d.rpm - int64(n), Over: int64(n) > d.rpm})
		}
		if d.tpm >= 0 {
			used := d.c.tokensIn(start)
			r.add(Status{Descriptor: d.name, Value: d.value, Kind: Tokens, Limit: d.tpm, Remaining: d.tpm - used, Over: used >= d.tpm})
			r.tokenMask |= 1 << d.bit
		}
		if d.parallel >= 0 {
			over := r.denied >= 0 // already denied: take no slot
			if !over {
				slot, word, ok := d.c.acquire(nowMS, nowMS+l.leaseTO.Milliseconds())
				if ok {
					r.slot, r.word, r.hasLease, r.leaseC = slot, word, true, d.c
				}
				over = !ok
			}
			if over {
				r.add(Status{Descriptor: d.name, Value: d.value, Kind: Parallel, Limit: d.parallel, Remaining: 0, Over: r.denied < 0})
			}
		}
	}
}

// Finish records a finished response's tokens and releases its lease.
func (l *Limiter) Finish(ctx context.Context, s Subject, u Usage) {
	var n int64
	switch l.tokens {
	case TokensOutput:
		n = u.OutputTokens
	case TokensInput:
		n = u.InputTokens
	default:
		n = u.InputTokens + u.OutputTokens
	}
	l.end(ctx, s, max(0, n))
}

// Release releases a lease without recording tokens (the stream ended
// without a usable response end).
func (l *Limiter) Release(ctx context.Context, s Subject) { l.end(ctx, s, 0) }

// lease is a parsed rl_lease.
type lease struct {
	remote   bool
	mask     uint8
	slot     uint32
	word     uint64
	member   string
	hasLease bool
}

func parseLease(s string) (lease, bool) {
	var ls lease
	if len(s) < 2 || (s[0] != 'l' && s[0] != 'r') {
		return ls, false
	}
	ls.remote = s[0] == 'r'
	head, rest, more := strings.Cut(s[1:], ".")
	m, err := strconv.ParseUint(head, 16, 8)
	if err != nil {
		return ls, false
	}
	ls.mask = uint8(m)
	if !more {
		return ls, true
	}
	ls.hasLease = true
	if ls.remote {
		ls.member = rest
		return ls, rest != ""
	}
	a, b, ok := strings.Cut(rest, ".")
	slot, err1 := strconv.ParseUint(a, 16, 32)
	word, err2 := strconv.ParseUint(b, 16, 64)
	if !ok || err1 != nil || err2 != nil {
		return ls, false
	}
	ls.slot, ls.word = uint32(slot), word
	return ls, true
}

// descValues are the descriptor values a Subject names, by token mask bit.
func descValues(s Subject) [6][2]string {
	var v [6][2]string
	v[0] = [2]string{DescAPIKey, s.KeyHash}
	if s.Model != "" {
		v[1] = [2]string{DescModelPerKey, s.KeyHash + ":" + s.Model}
	}
	v[2] = [2]string{DescUser, s.UserID}
	v[3] = [2]string{DescTeam, s.TeamID}
	if s.TeamID != "" && s.UserID != "" {
		v[4] = [2]string{DescTeamMember, s.TeamID + ":" + s.UserID}
	}
	return v
}

func (l *Limiter) end(ctx context.Context, s Subject, tokens int64) {
	if s.Lease == "" || s.KeyHash == "" {
		return
	}
	ls, ok := parseLease(s.Lease)
	if !ok {
		l.log.Warn("rate limit: unreadable lease id", "lease", s.Lease)
		return
	}
	vals := descValues(s)
	var tags [6]string
	for bit := range vals {
		if (ls.mask&(1<<bit) != 0 && tokens > 0 || bit == 0 && ls.hasLease) && vals[bit][1] != "" {
			tags[bit] = redisTag(vals[bit][0], vals[bit][1])
		}
	}
	if ls.remote && l.redis != nil {
		// While Redis is away its tokens are lost and its lease expires by
		// itself; the transition was logged once.
		if l.redis.down.Load() {
			return
		}
		if err := l.redis.finish(ctx, tags, ls, tokens); err != nil {
			l.redis.fail(err)
		}
		return
	}
	for bit, tag := range tags {
		if tag == "" {
			continue
		}
		c := l.lookup(tag)
		if c == nil {
			continue
		}
		if ls.mask&(1<<bit) != 0 && tokens > 0 {
			c.addTokens(tokens)
		}
		if bit == 0 && ls.hasLease && !ls.remote {
			c.release(ls.slot, ls.word)
		}
	}
}

func (l *Limiter) release(ctx context.Context, r *Result) {
	if r.remote {
		if err := l.redis.releaseMember(ctx, r.leaseTag, r.member); err != nil {
			l.redis.fail(err)
		}
		return
	}
	r.leaseC.release(r.slot, r.word)
}
