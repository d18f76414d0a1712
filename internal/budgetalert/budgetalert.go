// Package budgetalert raises LiteLLM's budget alerts for keys
// (slack_alerting's budget_alerts, event_group "key") from the spend this
// replica meters: it is a spend.Observer, told of every recorded request
// after its cost was applied to the key's cached spend.
//
// Events, as LiteLLM decides them from the key's spend, max_budget and
// soft_budget (metadata.soft_budget, as our management API keeps it):
//   - budget_crossed: spend >= max_budget ("Key Budget: Budget Crossed\n Total Budget:`<max>`");
//   - threshold_crossed: at most 5% of max_budget left ("Key Budget: 5% Threshold Crossed "),
//     else at most 15% left ("Key Budget: 15% Threshold Crossed");
//   - soft_budget_crossed: spend >= soft_budget (never denies).
//
// Each is sent once per crossing: a key's max-budget level only rises
// (none, 15%, 5%, crossed) until its spend falls back (a budget reset, a
// raised budget), which re-arms it; likewise the soft budget. LiteLLM
// dedupes by event name for 24 hours instead, so it sends one
// threshold_crossed where we send one per level. Every alert is one log
// line, one count in sidecar_budget_alerts_total{event} and one webhook
// event handed to the sender (asynchronous; never on the Check's path).
//
// State is in memory, per replica: each replica alerts once per crossing
// it observes. The soft budget's is also kept in the key's
// soft_budget_cooldown column, as LiteLLM keeps it: set once the alert
// went out, cleared when the spend is back under the soft budget (written
// asynchronously by Run through Config.Store). A key whose flag is set is
// not alerted again, after a restart or by another replica that has
// reloaded it. Max-budget levels are in memory only: after a restart a key
// already past a level is alerted again at its next metered request.
package budgetalert

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/spend"
	"github.com/virtualkeys/sidecar/internal/webhook"
)

// Sender delivers webhook events without blocking (*webhook.Sender).
type Sender interface {
	Send(webhook.Event)
}

// Store writes the soft_budget_cooldown flag (store.Store's Update).
type Store interface {
	Update(ctx context.Context, hash string, fn func(k *keys.Key) error) (*keys.Key, error)
}

// Keys finds a key's cached entry by hex hash without loading it
// (*cache.Cache).
type Keys interface {
	Cached(hash string) *cache.Entry
}

// Config configures an Alerter.
type Config struct {
	Keys   Keys   // required
	Sender Sender // nil: log and metric only
	// Store receives soft_budget_cooldown writes (Run applies them); nil
	// keeps the soft budget's state in memory only.
	Store Store
	// Now is the clock (temporary budget increases). nil = time.Now.
	Now        func() time.Time
	Logger     *slog.Logger          // nil discards
	Registerer prometheus.Registerer // nil registers nothing
	// MaxKeys bounds the keys whose state is kept (0 = 1,000,000); beyond
	// it the state is cleared, which may repeat an alert.
	MaxKeys int
}

// level is how far a key is into its max_budget.
type level uint8

const (
	levelNone    level = iota
	level15            // <= 15% left
	level5             // <= 5% left
	levelCrossed       // spend >= max_budget
)

type state struct {
	max        level
	soft       bool
	spend      float64 // when stored
	budget, sb float64 // max and soft budget when stored
}

// Alerter decides and sends the alerts. Create it with New.
type Alerter struct {
	keys    Keys
	send    Sender
	now     func() time.Time
	log     *slog.Logger
	maxKeys int
	alerts  *prometheus.CounterVec
	store   Store
	writes  chan cooldown

	mu sync.Mutex
	st map[string]state
}

// cooldown is a soft_budget_cooldown write.
type cooldown struct {
	hash string
	on   bool
}

