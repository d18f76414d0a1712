package pricing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config says where prices come from. The zero value prices with the bundled
// table and nothing on top.
type Config struct {
	// Location of a price table in LiteLLM's format replacing the bundled
	// one: a file path or an http(s) URL (e.g. LiteLLM's raw GitHub file).
	// "" uses the bundled table and never reloads.
	Location string
	// Interval between reload checks of Location: a file's modification time
	// and size, a URL fetched with If-None-Match / If-Modified-Since.
	// 0 means 1 minute for a file, 1 hour for a URL.
	Interval time.Duration
	// Custom per-model prices on top of the table: model name to LiteLLM cost
	// keys (input_cost_per_token, output_cost_per_token, ...). Nil means none.
	Custom map[string]map[string]float64
	// Deployments maps Azure OpenAI deployment names to the model to price
	// them as (LiteLLM's base_model). Nil means none.
	Deployments map[string]string
	// Aliases maps a requested model name to the model group it stands for
	// (LiteLLM's router_settings.model_group_alias): a request for an alias
	// is priced as a request for its target (Table.WithAliases). Set it only
	// when something downstream resolves the aliases. Nil means none.
	Aliases map[string]string
	// Client fetches a URL Location. Nil means a client with a 30 s timeout.
	Client *http.Client
	// MaxBytes bounds a table read from Location. 0 means 64 MiB.
	MaxBytes int64
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("pricing: interval %v is negative", c.Interval))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("pricing: max bytes %d is negative", c.MaxBytes))
	}
	if isURL(c.Location) && !strings.HasPrefix(c.Location, "http://") && !strings.HasPrefix(c.Location, "https://") {
		errs = append(errs, fmt.Errorf("pricing: location %q: only http and https URLs are supported", c.Location))
	}
	for d, m := range c.Deployments {
		if d == "" || m == "" {
			errs = append(errs, fmt.Errorf("pricing: deployment mapping %q -> %q: both names are required", d, m))
		}
	}
	for a, m := range c.Aliases {
		if a == "" || m == "" {
			errs = append(errs, fmt.Errorf("pricing: model alias %q -> %q: both names are required", a, m))
		}
	}
	errs = append(errs, ValidateCustom(c.Custom))
	return errors.Join(errs...)
}

func isURL(s string) bool { return strings.Contains(s, "://") }

// Source holds the current table, hot-reloaded from a file or URL; safe for
// concurrent use. A failed reload keeps the last good table (and counts the
// error), so prices never disappear because an upstream file is briefly bad.
type Source struct {
	cfg     Config
	log     *slog.Logger
	cur     atomic.Pointer[Table]
	mu      sync.Mutex // serialises reloads
	modTime time.Time
	size    int64
	etag    string
	lastMod string

	reloads *prometheus.CounterVec
	models  prometheus.Gauge
	last    prometheus.Gauge
}

// NewSource loads the table cfg names (failing if it cannot: a typo in an
// operator's path should stop the start, not silently price with defaults)
// and registers its metrics on reg (nil: not registered). Call Run to keep
// it fresh.
func NewSource(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 64 << 20
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
		if isURL(cfg.Location) {
			cfg.Interval = time.Hour
		}
	}
	s := &Source{
		cfg: cfg, log: log,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_pricing_reloads_total",
			Help: "Price table reload checks by result (loaded, unchanged, error).",
		}, []string{"result"}),
		models: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_pricing_models", Help: "Models in the current price table (custom prices included).",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_pricing_last_load_timestamp_seconds", Help: "When the current price table was loaded.",
		}),
	}
	for _, r := range []string{"loaded", "unchanged", "error"} {
		s.reloads.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.reloads, s.models, s.last} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("pricing: register metrics: %w", err)
			}
		}
	}
	if cfg.Location == "" {
		t, err := Default().With(cfg.Custom, cfg.Deployments)
		if err != nil {
			return nil, err
		}
		s.store(t.WithAliases(cfg.Aliases))
		return s, nil
	}
	if _, err := s.Reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Table returns the current table.
