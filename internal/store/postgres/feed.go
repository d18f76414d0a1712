package postgres

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/store"
)

const (
	feedChannel         = "sidecar_key_changes"
	feedApplicationName = "sidecar-feed"
)

// Feed timing. Variables so tests can shorten them.
var (
	feedIdlePing    = 30 * time.Second
	feedPingTimeout = 5 * time.Second
	feedBackoffMin  = 100 * time.Millisecond
	feedBackoffMax  = 5 * time.Second
)

// Heartbeat defaults (Config.HeartbeatInterval, Config.DeafAfter).
const (
	defaultHeartbeat  = 5 * time.Second
	deafAfterBeats    = 3
	heartbeatSendWait = 5 * time.Second
)

// deafHint is what the deafness log line tells the operator to do.
const deafHint = "notifications do not reach the LISTEN connection: if --database-url goes through PgBouncer in transaction or statement pooling mode " +
	"(or any proxy that does not keep a session), set --feed-database-url to a direct Postgres URL, or to a PgBouncer database in session pooling mode"

// FeedStatus is the change feed's state, for readiness details and
// operators.
type FeedStatus struct {
	// Connected: the listener is connected and LISTENing.
	Connected bool
	// Deaf: connected, but the store's own heartbeat notification has not
	// come back for longer than the deafness bound; invalidations are not
	// arriving either.
	Deaf bool
	// LastHeartbeat is when the listener last heard this store's heartbeat
	// (zero: never).
	LastHeartbeat time.Time
	// Detail says what is wrong, for /readyz and logs; empty when healthy.
	Detail string
}

// feed is the change-feed listener: one dedicated connection LISTENing on
// feedChannel, run by its own goroutine, fanning events out to
// subscribers; and the heartbeat, a NOTIFY sent through the pool on an
// interval that the listener must hear back.
type feed struct {
	cfg *pgx.ConnConfig
	log *slog.Logger
	reg prometheus.Registerer
	// notify sends a payload on feedChannel through the pool.
	notify func(ctx context.Context, payload string) error
	now    func() time.Time

	id        string // this store's heartbeat id
	hbPayload string
	interval  time.Duration
	deafAfter time.Duration

	cancel context.CancelFunc
	done   chan struct{}
	// ready is closed once the first LISTEN succeeded.
	ready     chan struct{}
	readyOnce sync.Once

	// mu guards subs, connected, deaf and lastHeard, and is held while
	// events are delivered, so a new subscriber's EventReset cannot
	// overtake or follow another event out of order.
	mu        sync.Mutex
	subs      map[uint64]func(store.Event)
	nextID    uint64
	connected bool
	deaf      bool
	since     time.Time // when the current session started listening
	lastHeard time.Time

	connectedG    prometheus.Gauge
	deafG         prometheus.Gauge
	reconnects    prometheus.Counter
	notifications prometheus.Counter
	purges        prometheus.Counter
	heartbeats    prometheus.Counter

	// pid is the listener backend's pid (tests).
	pid atomic.Uint32
}

func newFeed(cfg *pgx.ConnConfig, log *slog.Logger, reg prometheus.Registerer, interval, deafAfter time.Duration,
	notify func(context.Context, string) error) *feed {
	if interval <= 0 {
		interval = defaultHeartbeat
	}
	if deafAfter <= 0 {
		deafAfter = deafAfterBeats * interval
	}
	var b [8]byte
	_, _ = crand.Read(b[:])
	id := hex.EncodeToString(b[:])
	return &feed{
		cfg:       cfg,
		log:       log,
		reg:       reg,
		notify:    notify,
		now:       time.Now,
		id:        id,
		hbPayload: `{"k":"hb","id":"` + id + `"}`,
		interval:  interval,
		deafAfter: deafAfter,
		subs:      map[uint64]func(store.Event){},
		ready:     make(chan struct{}),
		connectedG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_store_feed_connected",
			Help: "1 while the Postgres change-feed listener is connected and listening.",
		}),
		deafG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_store_feed_deaf",
			Help: "1 while the change-feed listener is connected but does not hear its own heartbeat: invalidations are not arriving (PgBouncer transaction pooling?).",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_store_feed_reconnects_total",
			Help: "Times the Postgres change-feed listener lost its connection and reconnected.",
		}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_store_feed_notifications_total",
			Help: "Notifications received on the Postgres change feed (heartbeats included).",
		}),
		purges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_store_feed_purges_total",
			Help: "Purge notifications received: statements that changed too many keys to list, TRUNCATEs, trigger errors.",
		}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_store_feed_heartbeats_total",
			Help: "This store's own heartbeats heard back on the change feed.",
		}),
	}
}

