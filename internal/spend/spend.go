// Package spend accounts metered spend without losing any: each request's
// cost is applied at once to this replica's view of the key (the Check's
// cache, so the key's next request sees it) and queued; a flush loop
// writes the queue to the store in batches (spend = spend + delta, key
// rows in sorted order, model_spend, team/user/membership roll-ups, one
// LiteLLM_SpendLogs row per request) every interval and on shutdown.
//
// What is never lost: a batch that fails (store down) is kept as it is and
// retried with the same batch id until the store takes it, while new spend
// keeps accumulating per key; the store applies a batch id once, so a
// retry after a commit whose answer was lost does not double count.
// Per-key deltas are aggregated, so their memory is bounded by the number
// of keys; spend-log rows are bounded by MaxPendingLogs (beyond it new rows
// are dropped and counted in sidecar_spend_logs_dropped_total, never the
// spend itself).
//
// What a crash (SIGKILL, OOM, power loss) loses: the spend recorded since
// the last successful flush — at most one flush interval of traffic while
// the store is up, everything since the outage began while it is down.
// SIGTERM does not lose it: Run flushes before returning.
package spend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/store"
)

// Writer is where batches go; both stores implement it (store.SpendWriter).
type Writer interface {
	ApplySpend(ctx context.Context, b *store.SpendBatch) (map[string]float64, error)
}

// Local is this replica's view of key spend; *cache.Cache satisfies it.
type Local interface {
	// AddSpend applies a metered delta at once.
	AddSpend(hash string, delta float64)
	// SettleSpend says n deltas summing to delta reached the store, whose
	// spend for the key is now stored.
	SettleSpend(hash string, delta float64, n int, stored float64)
}

// Observer learns of every recorded request after its cost was applied
// locally (budget alerts, model budgets hook in here). Spent is called on
// the metering path: it must be quick and must not block.
type Observer interface {
	Spent(r *Record)
}

// Record is one metered request.
type Record struct {
	RequestID string
	KeyHash   string // "" = not a virtual key: logged, charged to no key
	KeyAlias  string
	UserID    string
	TeamID    string
	EndUser   string
	Model     string // the model charged (model_spend member, spend-log model)
	CallType  string // LiteLLM's call_type, e.g. "acompletion"
	Provider  string // custom_llm_provider, e.g. "openai"
	// Status is "success" (2xx) or "failure"; a failure costs nothing.
	Status     string
	HTTPStatus int
	Cost       float64 // USD
	// PromptTokens and CompletionTokens are what was billed (or estimated).
	PromptTokens, CompletionTokens int64
	Start, End                     time.Time
	// Estimated: no usage in the response, tokens estimated. Unpriced: the
	// model is not in the price table (charged the configured default).
	Estimated, Unpriced bool
}

// Defaults for zero Config fields.
const (
	DefaultInterval       = time.Second
	DefaultMaxPendingLogs = 100_000
	DefaultFlushTimeout   = 10 * time.Second
)

// Config configures an Accountant.
type Config struct {
	// Writer receives the batches. Required.
	Writer Writer
	// Local is updated at once and settled after each flush; nil = none.
	Local Local
	// Observers learn of every record (after Local).
	Observers []Observer
	// Interval between flushes. 0 means DefaultInterval.
	Interval time.Duration
	// MaxPendingLogs bounds the spend-log rows kept while the store does
	// not take them. 0 means DefaultMaxPendingLogs.
	MaxPendingLogs int
	// FlushTimeout bounds one flush (and the final one on shutdown). 0
	// means DefaultFlushTimeout.
	FlushTimeout time.Duration
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives flush failures; nil discards.
	Logger *slog.Logger
}

// Accountant records metered spend and flushes it. Create it with New.
type Accountant struct {
	w        Writer
	local    Local
	obs      []Observer
	interval time.Duration
	maxLogs  int
	timeout  time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	keys    map[string]*delta
	teams   map[string]*delta
	users   map[string]*delta
	members map[[2]string]float64
	logs    []store.SpendLog

	flushMu sync.Mutex
	retry   *pending // a batch the store did not take, retried as is
	seq     uint64
	prefix  string

	recorded, dropped, estimated, unpriced prometheus.Counter
	usd                                    prometheus.Counter
	flushOK, flushErr                      prometheus.Counter
	flushDur                               prometheus.Histogram
	pendingKeys, pendingLogs, pendingUSD   prometheus.Gauge
}

type delta struct {
	spend  float64
	n      int
	models map[string]float64
}

func (d *delta) add(model string, cost float64) {
	d.spend += cost
	d.n++
	if model != "" {
		if d.models == nil {
			d.models = map[string]float64{}
		}
		d.models[model] += cost
	}
}

// pending is a cut batch and what to settle locally once it is applied.
type pending struct {
	b      store.SpendBatch
	counts []int // per b.Keys
}

