// Package webhook delivers LiteLLM's webhook events (the WebhookEvent JSON
// of LiteLLM's alerting: key events and budget events) to configured URLs:
// after the fact, asynchronously, with retries and exponential backoff, each
// delivery signed with HMAC-SHA256. Sending never blocks and never fails the
// caller: a full queue drops the event and counts it.
//
// Signature: every request carries
//
//	X-Sidecar-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// (when a secret is configured), X-Sidecar-Event (the event name) and
// X-Sidecar-Delivery (a random id, the same on every retry of one delivery,
// so a receiver can drop duplicates). A receiver verifies the HMAC over the
// exact body bytes and rejects an old t to stop replays.
//
// Delivery: a 2xx answer is delivered. 408, 429, 5xx and transport errors
// are retried (MaxAttempts in all, backoff doubling from Backoff up to
// MaxBackoff, with jitter); any other status is final. Events are at least
// once per URL while the process lives; on shutdown, queued events get one
// last attempt within the drain budget and the rest are counted as dropped:
// the queue is in memory, so a crash loses what it held.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Event is LiteLLM's WebhookEvent (CallInfo plus event, event_group and
// event_message), as LiteLLM serialises it. Token is the key's hash, never a
// raw key.
type Event struct {
	Event                 string   `json:"event"`       // key_created, key_updated, ..., budget_crossed, soft_budget_crossed, threshold_crossed
	EventGroup            string   `json:"event_group"` // key, team, user
	EventMessage          string   `json:"event_message"`
	Spend                 float64  `json:"spend"`
	MaxBudget             *float64 `json:"max_budget"`
	SoftBudget            *float64 `json:"soft_budget"`
	Token                 *string  `json:"token"`
	CustomerID            *string  `json:"customer_id"`
	UserID                *string  `json:"user_id"`
	TeamID                *string  `json:"team_id"`
	TeamAlias             *string  `json:"team_alias"`
	UserEmail             *string  `json:"user_email"`
	KeyAlias              *string  `json:"key_alias"`
	ProjectedExceededDate *string  `json:"projected_exceeded_date"`
	ProjectedSpend        *float64 `json:"projected_spend"`
}

// Header names of a delivery.
const (
	HeaderSignature = "X-Sidecar-Signature"
	HeaderEvent     = "X-Sidecar-Event"
	HeaderDelivery  = "X-Sidecar-Delivery"
)

// Defaults for zero Config fields.
const (
	DefaultQueueSize   = 1024
	DefaultMaxAttempts = 6
	DefaultBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultTimeout     = 5 * time.Second
	DefaultDrain       = 5 * time.Second
)

// Config configures a Sender.
type Config struct {
	// URLs receive every event. Empty: Send does nothing.
	URLs []string
	// Secret signs deliveries (HMAC-SHA256). Empty: unsigned.
	Secret string
	// QueueSize bounds events waiting for delivery (0 = DefaultQueueSize).
	QueueSize int
	// MaxAttempts per URL and event, the first included (0 = DefaultMaxAttempts).
	MaxAttempts int
	// Backoff is the first retry delay, doubled each retry up to MaxBackoff
	// (0 = DefaultBackoff, DefaultMaxBackoff).
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one HTTP attempt (0 = DefaultTimeout).
	Timeout time.Duration
	// Drain bounds the last delivery attempt of queued events at shutdown
	// (0 = DefaultDrain).
	Drain time.Duration
	// Client sends the requests. nil = a client with Timeout.
	Client *http.Client
	// Logger receives delivery failures. nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics. nil registers nothing.
	Registerer prometheus.Registerer
}

type delivery struct {
	id    string
	event string
	body  []byte
}

// Sender queues and delivers events. Create it with New and run Run.
type Sender struct {
	cfg   Config
	urls  []string
	queue chan delivery
	log   *slog.Logger
	sleep func(ctx context.Context, d time.Duration) error

	queued    prometheus.Gauge
	delivered prometheus.Counter
	failed    prometheus.Counter
	dropped   prometheus.Counter
	attempts  *prometheus.CounterVec
}

// New validates cfg and builds a Sender.
func New(cfg Config) (*Sender, error) {
	var errs []error
	for _, u := range cfg.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, fmt.Errorf("webhook URL %q: want an absolute http(s) URL", u))
		}
	}
	if cfg.QueueSize < 0 || cfg.MaxAttempts < 0 || cfg.Backoff < 0 || cfg.MaxBackoff < 0 || cfg.Timeout < 0 || cfg.Drain < 0 {
		errs = append(errs, errors.New("webhook: negative setting"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.QueueSize, DefaultQueueSize)
	def(&cfg.MaxAttempts, DefaultMaxAttempts)
	defd(&cfg.Backoff, DefaultBackoff)
	defd(&cfg.MaxBackoff, DefaultMaxBackoff)
	defd(&cfg.Timeout, DefaultTimeout)
	defd(&cfg.Drain, DefaultDrain)
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout}
	}
	s := &Sender{cfg: cfg, urls: cfg.URLs, queue: make(chan delivery, cfg.QueueSize), log: cfg.Logger, sleep: sleepCtx}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.queued = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_webhook_queue_length", Help: "Webhook events waiting for delivery."})
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_webhook_events_total", Help: "Webhook events per URL by outcome: delivered, failed (gave up after retries or a final status), dropped (queue full or shut down)."}, []string{"outcome"})
	s.delivered, s.failed, s.dropped = events.WithLabelValues("delivered"), events.WithLabelValues("failed"), events.WithLabelValues("dropped")
	s.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_webhook_attempts_total", Help: "Webhook HTTP attempts by result: 2xx, 4xx, 5xx, error."}, []string{"result"})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.queued, events, s.attempts} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Enabled reports whether any URL is configured.
