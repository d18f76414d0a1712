package cache

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/modelbudget"
)

// Entry is one cached key, with what the Check needs precomputed. A
// negative entry (unknown key) is never returned by Get.
//
// An entry is kept small (see the package doc for the budget): it holds
// no rendered responses, and its Key is compacted when it is loaded.
type Entry struct {
	hash    [32]byte
	until   int64  // unix ns: entry expiry (negative TTL, safety TTL, grace)
	loaded  int64  // unix ns: when the store read began
	epoch   uint64 // Purge generation it was loaded in
	neg     bool
	resetOK bool // budget_duration parses: the key can be reset (keys.ResetDue)

	// Blocked, Expires (zero = never), GraceUntil (zero = not a rotated
	// token), BudgetResetAt (zero = none): from the row.
	Blocked bool
	// HasBudget false means unlimited; else MaxBudget is the budget, and
	// TempIncrease raises it until TempExpiry (metadata temp_budget_*).
	HasBudget bool

	// Key is the stored row as the data plane needs it. Treat it as
	// read-only: it is shared, and so are some of its strings, pointers and
	// slices (interned across keys; its Expires, BudgetResetAt and
	// GraceUntil point into this entry). To keep an entry small, columns
	// only the management API reads are dropped (key_name, created_at,
	// created_by, updated_at, updated_by, last_rotation_at: nil) and empty
	// JSON object and array columns are nil (read them as empty).
	Key *keys.Key

	Expires       time.Time
	GraceUntil    time.Time
	BudgetResetAt time.Time
	MaxBudget     float64
	TempIncrease  float64
	TempExpiry    time.Time
	// ModelBudgets is the key's usable model_max_budget (nil: none).
	ModelBudgets []modelbudget.Limit

	spend atomic.Uint64 // float64 bits; SetSpend updates it in place
	plan  atomic.Value  // the rate limiter's limits compiled from this entry
	org   atomic.Pointer[orgMemo]
}

// RateLimitPlan is a slot where the Check keeps the rate limits compiled
// from this entry (so a key without limits costs one load); it lives and
// dies with the entry, so a changed key is compiled anew.
func (e *Entry) RateLimitPlan() *atomic.Value { return &e.plan }

// Spend is the key's current spend as last seen.
func (e *Entry) Spend() float64 { return math.Float64frombits(e.spend.Load()) }

// ID is a uniform 64-bit identifier of the presented key (a prefix of its
// hash), for consumers that index something by entry.
func (e *Entry) ID() uint64 { return slot(&e.hash) }

// Budget is the effective max budget at now (temp increase included).
func (e *Entry) Budget(now time.Time) float64 {
	if e.TempIncrease != 0 && now.Before(e.TempExpiry) {
		return e.MaxBudget + e.TempIncrease
	}
	return e.MaxBudget
}

// BudgetResetDue reports whether the key's budget is past its reset at now
// (keys.ResetDue: the rule /key/info and the reset job use), so its spend
// counts as 0 even before the job has written it.
func (e *Entry) BudgetResetDue(now time.Time) bool {
	return e.resetOK && keys.ResetDue(e.BudgetResetAt, e.Expires, now)
}

func newEntry(hash [32]byte, k *keys.Key, now, until time.Time, epoch uint64) *Entry {
	e := &Entry{hash: hash, until: until.UnixNano(), loaded: now.UnixNano(), epoch: epoch, Blocked: k.IsBlocked()}
	// The row's times live in the entry; the row points at them (one
	// allocation fewer each).
	if k.Expires != nil {
		e.Expires = *k.Expires
		k.Expires = &e.Expires
	}
	if k.GraceUntil != nil {
		e.GraceUntil = *k.GraceUntil
		k.GraceUntil = &e.GraceUntil
	}
	if k.BudgetResetAt != nil {
		e.BudgetResetAt = *k.BudgetResetAt
		k.BudgetResetAt = &e.BudgetResetAt
		if k.BudgetDuration != nil {
			_, err := keys.ParseDuration(*k.BudgetDuration)
			e.resetOK = err == nil
		}
	}
	if k.MaxBudget != nil {
		e.HasBudget, e.MaxBudget = true, *k.MaxBudget
	}
	if inc, ok := keys.Number(k.Metadata["temp_budget_increase"]); ok {
		if s, ok := k.Metadata["temp_budget_expiry"].(string); ok {
			if t, err := parseISOTime(s); err == nil {
				e.TempIncrease, e.TempExpiry = inc, t
			}
		}
	}
	e.ModelBudgets = modelbudget.Parse(k.ModelMaxBudget)
	e.spend.Store(math.Float64bits(k.Spend))
	e.Key = compact(k)
	return e
}

// compact trims a freshly loaded row (the loader's own copy) in place to
// what the data plane reads, sharing repeated values between keys.
func compact(k *keys.Key) *keys.Key {
	k.KeyName, k.CreatedAt, k.CreatedBy, k.UpdatedAt, k.UpdatedBy, k.LastRotationAt = nil, nil, nil, nil, nil, nil
	for _, m := range []*map[string]any{&k.Aliases, &k.Config, &k.Permissions, &k.Metadata, &k.ModelSpend, &k.ModelMaxBudget} {
		if len(*m) == 0 {
			*m = nil
		}
	}
	for _, l := range []*[]string{&k.AllowedCacheControls, &k.AllowedRoutes} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	k.Models = interned.list(k.Models)
	for _, p := range []**string{&k.TeamID, &k.OrganizationID, &k.BudgetDuration, &k.BudgetID} {
		*p = interned.ptr(*p)
	}
	return k
}

// interned shares values that repeat across keys (team ids, model lists,
// budget durations) between cached entries. It is bounded: past
// maxInterned distinct values, new ones are kept unshared.
var interned = &internTable{ptrs: map[string]*string{}, lists: map[string][]string{}}

const maxInterned = 1 << 16

type internTable struct {
	mu    sync.Mutex
	ptrs  map[string]*string
	lists map[string][]string
}

func (t *internTable) ptr(p *string) *string {
	if p == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if q, ok := t.ptrs[*p]; ok {
		return q
	}
	if len(t.ptrs) < maxInterned {
		t.ptrs[*p] = p
	}
	return p
}

func (t *internTable) list(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	key := strings.Join(l, "\x00")
	t.mu.Lock()
	defer t.mu.Unlock()
	if q, ok := t.lists[key]; ok {
		return q
	}
	if len(t.lists) < maxInterned && len(key) <= 4096 {
		l = l[:len(l):len(l)] // shared: an append must copy
		t.lists[key] = l
	}
	return l
}

// parseISOTime reads LiteLLM's temp_budget_expiry: an ISO 8601 time with or
// without zone (naive times are UTC) or a date.
func parseISOTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("not an ISO time: %q", s)
}