// New validates cfg and builds an Accountant.
func New(cfg Config) (*Accountant, error) {
	if cfg.Writer == nil {
		return nil, errors.New("spend: Writer is required")
	}
	if cfg.Interval < 0 || cfg.MaxPendingLogs < 0 || cfg.FlushTimeout < 0 {
		return nil, errors.New("spend: interval, limits and timeouts must not be negative")
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	a := &Accountant{
		w: cfg.Writer, local: cfg.Local, obs: cfg.Observers, interval: cfg.Interval,
		maxLogs: cfg.MaxPendingLogs, timeout: cfg.FlushTimeout, log: cfg.Logger,
		keys: map[string]*delta{}, teams: map[string]*delta{}, users: map[string]*delta{},
		members: map[[2]string]float64{}, prefix: hex.EncodeToString(rnd[:]),
	}
	if a.interval == 0 {
		a.interval = DefaultInterval
	}
	if a.maxLogs == 0 {
		a.maxLogs = DefaultMaxPendingLogs
	}
	if a.timeout == 0 {
		a.timeout = DefaultFlushTimeout
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	a.recorded = c("sidecar_spend_requests_total", "Metered requests recorded.")
	a.estimated = c("sidecar_spend_estimated_total", "Metered requests charged by estimate (no usage in the response).")
	a.unpriced = c("sidecar_spend_unpriced_total", "Metered requests whose model is not in the price table (charged the default).")
	a.usd = c("sidecar_spend_usd_total", "USD metered on this replica.")
	a.dropped = c("sidecar_spend_logs_dropped_total", "Spend-log rows dropped because too many were pending (the spend itself is kept).")
	flushes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_spend_flushes_total", Help: "Spend flushes to the store, by result."}, []string{"result"})
	a.flushOK, a.flushErr = flushes.WithLabelValues("ok"), flushes.WithLabelValues("error")
	a.flushDur = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sidecar_spend_flush_seconds", Help: "Duration of spend flushes.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}})
	a.pendingKeys = g("sidecar_spend_pending_keys", "Keys with spend not yet in the store.")
	a.pendingLogs = g("sidecar_spend_pending_logs", "Spend-log rows not yet in the store.")
	a.pendingUSD = g("sidecar_spend_pending_usd", "USD metered here and not yet in the store.")
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{a.recorded, a.estimated, a.unpriced, a.usd, a.dropped, flushes, a.flushDur, a.pendingKeys, a.pendingLogs, a.pendingUSD} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("spend: register metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Record applies r's cost to the key at once (Local) and queues it for
// the store. It never blocks on the store.
func (a *Accountant) Record(r *Record) {
	a.recorded.Inc()
	if r.Estimated {
		a.estimated.Inc()
	}
	if r.Unpriced {
		a.unpriced.Inc()
	}
	cost := r.Cost
	if cost < 0 || cost != cost { // negative or NaN: a pricing bug must not refund
		cost = 0
	}
	a.usd.Add(cost)
	if cost > 0 && r.KeyHash != "" && a.local != nil {
		a.local.AddSpend(r.KeyHash, cost)
	}
	a.mu.Lock()
	if cost > 0 {
		if r.KeyHash != "" {
			d := a.keys[r.KeyHash]
			if d == nil {
				d = &delta{}
				a.keys[r.KeyHash] = d
			}
			d.add(r.Model, cost)
		}
		if r.TeamID != "" {
			addTo(a.teams, r.TeamID, r.Model, cost)
		}
		if r.UserID != "" {
			addTo(a.users, r.UserID, r.Model, cost)
		}
		if r.TeamID != "" && r.UserID != "" {
			a.members[[2]string{r.TeamID, r.UserID}] += cost
		}
	}
	if r.RequestID != "" {
		if len(a.logs) < a.maxLogs {
			a.logs = append(a.logs, logRow(r, cost))
		} else {
			a.dropped.Inc()
		}
	}
	a.pendingKeys.Set(float64(len(a.keys)))
	a.pendingLogs.Set(float64(len(a.logs)))
	a.pendingUSD.Add(cost)
	a.mu.Unlock()
	for _, o := range a.obs {
		o.Spent(r)
	}
}

func addTo(m map[string]*delta, id, model string, cost float64) {
	d := m[id]
	if d == nil {
		d = &delta{}
		m[id] = d
	}
	d.add(model, cost)
}

func logRow(r *Record, cost float64) store.SpendLog {
	md := map[string]any{"status_code": r.HTTPStatus}
	if r.KeyAlias != "" {
		md["user_api_key_alias"] = r.KeyAlias
	}
	if r.Estimated {
		md["usage_estimated"] = true
	}
	if r.Unpriced {
		md["model_unpriced"] = true
	}
	return store.SpendLog{
		RequestID: r.RequestID, CallType: r.CallType, APIKey: r.KeyHash, Spend: cost,
		PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
		TotalTokens: r.PromptTokens + r.CompletionTokens, StartTime: r.Start, EndTime: r.End,
		Model: r.Model, ModelGroup: r.Model, CustomLLMProvider: r.Provider, User: r.UserID, TeamID: r.TeamID,
		EndUser: r.EndUser, Status: r.Status, Metadata: md, RequestDurationMS: r.End.Sub(r.Start).Milliseconds(),
	}
}

// Run flushes every interval until ctx ends, then flushes what is left
// (bounded by the flush timeout, retried until then) and returns.
func (a *Accountant) Run(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, a.timeout)
			if err := a.Flush(fctx); err != nil && ctx.Err() == nil {
				a.log.Warn("spend flush failed; kept for the next one", "err", err)
			}
			cancel()
		case <-ctx.Done():
			return a.finalFlush()
		}
	}
}