func (s *Sender) Enabled() bool { return s != nil && len(s.urls) > 0 }

// Send queues ev for every URL. It never blocks: with the queue full the
// event is dropped, counted and logged. A nil Sender or one without URLs
// does nothing.
func (s *Sender) Send(ev Event) {
	if !s.Enabled() {
		return
	}
	body, err := json.Marshal(ev)
	if err != nil { // cannot happen for Event's field types
		s.log.Error("webhook: encode event", slog.String("event", ev.Event), slog.Any("error", err))
		return
	}
	d := delivery{id: newID(), event: ev.Event, body: body}
	select {
	case s.queue <- d:
		s.queued.Inc()
	default:
		s.dropped.Add(float64(len(s.urls)))
		s.log.Warn("webhook queue full: event dropped", slog.String("event", ev.Event), slog.Int("queue_size", cap(s.queue)))
	}
}

// Run delivers queued events until ctx ends, then gives what is still queued
// one attempt within the drain budget. It returns nil.
func (s *Sender) Run(ctx context.Context) error {
	for {
		// Shutdown first: once ctx is done, queued events go to drain (one
		// attempt each within its budget), not to a delivery whose context
		// is already cancelled.
		if ctx.Err() != nil {
			s.drain()
			return nil
		}
		select {
		case d := <-s.queue:
			s.queued.Dec()
			s.deliverAll(ctx, d)
		case <-ctx.Done():
			s.drain()
			return nil
		}
	}
}

func (s *Sender) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Drain)
	defer cancel()
	for {
		select {
		case d := <-s.queue:
			s.queued.Dec()
			for _, u := range s.urls {
				if ctx.Err() != nil {
					s.dropped.Inc()
					continue
				}
				if s.attempt(ctx, u, d) == nil {
					s.delivered.Inc()
				} else {
					s.failed.Inc()
				}
			}
		default:
			return
		}
	}
}

// deliverAll sends d to every URL concurrently, each with its own retries,
// so a receiver that is down does not hold up the others.
func (s *Sender) deliverAll(ctx context.Context, d delivery) {
	var wg sync.WaitGroup
	for _, u := range s.urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.deliver(ctx, u, d)
		}()
	}
	wg.Wait()
}

func (s *Sender) deliver(ctx context.Context, u string, d delivery) {
	backoff := s.cfg.Backoff
	var err error
	for n := 1; n <= s.cfg.MaxAttempts; n++ {
		err = s.attempt(ctx, u, d)
		if err == nil {
			s.delivered.Inc()
			return
		}
		var fe finalError
		if errors.As(err, &fe) || n == s.cfg.MaxAttempts {
			break
		}
		// Full jitter in [backoff/2, backoff).
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		if s.sleep(ctx, wait) != nil {
			s.dropped.Inc()
			return
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
	s.failed.Inc()
	s.log.Warn("webhook delivery failed", slog.String("event", d.event), slog.String("url", redactURL(u)),
		slog.String("delivery", d.id), slog.Any("error", err))
}

// finalError is an answer not worth retrying (a 4xx other than 408/429).
type finalError struct{ status int }

func (e finalError) Error() string { return "receiver answered " + strconv.Itoa(e.status) }

func (s *Sender) attempt(ctx context.Context, u string, d delivery) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(d.body))
	if err != nil {
		return finalError{}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "virtual-keys-sidecar")
	req.Header.Set(HeaderEvent, d.event)
	req.Header.Set(HeaderDelivery, d.id)
	if s.cfg.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(s.cfg.Secret, time.Now(), d.body))
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		s.attempts.WithLabelValues("error").Inc()
		return err
	}
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		s.attempts.WithLabelValues("2xx").Inc()
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		s.attempts.WithLabelValues(strconv.Itoa(c/100) + "xx").Inc()
		return fmt.Errorf("receiver answered %d", c)
	default:
		s.attempts.WithLabelValues("4xx").Inc()
		return finalError{status: c}
	}
}

// Sign returns the X-Sidecar-Signature value for body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a X-Sidecar-Signature value against body: the HMAC must
// match and t must be within maxAge of now. It is what a receiver runs.
func Verify(secret, header string, body []byte, now time.Time, maxAge time.Duration) error {
	var ts, sig string
	for _, part := range bytes.Split([]byte(header), []byte(",")) {
		k, v, _ := bytes.Cut(part, []byte("="))
		switch string(k) {
		case "t":
			ts = string(v)
		case "v1":
			sig = string(v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return errors.New("webhook: malformed signature header")
	}
	want := Sign(secret, time.Unix(sec, 0), body)
	if !hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig)) {
		return errors.New("webhook: signature mismatch")
	}
	if age := now.Sub(time.Unix(sec, 0)); age > maxAge || age < -maxAge {
		return errors.New("webhook: signature too old")
	}
	return nil
}

func newID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparseable)"
	}
	p.User = nil
	p.RawQuery = ""
	return p.String()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
