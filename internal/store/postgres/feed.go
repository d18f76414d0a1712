package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/keys"
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

// feed is the change-feed listener: one dedicated connection LISTENing on
// feedChannel, run by its own goroutine, fanning events out to subscribers.
type feed struct {
	cfg *pgx.ConnConfig
	log *slog.Logger
	reg prometheus.Registerer

	cancel context.CancelFunc
	done   chan struct{}
	// ready is closed once the first LISTEN succeeded.
	ready     chan struct{}
	readyOnce sync.Once

	// mu guards subs and connected, and is held while events are delivered,
	// so a new subscriber's EventReset cannot overtake or follow another
	// event out of order.
	mu        sync.Mutex
	subs      map[uint64]func(store.Event)
	nextID    uint64
	connected bool

	connectedG    prometheus.Gauge
	reconnects    prometheus.Counter
	notifications prometheus.Counter

	// pid is the listener backend's pid (tests).
	pid atomic.Uint32
}

func newFeed(cfg *pgx.ConnConfig, log *slog.Logger, reg prometheus.Registerer) *feed {
	return &feed{
		cfg:   cfg,
		log:   log,
		reg:   reg,
		subs:  map[uint64]func(store.Event){},
		ready: make(chan struct{}),
		connectedG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_store_feed_connected",
			Help: "1 while the Postgres change-feed listener is connected and listening.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_store_feed_reconnects_total",
			Help: "Times the Postgres change-feed listener lost its connection and reconnected.",
		}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_store_feed_notifications_total",
			Help: "Notifications received on the Postgres change feed.",
		}),
	}
}

func (f *feed) registerMetrics() error {
	if f.reg == nil {
		return nil
	}
	// A store reopened on the same registry shares the collectors.
	if err := register(f.reg, &f.connectedG); err != nil {
		return err
	}
	if err := register(f.reg, &f.reconnects); err != nil {
		return err
	}
	return register(f.reg, &f.notifications)
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
	go func() {
		defer close(f.done)
		f.run(ctx)
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

func (f *feed) setConnected(c bool) {
	f.mu.Lock()
	f.connected = c
	f.mu.Unlock()
	if c {
		f.connectedG.Set(1)
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
	for _, fn := range f.subs {
		for _, e := range evs {
			fn(e)
		}
	}
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
	for {
		wctx, cancel := context.WithTimeout(ctx, feedIdlePing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
				// Idle: make sure the connection is still alive.
				pctx, cancel := context.WithTimeout(ctx, feedPingTimeout)
				err = conn.Ping(pctx)
				cancel()
				if err != nil {
					return true, err
				}
				continue
			}
			return true, err
		}
		f.notifications.Inc()
		f.emit(f.decode(n.Payload)...)
	}
}

type payload struct {
	Op        string   `json:"op"`
	Token     string   `json:"token"`
	OldToken  *string  `json:"old_token"`
	SpendOnly bool     `json:"spend_only"`
	Spend     *float64 `json:"spend"`
}

// decode turns a notification payload into events. Anything it cannot read
// becomes EventReset: purging everything is always safe.
func (f *feed) decode(raw string) []store.Event {
	if evs, ok := decodeOrg(raw); ok {
		return evs
	}
	var p payload
	if err := json.Unmarshal([]byte(raw), &p); err != nil || p.Token == "" {
		f.log.Warn("postgres: unreadable change-feed payload; resetting caches", "len", len(raw), "err", err)
		return []store.Event{{Kind: store.EventReset}}
	}
	if p.SpendOnly && p.Spend != nil && p.OldToken == nil {
		return []store.Event{{Kind: store.EventSpend, Token: p.Token, Spend: *p.Spend}}
	}
	evs := []store.Event{{Kind: store.EventChanged, Token: p.Token}}
	if p.OldToken != nil && *p.OldToken != "" && *p.OldToken != p.Token {
		evs = append(evs, store.Event{Kind: store.EventChanged, Token: *p.OldToken})
	}
	f.log.Debug("postgres: key changed", "op", p.Op, "key", keys.Redact(p.Token))
	return evs
}