// New builds an Alerter.
func New(cfg Config) (*Alerter, error) {
	if cfg.Keys == nil {
		return nil, errors.New("budgetalert: Keys is required")
	}
	a := &Alerter{keys: cfg.Keys, send: cfg.Sender, now: cfg.Now, log: cfg.Logger, maxKeys: cfg.MaxKeys, st: map[string]state{},
		store: cfg.Store, writes: make(chan cooldown, 1024)}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.maxKeys <= 0 {
		a.maxKeys = 1_000_000
	}
	a.alerts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_budget_alerts_total",
		Help: "Budget alerts raised (LiteLLM webhook events budget_crossed, threshold_crossed, soft_budget_crossed)."}, []string{"event"})
	for _, e := range []string{"budget_crossed", "threshold_crossed", "soft_budget_crossed"} {
		a.alerts.WithLabelValues(e)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(a.alerts); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Spent implements spend.Observer.
func (a *Alerter) Spent(r *spend.Record) {
	if r.KeyHash == "" || r.Cost <= 0 {
		return
	}
	e := a.keys.Cached(r.KeyHash)
	if e == nil {
		return
	}
	a.observe(e)
}

// observe compares the key's spend with its budgets and alerts on new
// crossings.
func (a *Alerter) observe(e *cache.Entry) {
	now := a.now()
	soft, hasSoft := softBudget(e)
	// Spend is read under the lock: metered spend only grows between
	// resets, so states are stored in spend order and a crossing cannot be
	// undone by a request that read an older spend.
	a.mu.Lock()
	spent := e.Spend()
	if e.BudgetResetDue(now) {
		spent = 0 // past its reset, as the Check sees it
	}
	var lv level
	var max float64
	if e.HasBudget {
		max = e.Budget(now)
		lv = levelOf(spent, max)
	}
	softCrossed := hasSoft && spent >= soft

	old, seen := a.st[e.Key.Token]
	if !seen && softCrossed && e.Key.SoftBudgetCooldown {
		old.soft = true // alerted before (LiteLLM's cooldown flag): not again
	}
	if hasSoft && !softCrossed && e.Key.SoftBudgetCooldown && (!seen || old.soft) {
		a.write(cooldown{e.Key.Token, false}) // back under: re-arm for good
	}
	next := state{max: lv, soft: softCrossed, spend: spent, budget: max, sb: soft}
	// A level is re-armed only when the spend really fell (a budget reset)
	// or the budget changed; settling a flush may move the cached spend by
	// a rounding error, which must not repeat an alert.
	fell := spent < old.spend-1e-9*math.Max(1, math.Abs(old.spend))
	if seen && !fell && max == old.budget && lv < old.max {
		next.max = old.max
	}
	if seen && !fell && soft == old.sb && old.soft {
		next.soft = true
	}
	if next != old || !seen {
		if len(a.st) >= a.maxKeys && !seen {
			clear(a.st)
		}
		a.st[e.Key.Token] = next
	}
	a.mu.Unlock()

	if lv > old.max {
		ev := a.event(e, spent)
		ev.MaxBudget = &max
		switch lv {
		case levelCrossed:
			ev.Event, ev.EventMessage = "budget_crossed", "Key Budget: Budget Crossed\n Total Budget:`"+pyFloat(max)+"`"
		case level5:
			ev.Event, ev.EventMessage = "threshold_crossed", "Key Budget: 5% Threshold Crossed "
		default:
			ev.Event, ev.EventMessage = "threshold_crossed", "Key Budget: 15% Threshold Crossed"
		}
		if hasSoft {
			ev.SoftBudget = &soft
		}
		a.raise(ev)
	}
	if softCrossed && !old.soft {
		ev := a.event(e, spent)
		ev.Event, ev.EventMessage = "soft_budget_crossed", "Soft Budget Crossed: Total Soft Budget:`"+pyFloat(soft)+"`"
		ev.SoftBudget = &soft
		if e.HasBudget {
			ev.MaxBudget = &max
		}
		a.raise(ev)
		if !e.Key.SoftBudgetCooldown {
			a.write(cooldown{e.Key.Token, true})
		}
	}
}

// write queues a soft_budget_cooldown write without blocking.
func (a *Alerter) write(c cooldown) {
	if a.store == nil {
		return
	}
	select {
	case a.writes <- c:
	default:
		a.log.Warn("soft_budget_cooldown write dropped: queue full", "key_hash", c.hash[:min(12, len(c.hash))])
	}
}

// Run applies the soft_budget_cooldown writes until ctx ends.
func (a *Alerter) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-a.writes:
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := a.store.Update(wctx, c.hash, func(k *keys.Key) error {
				k.SoftBudgetCooldown = c.on
				return nil
			})
			cancel()
			if err != nil && ctx.Err() == nil {
				a.log.Warn("soft_budget_cooldown not written", "key_hash", c.hash[:min(12, len(c.hash))], "err", err)
			}
		}
	}
}

func levelOf(spent, max float64) level {
	switch {
	case math.IsNaN(spent) || math.IsNaN(max) || spent >= max:
		return levelCrossed
	case max <= 0:
		return levelNone
	}
	left := (max - spent) / max
	switch {
	case left <= 0.05:
		return level5
	case left <= 0.15:
		return level15
	}
	return levelNone
}

func softBudget(e *cache.Entry) (float64, bool) {
	f, ok := keys.Number(e.Key.Metadata["soft_budget"])
	return f, ok && !math.IsNaN(f)
}

func (a *Alerter) event(e *cache.Entry, spent float64) webhook.Event {
	k := e.Key
	token := e.Key.Token
	return webhook.Event{EventGroup: "key", Spend: spent, Token: &token, UserID: k.UserID, TeamID: k.TeamID, KeyAlias: k.KeyAlias}
}

func (a *Alerter) raise(ev webhook.Event) {
	a.alerts.WithLabelValues(ev.Event).Inc()
	alias := ""
	if ev.KeyAlias != nil {
		alias = *ev.KeyAlias
	}
	attrs := []any{"event", ev.Event, "key_hash", (*ev.Token)[:min(12, len(*ev.Token))], "key_alias", alias, "spend", ev.Spend}
	if ev.MaxBudget != nil {
		attrs = append(attrs, "max_budget", *ev.MaxBudget)
	}
	if ev.SoftBudget != nil {
		attrs = append(attrs, "soft_budget", *ev.SoftBudget)
	}
	a.log.Warn("budget alert", attrs...)
	if a.send != nil {
		a.send.Send(ev)
	}
}

// pyFloat renders a float as Python's str(float) does for ordinary values.
func pyFloat(f float64) string {
	if v := math.Abs(f); v != 0 && (v >= 1e16 || v < 1e-4) && !math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".eEnN") {
		s += ".0"
	}
	return s
}