func (s *Source) Table() *Table { return s.cur.Load() }

func (s *Source) store(t *Table) {
	s.cur.Store(t)
	s.models.Set(float64(t.Len()))
	s.last.SetToCurrentTime()
}

// Run reloads every Interval until ctx ends; it returns nil then. Errors are
// logged and counted; the last good table stays.
func (s *Source) Run(ctx context.Context) error {
	if s.cfg.Location == "" {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if changed, err := s.Reload(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.log.LogAttrs(ctx, slog.LevelWarn, "price table reload failed; keeping the last good table",
					slog.String("location", s.cfg.Location), slog.String("error", err.Error()))
			} else if changed {
				s.log.LogAttrs(ctx, slog.LevelInfo, "price table reloaded",
					slog.String("location", s.cfg.Location), slog.Int("models", s.Table().Len()))
			}
		}
	}
}

// Reload checks Location now and swaps the table in if it changed. It is
// what Run calls every Interval; tests and an admin hook may call it directly.
func (s *Source) Reload(ctx context.Context) (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed, err = s.reload(ctx)
	switch {
	case err != nil:
		s.reloads.WithLabelValues("error").Inc()
	case changed:
		s.reloads.WithLabelValues("loaded").Inc()
	default:
		s.reloads.WithLabelValues("unchanged").Inc()
	}
	return changed, err
}

func (s *Source) reload(ctx context.Context) (changed bool, err error) {
	var data []byte
	if isURL(s.cfg.Location) {
		d, etag, lastMod, notModified, err := s.fetch(ctx)
		if err != nil || notModified {
			return false, err
		}
		data = d
		defer func() {
			if s.cur.Load() != nil && err == nil {
				s.etag, s.lastMod = etag, lastMod
			}
		}()
	} else {
		fi, err := os.Stat(s.cfg.Location)
		if err != nil {
			return false, fmt.Errorf("pricing: %w", err)
		}
		if s.cur.Load() != nil && fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
			return false, nil
		}
		if fi.Size() > s.cfg.MaxBytes {
			return false, fmt.Errorf("pricing: %s: %d bytes exceeds the %d byte bound", s.cfg.Location, fi.Size(), s.cfg.MaxBytes)
		}
		data, err = os.ReadFile(s.cfg.Location)
		if err != nil {
			return false, fmt.Errorf("pricing: %w", err)
		}
		defer func() { s.modTime, s.size = fi.ModTime(), fi.Size() }()
	}
	t, err := Parse(data)
	if err != nil {
		return false, fmt.Errorf("pricing: %s: %w", s.cfg.Location, err)
	}
	if t, err = t.With(s.cfg.Custom, s.cfg.Deployments); err != nil {
		return false, err
	}
	s.store(t.WithAliases(s.cfg.Aliases))
	return true, nil
}

func (s *Source) fetch(ctx context.Context) (data []byte, etag, lastMod string, notModified bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.Location, nil)
	if err != nil {
		return nil, "", "", false, fmt.Errorf("pricing: %w", err)
	}
	if s.cur.Load() != nil {
		if s.etag != "" {
			req.Header.Set("If-None-Match", s.etag)
		}
		if s.lastMod != "" {
			req.Header.Set("If-Modified-Since", s.lastMod)
		}
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return nil, "", "", false, fmt.Errorf("pricing: fetch table: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		return nil, "", "", true, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", "", false, fmt.Errorf("pricing: fetch %s: status %s", s.cfg.Location, resp.Status)
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxBytes+1))
	if err != nil {
		return nil, "", "", false, fmt.Errorf("pricing: fetch table: %w", err)
	}
	if int64(len(data)) > s.cfg.MaxBytes {
		return nil, "", "", false, fmt.Errorf("pricing: fetch %s: larger than %d bytes", s.cfg.Location, s.cfg.MaxBytes)
	}
	// reload remembers the validators only once the table parsed, so a bad
	// body is fetched again next time.
	return data, resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), false, nil
}
