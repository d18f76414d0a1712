// Package budget runs the budget-reset job: every interval it asks the store
// to reset the spend of keys whose budget_reset_at has passed and to move
// them to their next boundary on LiteLLM's calendar schedule.
//
// The data plane does not wait for this job: a key past its reset time is
// already treated as reset when it is checked. The job makes it so in the
// database, for the management API, for other readers (a LiteLLM proxy on
// the same database) and for the next boundary.
package budget

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Resetter resets due budgets; store.Store satisfies it.
type Resetter interface {
	ResetBudgets(ctx context.Context, now time.Time) (int, error)
}

// DefaultInterval is how often the job runs when Config.Interval is zero.
// LiteLLM's own job runs about every 10 minutes; a minute keeps the stored
// spend close to the boundary at a cost of one indexed query.
const DefaultInterval = time.Minute

// Config configures a Job.
type Config struct {
	// Store does the resets. Required.
	Store Resetter
	// Interval between runs. 0 means DefaultInterval.
	Interval time.Duration
	// Timeout bounds one run. 0 means the interval.
	Timeout time.Duration
	// Now is the clock. nil means time.Now.
	Now func() time.Time
	// Logger receives resets and errors. nil discards.
	Logger *slog.Logger
	// Registerer receives the job's metrics. nil registers nothing.
	Registerer prometheus.Registerer
}

// Job is the periodic reset. Create it with New and run it with Run.
type Job struct {
	st       Resetter
	interval time.Duration
	timeout  time.Duration
	now      func() time.Time
	log      *slog.Logger

	resets prometheus.Counter
	errs   prometheus.Counter
}

// New validates cfg and builds the job.
func New(cfg Config) (*Job, error) {
	if cfg.Store == nil {
		return nil, errors.New("budget: Store is required")
	}
	if cfg.Interval < 0 || cfg.Timeout < 0 {
		return nil, errors.New("budget: Interval and Timeout must not be negative")
	}
	j := &Job{st: cfg.Store, interval: cfg.Interval, timeout: cfg.Timeout, now: cfg.Now, log: cfg.Logger}
	if j.interval == 0 {
		j.interval = DefaultInterval
	}
	if j.timeout == 0 {
		j.timeout = j.interval
	}
	if j.now == nil {
		j.now = time.Now
	}
	if j.log == nil {
		j.log = slog.New(slog.DiscardHandler)
	}
	j.resets = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sidecar_budget_resets_total", Help: "Keys whose spend the budget job reset.",
	})
	j.errs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sidecar_budget_reset_errors_total", Help: "Budget-reset runs that failed.",
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{j.resets, j.errs} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return j, nil
}

// Run resets due budgets at once and then every interval until ctx ends. A
// failed run is logged and counted; the job keeps going. It returns nil
// when ctx ends.
func (j *Job) Run(ctx context.Context) error {
	t := time.NewTicker(j.interval)
	defer t.Stop()
	for {
		j.RunOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce performs one reset run and returns how many keys it reset.
func (j *Job) RunOnce(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	n, err := j.st.ResetBudgets(ctx, j.now())
	if err != nil {
		if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
			j.errs.Inc()
			j.log.Warn("budget reset failed", "err", err)
		}
		return 0
	}
	if n > 0 {
		j.resets.Add(float64(n))
		j.log.Info("budgets reset", "keys", n)
	}
	return n
}