func (a *Accountant) finalFlush() error {
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	for {
		err := a.Flush(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			usd, keys := a.Pending()
			a.log.Error("spend not flushed at shutdown: lost", "err", err, "usd", usd, "keys", keys)
			return fmt.Errorf("spend: final flush: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Pending reports the USD and number of keys not yet in the store.
func (a *Accountant) Pending() (usd float64, keys int) {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range a.keys {
		usd += d.spend
	}
	keys = len(a.keys)
	if a.retry != nil {
		for _, k := range a.retry.b.Keys {
			usd += k.Spend
		}
		keys += len(a.retry.b.Keys)
	}
	return usd, keys
}

// Flush writes everything recorded so far: first a batch that failed
// before (as it was, same id), then a new batch of what accumulated since.
func (a *Accountant) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	if a.retry != nil {
		if err := a.apply(ctx, a.retry); err != nil {
			return err
		}
		a.retry = nil
	}
	p := a.cut()
	if p == nil {
		return nil
	}
	if err := a.apply(ctx, p); err != nil {
		a.retry = p
		return err
	}
	return nil
}

// cut takes what accumulated into a batch, keys and roll-ups sorted.
func (a *Accountant) cut() *pending {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.keys)+len(a.teams)+len(a.users)+len(a.members)+len(a.logs) == 0 {
		return nil
	}
	a.seq++
	p := &pending{b: store.SpendBatch{ID: fmt.Sprintf("%s-%d-%d", a.prefix, time.Now().UnixNano(), a.seq)}}
	for _, tok := range slices.Sorted(mapKeys(a.keys)) {
		d := a.keys[tok]
		p.b.Keys = append(p.b.Keys, store.KeySpend{Token: tok, Spend: d.spend, ModelSpend: d.models})
		p.counts = append(p.counts, d.n)
	}
	for _, id := range slices.Sorted(mapKeys(a.teams)) {
		p.b.Teams = append(p.b.Teams, store.EntitySpend{ID: id, Spend: a.teams[id].spend, ModelSpend: a.teams[id].models})
	}
	for _, id := range slices.Sorted(mapKeys(a.users)) {
		p.b.Users = append(p.b.Users, store.EntitySpend{ID: id, Spend: a.users[id].spend, ModelSpend: a.users[id].models})
	}
	for _, m := range slices.SortedFunc(mapKeys(a.members), func(x, y [2]string) int {
		if x[0] != y[0] {
			return compare(x[0], y[0])
		}
		return compare(x[1], y[1])
	}) {
		p.b.Memberships = append(p.b.Memberships, store.MembershipSpend{TeamID: m[0], UserID: m[1], Spend: a.members[m]})
	}
	p.b.Logs = a.logs
	a.keys, a.teams, a.users = map[string]*delta{}, map[string]*delta{}, map[string]*delta{}
	a.members, a.logs = map[[2]string]float64{}, nil
	a.pendingKeys.Set(0)
	a.pendingLogs.Set(0)
	return p
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (a *Accountant) apply(ctx context.Context, p *pending) error {
	start := time.Now()
	stored, err := a.w.ApplySpend(ctx, &p.b)
	a.flushDur.Observe(time.Since(start).Seconds())
	if err != nil {
		a.flushErr.Inc()
		return fmt.Errorf("spend: flush %d keys, %d logs: %w", len(p.b.Keys), len(p.b.Logs), err)
	}
	a.flushOK.Inc()
	var usd float64
	for i, k := range p.b.Keys {
		usd += k.Spend
		if a.local != nil {
			a.local.SettleSpend(k.Token, k.Spend, p.counts[i], stored[k.Token])
		}
	}
	a.pendingUSD.Sub(usd)
	return nil
}

func mapKeys[K comparable, V any](m map[K]V) func(yield func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