func (f *feed) registerMetrics() error {
	if f.reg == nil {
		return nil
	}
	// A store reopened on the same registry shares the collectors.
	for _, c := range []*prometheus.Gauge{&f.connectedG, &f.deafG} {
		if err := register(f.reg, c); err != nil {
			return err
		}
	}
	for _, c := range []*prometheus.Counter{&f.reconnects, &f.notifications, &f.purges, &f.heartbeats} {
		if err := register(f.reg, c); err != nil {
			return err
		}
	}
	return nil
}

// register registers *c, or switches *c to the collector already
// registered under its name.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	err := reg.Register(*c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			*c = existing
			return nil
		}
	}
	return err
}

func (f *feed) start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { f.run(ctx) })
	wg.Go(func() { f.beat(ctx) })
	go func() {
		wg.Wait()
		close(f.done)
	}()
}

func (f *feed) stop() {
	f.cancel()
	<-f.done
	f.setConnected(false)
}

func (f *feed) isConnected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connected
}

func (f *feed) status() FeedStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := FeedStatus{Connected: f.connected, Deaf: f.deaf, LastHeartbeat: f.lastHeard}
	switch {
	case !f.connected:
		st.Detail = "change feed disconnected; reconnecting"
	case f.deaf:
		st.Detail = "change feed deaf: no heartbeat heard for over " + f.deafAfter.String() + "; " + deafHint
	}
	return st
}

func (f *feed) setConnected(c bool) {
	f.mu.Lock()
	f.connected = c
	if c {
		f.deaf = false
		f.since = f.now()
	}
	f.mu.Unlock()
	if c {
		f.connectedG.Set(1)
		f.deafG.Set(0)
	} else {
		f.connectedG.Set(0)
	}
}

func (f *feed) subscribe(fn func(store.Event)) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.nextID
	f.nextID++
	f.subs[id] = fn
	if f.connected {
		fn(store.Event{Kind: store.EventReset})
	}
	return func() {
		f.mu.Lock()
		delete(f.subs, id)
		f.mu.Unlock()
	}
}

// emit delivers events to every subscriber, in order, under f.mu.
func (f *feed) emit(evs ...store.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.emitLocked(evs...)
}

func (f *feed) emitLocked(evs ...store.Event) {
	for _, fn := range f.subs {
		for _, e := range evs {
			fn(e)
		}
	}
}

// beat sends the heartbeat through the pool every interval until ctx ends.
// A failed send is not the listener's deafness (the database may be down):
// it is logged at debug level; deafness is declared only by the listener.
func (f *feed) beat(ctx context.Context) {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, heartbeatSendWait)
		err := f.notify(sctx, f.hbPayload)
		cancel()
		if err != nil && ctx.Err() == nil {
			f.log.Debug("postgres: change-feed heartbeat not sent", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// heard records this store's heartbeat; a deaf feed hears again: purge,
// since notifications were lost meanwhile.
func (f *feed) heard() {
	f.heartbeats.Inc()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastHeard = f.now()
	if f.deaf {
		f.deaf = false
		f.deafG.Set(0)
		f.log.Info("postgres: change feed hears its heartbeat again; purging caches (notifications were lost while deaf)")
		f.emitLocked(store.Event{Kind: store.EventReset})
	}
}

// checkDeaf declares the feed deaf when connected and neither the session
// start nor the last heartbeat is within deafAfter.
func (f *feed) checkDeaf() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.connected || f.deaf {
		return
	}
	last := f.since
	if f.lastHeard.After(last) {
		last = f.lastHeard
	}
	if f.now().Sub(last) <= f.deafAfter {
		return
	}
	f.deaf = true
	f.deafG.Set(1)
	f.log.Error("postgres: change feed is deaf: LISTEN succeeded but this store's heartbeat has not come back; "+
		"blocks, deletes and rotations made elsewhere are not seen until it does", "silent_for", f.now().Sub(last).Round(time.Millisecond),
		"bound", f.deafAfter, "hint", deafHint)
	f.emitLocked(store.Event{Kind: store.EventDown})
}

// run connects, listens and reconnects with exponential backoff and jitter
// until ctx is canceled.
func (f *feed) run(ctx context.Context) {
	backoff := feedBackoffMin
	for {
		connected, err := f.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			f.setConnected(false)
			f.reconnects.Inc()
			f.emit(store.Event{Kind: store.EventDown})
			backoff = feedBackoffMin
		}
		f.log.Warn("postgres: change feed disconnected; reconnecting", "err", err, "backoff", backoff)
		// Full jitter in [backoff/2, backoff).
		d := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, feedBackoffMax)
	}
}

// session runs one connection: connect, LISTEN, EventReset, then
// notifications until an error. connected says whether LISTEN succeeded.
func (f *feed) session(ctx context.Context) (connected bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, f.cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+feedChannel); err != nil {
		return false, err
	}
	f.pid.Store(conn.PgConn().PID())
	// Connected only after LISTEN: from here no notification is lost, so
	// subscribers may purge and refill safely.
	f.setConnected(true)
	f.emit(store.Event{Kind: store.EventReset})
	f.readyOnce.Do(func() { close(f.ready) })
	f.log.Info("postgres: change feed listening", "channel", feedChannel)
	lastPing := f.now()
	for {
		// Wake at least every heartbeat interval to check deafness.
		wctx, cancel := context.WithTimeout(ctx, f.interval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		f.checkDeaf()
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
				return true, err
			}
			if f.now().Sub(lastPing) < feedIdlePing {
				continue
			}
			// Idle: make sure the connection is still alive.
			pctx, cancel := context.WithTimeout(ctx, feedPingTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, err
			}
			lastPing = f.now()
			continue
		}
		f.notifications.Inc()
		f.handle(n.Payload)
	}
}

// handle acts on one payload: this store's heartbeat, another store's
// heartbeat (ignored), or change events for the subscribers.
func (f *feed) handle(raw string) {
	evs, hb := f.decode(raw)
	if hb != "" {
		if hb == f.id {
			f.heard()
		}
		return
	}
	f.emit(evs...)
}

// payload is a notification from the triggers (migrations/0001_feed.sql,
// triggers.go) or a heartbeat.
type payload struct {
	Kind string              `json:"k"`
	ID   string              `json:"id"`  // hb
	Why  string              `json:"why"` // purge
	T    []string            `json:"t"`   // changed keys
	S    [][]json.RawMessage `json:"s"`   // [token, spend]
	R    [][]json.RawMessage `json:"r"`   // [token, spend, budget_reset_at]
}

// decode turns a notification payload into events, or returns the
// heartbeat id it carries. Anything it cannot read becomes EventReset:
// purging everything is always safe.
func (f *feed) decode(raw string) (evs []store.Event, heartbeat string) {
	if evs, ok := decodeOrg(raw); ok {
		return evs, ""
	}
	var p payload
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		f.log.Warn("postgres: unreadable change-feed payload; resetting caches", "len", len(raw), "err", err)
		return []store.Event{{Kind: store.EventReset}}, ""
	}
	switch p.Kind {
	case "hb":
		if p.ID != "" {
			return nil, p.ID
		}
	case "purge":
		f.purges.Inc()
		f.log.Info("postgres: change feed: purge", "why", p.Why)
		return []store.Event{{Kind: store.EventReset}}, ""
	case "b":
		evs = make([]store.Event, 0, len(p.T)+len(p.S)+len(p.R))
		for _, t := range p.T {
			evs = append(evs, store.Event{Kind: store.EventChanged, Token: t})
		}
		for _, s := range p.S {
			tok, ok := str(s, 0)
			if !ok {
				return resetOn(f, raw), ""
			}
			spend, ok := num(s, 1)
			if !ok { // NULL, NaN or ±Infinity: reload the row
				evs = append(evs, store.Event{Kind: store.EventChanged, Token: tok})
				continue
			}
			evs = append(evs, store.Event{Kind: store.EventSpend, Token: tok, Spend: spend})
		}
		for _, r := range p.R {
			tok, ok := str(r, 0)
			if !ok {
				return resetOn(f, raw), ""
			}
			spend, ok1 := num(r, 1)
			at, ok2 := timestamp(r, 2)
			if !ok1 || !ok2 {
				evs = append(evs, store.Event{Kind: store.EventChanged, Token: tok})
				continue
			}
			evs = append(evs, store.Event{Kind: store.EventBudgetReset, Token: tok, Spend: spend, BudgetResetAt: at})
		}
		return evs, ""
	}
	return resetOn(f, raw), ""
}

func resetOn(f *feed, raw string) []store.Event {
	f.log.Warn("postgres: unexpected change-feed payload; resetting caches", "len", len(raw))
	return []store.Event{{Kind: store.EventReset}}
}

func str(a []json.RawMessage, i int) (string, bool) {
	if i >= len(a) {
		return "", false
	}
	var s string
	if err := json.Unmarshal(a[i], &s); err != nil || s == "" {
		return "", false
	}
	return s, true
}

// num reads a finite JSON number (Postgres renders NaN and Infinity as
// strings).
func num(a []json.RawMessage, i int) (float64, bool) {
	if i >= len(a) {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(a[i]), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// timestamp reads a TIMESTAMP rendered by Postgres' JSON functions
// ("2026-11-30T00:00:00" or with fractional seconds), as UTC.
func timestamp(a []json.RawMessage, i int) (time.Time, bool) {
	s, ok := str(a, i)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse("2006-01-02T15:04:05.999999", s)
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}
