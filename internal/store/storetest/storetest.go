// Package storetest is the conformance suite every store backend must pass.
// A backend's test calls Run with a function that opens a fresh, empty store.
//
// Beyond the doc comments on store.Store, the suite pins these rules so the
// backends behave the same:
//
//   - Timestamps are stored in UTC, truncated (not rounded) to milliseconds,
//     and read back with Location() == time.UTC. Times a store fills itself
//     (CreatedAt, UpdatedAt, Audit.UpdatedAt) are truncated the same way and
//     the value returned to the caller equals what a later read returns.
//   - nil maps read back as empty maps and nil slices as empty slices, never
//     nil; nil pointers read back nil.
//   - Create with an empty Token is an error wrapping keys.ErrInvalid.
//   - List: SortBy outside store.SortColumns is an error wrapping
//     keys.ErrInvalid. Rows are ordered by the sort column in the requested
//     direction with NULLs LAST in both directions, then by token in the same
//     direction (the default is created_at DESC, token DESC). Text columns
//     (key_alias, token) compare as bytes, so "C" < "a" (Postgres: COLLATE
//     "C"). Page < 1 reads as 1; a page past the end is empty with the right
//     Total. Filters are exact matches (no LIKE wildcards).
//   - Regenerate with a grace period records (old token -> new token,
//     revoke_at); regenerating the new token again re-points those records at
//     the newest token, so every token still in grace keeps resolving.
//   - ResetBudgets skips keys whose budget_duration is NULL or does not parse
//     (they are neither changed nor counted), and emits, for each key it
//     resets, EventChanged or EventBudgetReset carrying the new spend (0) and
//     budget_reset_at.
//   - Events: Create, Update, Delete, SetBlocked emit EventChanged for the
//     token (an Update that changes only spend may emit EventSpend instead;
//     the suite does not test that case); Regenerate emits EventChanged for
//     the old and the new token; AddSpend emits
//     EventSpend with the new spend for every key it changed. A subscriber's
//     first event is EventReset. Events may arrive asynchronously; the suite
//     waits up to EventTimeout.
//   - Close is idempotent (a second Close returns nil).
//
// A backend that implements AuditReader gets its audit rows checked.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// Opener returns a fresh, empty store for one test; the suite closes it.
type Opener func(t *testing.T) store.Store

// AuditReader is implemented by backends (usually on the store type itself)
// so the suite can read back "LiteLLM_AuditLog" rows. It returns the rows for
// objectID, oldest first.
type AuditReader interface {
	Audits(ctx context.Context, objectID string) ([]*keys.Audit, error)
}

// EventTimeout is how long the suite waits for a change event.
const EventTimeout = 5 * time.Second

// Run runs the conformance suite against the backend that open opens.
func Run(t *testing.T, open Opener) {
	t.Helper()
	s := &suite{open: open}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"Create", s.testCreate},
		{"CreateRoundTrip", s.testCreateRoundTrip},
		{"CreateConflict", s.testCreateConflict},
		{"Get", s.testGet},
		{"Update", s.testUpdate},
		{"UpdateConcurrentSpend", s.testUpdateConcurrentSpend},
		{"Delete", s.testDelete},
		{"ListFilters", s.testListFilters},
		{"ListSort", s.testListSort},
		{"ListPaging", s.testListPaging},
		{"SetBlocked", s.testSetBlocked},
		{"Regenerate", s.testRegenerate},
		{"RegenerateGrace", s.testRegenerateGrace},
		{"AddSpend", s.testAddSpend},
		{"AddSpendConcurrent", s.testAddSpendConcurrent},
		{"ResetBudgets", s.testResetBudgets},
		{"AppendAudit", s.testAppendAudit},
		{"ListTokens", s.testListTokens},
		{"Subscribe", s.testSubscribe},
		{"Ping", s.testPing},
		{"Close", s.testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct{ open Opener }

// store opens a fresh store and closes it when the test ends.
func (s *suite) store(t *testing.T) store.Store {
	t.Helper()
	st := s.open(t)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// ---- helpers ----

func ptr[T any](v T) *T { return &v }

func ms(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

var tokenSeq struct {
	sync.Mutex
	n int
}

// token returns a distinct 64-hex token; tag (hex digits) makes it readable.
func token(tag string) string {
	tokenSeq.Lock()
	tokenSeq.n++
	n := tokenSeq.n
	tokenSeq.Unlock()
	return keys.HashHex(fmt.Sprintf("sk-storetest-%s-%d", tag, n))
}

// fullKey returns a key with every field set, its times in a non-UTC zone
// and with sub-millisecond parts.
func fullKey(tok string) *keys.Key {
	zone := time.FixedZone("X", 5*3600+30*60)
	base := time.Date(2031, 3, 4, 5, 6, 7, 123456789, zone)
	return &keys.Key{
		Token:               tok,
		KeyName:             ptr("sk-...abcd"),
		KeyAlias:            ptr("alias-" + tok[:8]),
		Spend:               12.5,
		Expires:             ptr(base.Add(72 * time.Hour)),
		Models:              []string{"gpt-4o", "openai/*"},
		Aliases:             map[string]any{"my-model": "gpt-4o"},
		Config:              map[string]any{"nested": map[string]any{"a": 1.5, "b": []any{"x", true}}},
		UserID:              ptr("user-1"),
		TeamID:              ptr("team-1"),
		OrganizationID:      ptr("org-1"),
		Permissions:         map[string]any{"get_spend_routes": false},
		MaxParallelRequests: ptr[int64](7),
		Metadata: map[string]any{
			"tags":  []any{"a", "b"},
			"quote": `he said "hi" \ and left`,
			"uni":   "héllo ✓",
		},
		Blocked:              ptr(false),
		TPMLimit:             ptr[int64](1 << 40),
		RPMLimit:             ptr[int64](60),
		MaxBudget:            ptr(100.25),
		BudgetDuration:       ptr("30d"),
		BudgetResetAt:        ptr(base.Add(24 * time.Hour)),
		AllowedCacheControls: []string{"no-cache"},
		AllowedRoutes:        []string{"/chat/completions", "/embeddings"},
		ModelSpend:           map[string]any{"gpt-4o": 1.25},
		ModelMaxBudget:       map[string]any{"gpt-4o": map[string]any{"budget_limit": 10.0}},
		BudgetID:             ptr("budget-1"),
		SoftBudgetCooldown:   true,
		CreatedAt:            ptr(base),
		CreatedBy:            ptr("admin"),
		UpdatedAt:            ptr(base.Add(time.Minute)),
		UpdatedBy:            ptr("admin2"),
		RotationCount:        3,
		LastRotationAt:       ptr(base.Add(-time.Hour)),
	}
}

// want returns the key as a store must read it back: times in UTC truncated
// to milliseconds, nil maps and slices empty.
func want(k *keys.Key) *keys.Key {
	c := *k
	for _, p := range []**time.Time{&c.Expires, &c.BudgetResetAt, &c.CreatedAt, &c.UpdatedAt, &c.LastRotationAt, &c.GraceUntil} {
		if *p != nil {
			*p = ptr(ms(**p))
		}
	}
	for _, m := range []*map[string]any{&c.Aliases, &c.Config, &c.Permissions, &c.Metadata, &c.ModelSpend, &c.ModelMaxBudget} {
		if *m == nil {
			*m = map[string]any{}
		}
	}
	for _, sl := range []*[]string{&c.Models, &c.AllowedCacheControls, &c.AllowedRoutes} {
		if *sl == nil {
			*sl = []string{}
		}
	}
	return &c
}

// checkKey fails unless got reads exactly like want (compared through JSON,
// which also shows nil-vs-empty and zones), with UTC times and non-nil
// maps/slices.
func checkKey(t *testing.T, what string, want, got *keys.Key) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: got nil key", what)
	}
	wj, _ := json.Marshal(want)
	gj, _ := json.Marshal(got)
	if string(wj) != string(gj) {
		t.Errorf("%s: key mismatch\n got: %s\nwant: %s", what, gj, wj)
	}
	if (want.GraceUntil == nil) != (got.GraceUntil == nil) ||
		(want.GraceUntil != nil && !want.GraceUntil.Equal(*got.GraceUntil)) {
		t.Errorf("%s: GraceUntil = %v, want %v", what, got.GraceUntil, want.GraceUntil)
	}
	for name, p := range map[string]*time.Time{
		"expires": got.Expires, "budget_reset_at": got.BudgetResetAt, "created_at": got.CreatedAt,
		"updated_at": got.UpdatedAt, "last_rotation_at": got.LastRotationAt, "grace_until": got.GraceUntil,
	} {
		if p != nil && p.Location() != time.UTC {
			t.Errorf("%s: %s location = %v, want UTC", what, name, p.Location())
		}
	}
	for name, m := range map[string]map[string]any{
		"aliases": got.Aliases, "config": got.Config, "permissions": got.Permissions,
		"metadata": got.Metadata, "model_spend": got.ModelSpend, "model_max_budget": got.ModelMaxBudget,
	} {
		if m == nil {
			t.Errorf("%s: %s is nil, want empty map", what, name)
		}
	}
	for name, sl := range map[string][]string{
		"models": got.Models, "allowed_cache_controls": got.AllowedCacheControls, "allowed_routes": got.AllowedRoutes,
	} {
		if sl == nil {
			t.Errorf("%s: %s is nil, want empty slice", what, name)
		}
	}
}

func mustCreate(t *testing.T, st store.Store, k *keys.Key) *keys.Key {
	t.Helper()
	if err := st.Create(t.Context(), k); err != nil {
		t.Fatalf("Create(%s): %v", keys.Redact(k.Token), err)
	}
	return k
}

func mustGet(t *testing.T, st store.Store, tok string) *keys.Key {
	t.Helper()
	k, err := st.Get(t.Context(), tok)
	if err != nil {
		t.Fatalf("Get(%s): %v", keys.Redact(tok), err)
	}
	return k
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("%s: err = %v, want keys.ErrNotFound", what, err)
	}
}

func wantConflict(t *testing.T, what string, err error, field string) {
	t.Helper()
	var ce *keys.ConflictError
	if !errors.As(err, &ce) {
		t.Errorf("%s: err = %v, want *keys.ConflictError", what, err)
		return
	}
	if ce.Field != field {
		t.Errorf("%s: conflict field = %q, want %q", what, ce.Field, field)
	}
	if !errors.Is(err, keys.ErrConflict) {
		t.Errorf("%s: errors.Is(err, keys.ErrConflict) = false", what)
	}
}

// ---- Create / Get ----

func (s *suite) testCreate(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()

	t.Run("fills timestamps", func(t *testing.T) {
		k := &keys.Key{Token: token("a1")}
		before := ms(time.Now())
		mustCreate(t, st, k)
		after := time.Now()
		if k.CreatedAt == nil || k.UpdatedAt == nil {
			t.Fatalf("CreatedAt/UpdatedAt not filled: %v %v", k.CreatedAt, k.UpdatedAt)
		}
		for name, ts := range map[string]time.Time{"created_at": *k.CreatedAt, "updated_at": *k.UpdatedAt} {
			if ts.Before(before) || ts.After(after) {
				t.Errorf("%s = %v, want within [%v, %v]", name, ts, before, after)
			}
			if !ts.Equal(ms(ts)) {
				t.Errorf("%s = %v, not truncated to milliseconds", name, ts)
			}
		}
		checkKey(t, "Get", want(k), mustGet(t, st, k.Token))
	})

	t.Run("keeps given timestamps", func(t *testing.T) {
		c := time.Date(2020, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
		k := &keys.Key{Token: token("a2"), CreatedAt: ptr(c), UpdatedAt: ptr(c.Add(time.Second))}
		mustCreate(t, st, k)
		got := mustGet(t, st, k.Token)
		if !got.CreatedAt.Equal(c) || !got.UpdatedAt.Equal(c.Add(time.Second)) {
			t.Errorf("times = %v, %v; want %v, %v", got.CreatedAt, got.UpdatedAt, c, c.Add(time.Second))
		}
	})

	t.Run("empty token invalid", func(t *testing.T) {
		err := st.Create(ctx, &keys.Key{})
		if !errors.Is(err, keys.ErrInvalid) {
			t.Errorf("Create(empty token) = %v, want keys.ErrInvalid", err)
		}
	})
}

func (s *suite) testCreateRoundTrip(t *testing.T) {
	st := s.store(t)
	zero := &keys.Key{Token: token("b0"), CreatedAt: ptr(time.Unix(0, 0)), UpdatedAt: ptr(time.Unix(1, 0))}
	empty := fullKey(token("b2"))
	empty.KeyAlias = ptr("")
	empty.Models, empty.AllowedRoutes, empty.AllowedCacheControls = []string{}, []string{}, []string{}
	empty.Metadata, empty.Config = map[string]any{}, map[string]any{}
	empty.Blocked = ptr(true)
	empty.Spend = -0.5
	tests := []struct {
		name string
		k    *keys.Key
	}{
		{"every field set", fullKey(token("b1"))},
		{"everything nil", zero},
		{"empty collections", empty},
		{"extreme numbers", func() *keys.Key {
			k := fullKey(token("b3"))
			k.Spend = 1e-9
			k.MaxBudget = ptr(math.MaxFloat64 / 2)
			k.TPMLimit = ptr[int64](math.MaxInt64)
			k.RPMLimit = ptr[int64](0)
			k.MaxParallelRequests = ptr[int64](-1)
			k.KeyAlias = ptr("alias with 'quotes' and \"double\" ; DROP TABLE x; --")
			return k
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := want(tc.k)
			mustCreate(t, st, tc.k)
			checkKey(t, "Create result", w, want(tc.k))
			checkKey(t, "Get", w, mustGet(t, st, tc.k.Token))
			if tc.k.KeyAlias != nil {
				got, err := st.GetByAlias(t.Context(), *tc.k.KeyAlias)
				if err != nil {
					t.Fatalf("GetByAlias: %v", err)
				}
				checkKey(t, "GetByAlias", w, got)
			}
			got, err := st.Lookup(t.Context(), tc.k.Token)
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			checkKey(t, "Lookup", w, got)
		})
	}
}

func (s *suite) testCreateConflict(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	first := mustCreate(t, st, &keys.Key{Token: token("c1"), KeyAlias: ptr("taken"), Spend: 1})

	tests := []struct {
		name  string
		k     *keys.Key
		field string
	}{
		{"duplicate token", &keys.Key{Token: first.Token, KeyAlias: ptr("other")}, "token"},
		{"duplicate token, no alias", &keys.Key{Token: first.Token}, "token"},
		{"duplicate alias", &keys.Key{Token: token("c2"), KeyAlias: ptr("taken")}, "key_alias"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantConflict(t, "Create", st.Create(ctx, tc.k), tc.field)
		})
	}
	// Nothing of the failed writes landed.
	got := mustGet(t, st, first.Token)
	if got.Spend != 1 || got.KeyAlias == nil || *got.KeyAlias != "taken" {
		t.Errorf("original key changed: %+v", got)
	}
	res, err := st.List(ctx, store.ListQuery{Page: 1, Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total != 1 {
		t.Errorf("Total = %d after failed creates, want 1", res.Total)
	}
	// Many keys without an alias (NULL) do not collide.
	for i := range 3 {
		mustCreate(t, st, &keys.Key{Token: token(fmt.Sprint("c", i+3))})
	}
}

func (s *suite) testGet(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	k := mustCreate(t, st, &keys.Key{Token: token("d1"), KeyAlias: ptr("d-alias")})

	tests := []struct {
		name string
		call func() (*keys.Key, error)
	}{
		{"Get unknown", func() (*keys.Key, error) { return st.Get(ctx, token("zz")) }},
		{"Get empty", func() (*keys.Key, error) { return st.Get(ctx, "") }},
		{"Get by alias as hash", func() (*keys.Key, error) { return st.Get(ctx, "d-alias") }},
		{"GetByAlias unknown", func() (*keys.Key, error) { return st.GetByAlias(ctx, "nope") }},
		{"GetByAlias token", func() (*keys.Key, error) { return st.GetByAlias(ctx, k.Token) }},
		{"GetByAlias empty", func() (*keys.Key, error) { return st.GetByAlias(ctx, "") }},
		{"Lookup unknown", func() (*keys.Key, error) { return st.Lookup(ctx, token("zz")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.call()
			wantNotFound(t, tc.name, err)
			if got != nil {
				t.Errorf("%s returned a key with an error", tc.name)
			}
		})
	}
	t.Run("canceled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := st.Get(cctx, k.Token); err == nil {
			t.Error("Get with canceled context succeeded")
		}
	})
}

// ---- Update ----

func (s *suite) testUpdate(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	old := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	newKey := func(tag, alias string) *keys.Key {
		k := fullKey(token(tag))
		k.KeyAlias = ptr(alias)
		k.CreatedAt, k.UpdatedAt = ptr(old), ptr(old)
		return mustCreate(t, st, k)
	}

	t.Run("partial change", func(t *testing.T) {
		k := newKey("e1", "e1")
		before := ms(time.Now())
		got, err := st.Update(ctx, k.Token, func(c *keys.Key) error {
			c.Models = []string{"claude"}
			c.MaxBudget = nil
			c.Metadata = map[string]any{"replaced": true}
			c.Spend = 99
			c.Blocked = ptr(true)
			c.Token = "ignored" // token is never written
			return nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		w := want(k)
		w.Models, w.MaxBudget, w.Metadata, w.Spend, w.Blocked = []string{"claude"}, nil, map[string]any{"replaced": true}, 99, ptr(true)
		if got.UpdatedAt == nil || got.UpdatedAt.Before(before) {
			t.Fatalf("UpdatedAt = %v, want >= %v", got.UpdatedAt, before)
		}
		w.UpdatedAt = got.UpdatedAt
		checkKey(t, "Update result", w, got)
		checkKey(t, "Get after Update", w, mustGet(t, st, k.Token))
		if _, err := st.Get(ctx, "ignored"); !errors.Is(err, keys.ErrNotFound) {
			t.Errorf("fn changing Token moved the row: %v", err)
		}
	})

	t.Run("fn error aborts", func(t *testing.T) {
		k := newKey("e2", "e2")
		boom := errors.New("boom")
		got, err := st.Update(ctx, k.Token, func(c *keys.Key) error {
			c.Spend = 1234
			c.KeyAlias = ptr("changed")
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update err = %v, want boom", err)
		}
		if got != nil {
			t.Error("Update returned a key with an error")
		}
		checkKey(t, "unchanged", want(k), mustGet(t, st, k.Token))
	})

	t.Run("alias conflict", func(t *testing.T) {
		a := newKey("e3", "e3-a")
		newKey("e4", "e3-b")
		_, err := st.Update(ctx, a.Token, func(c *keys.Key) error { c.KeyAlias = ptr("e3-b"); return nil })
		wantConflict(t, "Update", err, "key_alias")
		checkKey(t, "unchanged", want(a), mustGet(t, st, a.Token))
	})

	t.Run("keeps own alias", func(t *testing.T) {
		a := newKey("e5", "e5")
		got, err := st.Update(ctx, a.Token, func(c *keys.Key) error { c.KeyName = ptr("renamed"); return nil })
		if err != nil {
			t.Fatalf("Update keeping own alias: %v", err)
		}
		if *got.KeyAlias != "e5" || *got.KeyName != "renamed" {
			t.Errorf("got alias %v name %v", *got.KeyAlias, *got.KeyName)
		}
	})

	t.Run("alias freed by update can be reused", func(t *testing.T) {
		a := newKey("e6", "e6")
		if _, err := st.Update(ctx, a.Token, func(c *keys.Key) error { c.KeyAlias = nil; return nil }); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, st, &keys.Key{Token: token("e7"), KeyAlias: ptr("e6")})
		if _, err := st.GetByAlias(ctx, "e6"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("missing", func(t *testing.T) {
		called := false
		_, err := st.Update(ctx, token("zz"), func(*keys.Key) error { called = true; return nil })
		wantNotFound(t, "Update", err)
		if called {
			t.Error("fn called for a missing key")
		}
	})
}

func (s *suite) testUpdateConcurrentSpend(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	k := mustCreate(t, st, &keys.Key{Token: token("f1")})
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				_, err = st.Update(ctx, k.Token, func(c *keys.Key) error {
					c.Spend += 1
					c.Metadata = map[string]any{"writer": float64(i)}
					return nil
				})
			} else {
				err = st.AddSpend(ctx, map[string]float64{k.Token: 1})
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent write: %v", err)
		}
	}
	if got := mustGet(t, st, k.Token).Spend; got != n {
		t.Errorf("spend = %v after %d increments, want %d", got, n, n)
	}
}

// ---- Delete ----

func (s *suite) testDelete(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	a := mustCreate(t, st, fullKey(token("g1")))
	b := mustCreate(t, st, &keys.Key{Token: token("g2"), KeyAlias: ptr("g2")})
	c := mustCreate(t, st, &keys.Key{Token: token("g3")})

	got, err := st.Delete(ctx, []string{a.Token, token("zz"), b.Token, a.Token})
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("Delete returned %d rows, want 2", len(got))
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Token < got[j].Token })
	wantRows := []*keys.Key{want(a), want(b)}
	sort.Slice(wantRows, func(i, j int) bool { return wantRows[i].Token < wantRows[j].Token })
	for i := range got {
		checkKey(t, "deleted row", wantRows[i], got[i])
	}
	for _, tok := range []string{a.Token, b.Token} {
		_, err := st.Get(ctx, tok)
		wantNotFound(t, "Get deleted", err)
	}
	mustGet(t, st, c.Token)
	// The alias is free again.
	mustCreate(t, st, &keys.Key{Token: token("g4"), KeyAlias: ptr("g2")})

	for _, in := range [][]string{nil, {}, {token("zz")}} {
		got, err := st.Delete(ctx, in)
		if err != nil || len(got) != 0 {
			t.Errorf("Delete(%v) = %d rows, %v; want none, nil", in, len(got), err)
		}
	}
}

// ---- List ----

func tokensOf(ks []*keys.Key) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.Token
	}
	return out
}

func (s *suite) testListFilters(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(tag string, i int, user, team, org, alias *string) *keys.Key {
		return mustCreate(t, st, &keys.Key{
			Token: token(tag), UserID: user, TeamID: team, OrganizationID: org, KeyAlias: alias,
			CreatedAt: ptr(base.Add(time.Duration(i) * time.Hour)),
		})
	}
	k1 := mk("h1", 1, ptr("u1"), ptr("t1"), ptr("o1"), ptr("a1"))
	k2 := mk("h2", 2, ptr("u1"), ptr("t2"), nil, ptr("a2"))
	k3 := mk("h3", 3, ptr("u2"), ptr("t1"), ptr("o1"), nil)
	k4 := mk("h4", 4, nil, nil, nil, ptr("u1")) // alias equal to another key's user_id

	tests := []struct {
		name string
		q    store.ListQuery
		want []*keys.Key // in default order: created_at desc
	}{
		{"no filter", store.ListQuery{}, []*keys.Key{k4, k3, k2, k1}},
		{"user_id", store.ListQuery{UserID: "u1"}, []*keys.Key{k2, k1}},
		{"team_id", store.ListQuery{TeamID: "t1"}, []*keys.Key{k3, k1}},
		{"organization_id", store.ListQuery{OrganizationID: "o1"}, []*keys.Key{k3, k1}},
		{"key_hash", store.ListQuery{KeyHash: k2.Token}, []*keys.Key{k2}},
		{"key_alias", store.ListQuery{KeyAlias: "u1"}, []*keys.Key{k4}},
		{"combined", store.ListQuery{UserID: "u1", TeamID: "t1"}, []*keys.Key{k1}},
		{"combined, no match", store.ListQuery{UserID: "u2", TeamID: "t2"}, nil},
		{"unknown user", store.ListQuery{UserID: "nobody"}, nil},
		{"injection attempt", store.ListQuery{UserID: "u1' OR '1'='1"}, nil},
		{"like wildcard is literal", store.ListQuery{UserID: "u%"}, nil},
		{"own keys or a team's", store.ListQuery{UserID: "u2", OrTeamIDs: []string{"t2"}}, []*keys.Key{k3, k2}},
		{"own keys or teams', overlapping", store.ListQuery{UserID: "u1", OrTeamIDs: []string{"t1", "none"}}, []*keys.Key{k3, k2, k1}},
		{"only teams'", store.ListQuery{OrTeamIDs: []string{"t1"}}, []*keys.Key{k3, k1}},
		{"filters or teams", store.ListQuery{UserID: "u1", TeamID: "t2", OrTeamIDs: []string{"t1"}}, []*keys.Key{k3, k2, k1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.Page, tc.q.Size = 1, 100
			res, err := st.List(ctx, tc.q)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if res.Total != len(tc.want) {
				t.Errorf("Total = %d, want %d", res.Total, len(tc.want))
			}
			if g, w := tokensOf(res.Keys), tokensOf(tc.want); !slices.Equal(g, w) {
				t.Errorf("keys = %v, want %v", g, w)
			}
			for i, k := range res.Keys {
				if i < len(tc.want) && k.Token == tc.want[i].Token {
					checkKey(t, "listed row", want(tc.want[i]), k)
				}
			}
		})
	}
}

func (s *suite) testListSort(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	// Values chosen so every column orders the keys differently; key_alias
	// and max_budget have two NULLs each to pin NULLS LAST + token tiebreak.
	type row struct {
		spend     float64
		maxBudget *float64
		created   int // hours after base
		updated   int
		alias     *string
	}
	rows := []row{
		{5, ptr(10.0), 3, 1, ptr("b")},
		{1, nil, 1, 4, ptr("a")},
		{3, ptr(0.0), 4, 2, nil},
		{4, nil, 2, 5, ptr("C")}, // "C" < "a" < "b" in byte order
		{2, ptr(-1.0), 5, 3, nil},
	}
	var all []*keys.Key
	for i, r := range rows {
		all = append(all, mustCreate(t, st, &keys.Key{
			Token:     token(fmt.Sprint("i", i)),
			Spend:     r.spend,
			MaxBudget: r.maxBudget,
			CreatedAt: ptr(base.Add(time.Duration(r.created) * time.Hour)),
			UpdatedAt: ptr(base.Add(time.Duration(r.updated) * time.Hour)),
			KeyAlias:  r.alias,
		}))
	}
	// expected computes the documented order independently of the store.
	expected := func(col string, desc bool) []string {
		ks := slices.Clone(all)
		cmpTok := func(a, b *keys.Key) int {
			c := strings.Compare(a.Token, b.Token)
			if desc {
				c = -c
			}
			return c
		}
		slices.SortFunc(ks, func(a, b *keys.Key) int {
			var av, bv any
			switch col {
			case "spend":
				av, bv = a.Spend, b.Spend
			case "max_budget":
				av, bv = a.MaxBudget, b.MaxBudget
			case "created_at":
				av, bv = a.CreatedAt.UnixNano(), b.CreatedAt.UnixNano()
			case "updated_at":
				av, bv = a.UpdatedAt.UnixNano(), b.UpdatedAt.UnixNano()
			case "token":
				av, bv = a.Token, b.Token
			case "key_alias":
				av, bv = a.KeyAlias, b.KeyAlias
			}
			c, aNull, bNull := compareAny(av, bv)
			switch {
			case aNull && bNull:
				return cmpTok(a, b)
			case aNull:
				return 1 // NULLS LAST in both directions
			case bNull:
				return -1
			}
			if desc {
				c = -c
			}
			if c != 0 {
				return c
			}
			return cmpTok(a, b)
		})
		return tokensOf(ks)
	}

	for _, col := range store.SortColumns {
		for _, desc := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s desc=%v", col, desc), func(t *testing.T) {
				res, err := st.List(ctx, store.ListQuery{Page: 1, Size: 100, SortBy: col, Desc: desc})
				if err != nil {
					t.Fatalf("List: %v", err)
				}
				if g, w := tokensOf(res.Keys), expected(col, desc); !slices.Equal(g, w) {
					t.Errorf("order = %v\n          want %v", g, w)
				}
			})
		}
	}
	t.Run("default", func(t *testing.T) {
		res, err := st.List(ctx, store.ListQuery{Page: 1, Size: 100})
		if err != nil {
			t.Fatal(err)
		}
		if g, w := tokensOf(res.Keys), expected("created_at", true); !slices.Equal(g, w) {
			t.Errorf("order = %v, want %v", g, w)
		}
	})
	t.Run("default ties broken by token desc", func(t *testing.T) {
		st := s.store(t)
		same := ptr(base)
		var toks []string
		for i := range 4 {
			k := mustCreate(t, st, &keys.Key{Token: token(fmt.Sprint("j", i)), CreatedAt: same})
			toks = append(toks, k.Token)
		}
		slices.Sort(toks)
		slices.Reverse(toks)
		res, err := st.List(ctx, store.ListQuery{Page: 1, Size: 100})
		if err != nil {
			t.Fatal(err)
		}
		if g := tokensOf(res.Keys); !slices.Equal(g, toks) {
			t.Errorf("order = %v, want %v", g, toks)
		}
	})
	for _, bad := range []string{"blocked", "spend; DROP TABLE x", "SPEND", "created_at desc", "1"} {
		t.Run("invalid sort "+bad, func(t *testing.T) {
			_, err := st.List(ctx, store.ListQuery{Page: 1, Size: 10, SortBy: bad})
			if !errors.Is(err, keys.ErrInvalid) {
				t.Errorf("List(SortBy=%q) err = %v, want keys.ErrInvalid", bad, err)
			}
		})
	}
}

// compareAny compares two sort values; pointers may be nil (NULL).
func compareAny(a, b any) (c int, aNull, bNull bool) {
	switch av := a.(type) {
	case float64:
		bv := b.(float64)
		return cmpOrdered(av, bv), false, false
	case int64:
		return cmpOrdered(av, b.(int64)), false, false
	case string:
		return strings.Compare(av, b.(string)), false, false
	case *float64:
		bv := b.(*float64)
		if av == nil || bv == nil {
			return 0, av == nil, bv == nil
		}
		return cmpOrdered(*av, *bv), false, false
	case *string:
		bv := b.(*string)
		if av == nil || bv == nil {
			return 0, av == nil, bv == nil
		}
		return strings.Compare(*av, *bv), false, false
	}
	panic(fmt.Sprintf("compareAny: %T", a))
}

func cmpOrdered[T float64 | int64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *suite) testListPaging(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()

	t.Run("empty store", func(t *testing.T) {
		res, err := st.List(ctx, store.ListQuery{Page: 1, Size: 10})
		if err != nil {
			t.Fatal(err)
		}
		if res.Total != 0 || len(res.Keys) != 0 {
			t.Errorf("got %d keys, total %d; want none", len(res.Keys), res.Total)
		}
	})

	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var all []string // default order: created_at desc
	for i := range 5 {
		k := mustCreate(t, st, &keys.Key{Token: token(fmt.Sprint("k", i)), TeamID: ptr("t"), CreatedAt: ptr(base.Add(time.Duration(i) * time.Minute))})
		all = append([]string{k.Token}, all...)
	}
	mustCreate(t, st, &keys.Key{Token: token("k-other"), TeamID: ptr("other")})

	tests := []struct {
		page, size int
		want       []string
	}{
		{1, 2, all[0:2]},
		{2, 2, all[2:4]},
		{3, 2, all[4:5]},
		{4, 2, nil},
		{100, 2, nil},
		{1, 5, all},
		{1, 100, all},
		{2, 4, all[4:]},
		{0, 2, all[0:2]}, // page < 1 reads as 1
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("page %d size %d", tc.page, tc.size), func(t *testing.T) {
			res, err := st.List(ctx, store.ListQuery{Page: tc.page, Size: tc.size, TeamID: "t"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Total != len(all) {
				t.Errorf("Total = %d, want %d", res.Total, len(all))
			}
			if g := tokensOf(res.Keys); !slices.Equal(g, tc.want) && (len(g) != 0 || len(tc.want) != 0) {
				t.Errorf("keys = %v, want %v", g, tc.want)
			}
		})
	}
}

// ---- SetBlocked ----

func (s *suite) testSetBlocked(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	k := fullKey(token("l1"))
	k.Blocked = nil
	mustCreate(t, st, k)
	for _, blocked := range []bool{true, true, false, true} {
		got, err := st.SetBlocked(ctx, k.Token, blocked)
		if err != nil {
			t.Fatalf("SetBlocked(%v): %v", blocked, err)
		}
		w := want(k)
		w.Blocked = ptr(blocked)
		w.UpdatedAt = got.UpdatedAt
		checkKey(t, "SetBlocked result", w, got)
		checkKey(t, "Get", w, mustGet(t, st, k.Token))
		if got.IsBlocked() != blocked {
			t.Errorf("IsBlocked = %v, want %v", got.IsBlocked(), blocked)
		}
	}
	_, err := st.SetBlocked(ctx, token("zz"), true)
	wantNotFound(t, "SetBlocked missing", err)
}

// ---- Regenerate ----

func (s *suite) testRegenerate(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()

	t.Run("keeps the row", func(t *testing.T) {
		k := mustCreate(t, st, fullKey(token("m1")))
		newTok := token("m1-new")
		rotated := ms(time.Now())
		got, err := st.Regenerate(ctx, k.Token, newTok, nil, func(c *keys.Key) error {
			c.KeyName = ptr("sk-...wxyz")
			c.RotationCount++
			c.LastRotationAt = ptr(rotated)
			return nil
		})
		if err != nil {
			t.Fatalf("Regenerate: %v", err)
		}
		w := want(k)
		w.Token, w.KeyName, w.RotationCount, w.LastRotationAt = newTok, ptr("sk-...wxyz"), k.RotationCount+1, ptr(rotated)
		if got.UpdatedAt == nil {
			t.Fatal("UpdatedAt nil")
		}
		w.UpdatedAt = got.UpdatedAt
		checkKey(t, "Regenerate result", w, got)
		checkKey(t, "Get new", w, mustGet(t, st, newTok))
		byAlias, err := st.GetByAlias(ctx, *k.KeyAlias)
		if err != nil {
			t.Fatal(err)
		}
		checkKey(t, "GetByAlias", w, byAlias)
		_, err = st.Get(ctx, k.Token)
		wantNotFound(t, "Get old", err)
		_, err = st.Lookup(ctx, k.Token)
		wantNotFound(t, "Lookup old without grace", err)
		look, err := st.Lookup(ctx, newTok)
		if err != nil {
			t.Fatal(err)
		}
		checkKey(t, "Lookup new", w, look)
	})

	t.Run("nil fn", func(t *testing.T) {
		k := mustCreate(t, st, &keys.Key{Token: token("m2"), Spend: 3})
		newTok := token("m2-new")
		got, err := st.Regenerate(ctx, k.Token, newTok, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.Token != newTok || got.Spend != 3 {
			t.Errorf("got token %s spend %v", keys.Redact(got.Token), got.Spend)
		}
	})

	t.Run("new hash conflict", func(t *testing.T) {
		a := mustCreate(t, st, fullKey(token("m3")))
		b := mustCreate(t, st, &keys.Key{Token: token("m4")})
		_, err := st.Regenerate(ctx, a.Token, b.Token, nil, nil)
		wantConflict(t, "Regenerate", err, "token")
		checkKey(t, "old intact", want(a), mustGet(t, st, a.Token))
		checkKey(t, "other intact", want(b), mustGet(t, st, b.Token))
	})

	t.Run("fn alias conflict", func(t *testing.T) {
		a := mustCreate(t, st, &keys.Key{Token: token("m5"), KeyAlias: ptr("m5")})
		mustCreate(t, st, &keys.Key{Token: token("m6"), KeyAlias: ptr("m6")})
		_, err := st.Regenerate(ctx, a.Token, token("m5-new"), nil, func(c *keys.Key) error { c.KeyAlias = ptr("m6"); return nil })
		wantConflict(t, "Regenerate", err, "key_alias")
		checkKey(t, "old intact", want(a), mustGet(t, st, a.Token))
	})

	t.Run("fn error aborts", func(t *testing.T) {
		a := mustCreate(t, st, &keys.Key{Token: token("m7")})
		boom := errors.New("boom")
		newTok := token("m7-new")
		_, err := st.Regenerate(ctx, a.Token, newTok, ptr(time.Now().Add(time.Hour)), func(*keys.Key) error { return boom })
		if !errors.Is(err, boom) {
			t.Errorf("err = %v, want boom", err)
		}
		checkKey(t, "old intact", want(a), mustGet(t, st, a.Token))
		_, err = st.Get(ctx, newTok)
		wantNotFound(t, "Get new", err)
	})

	t.Run("missing", func(t *testing.T) {
		_, err := st.Regenerate(ctx, token("zz"), token("zz-new"), nil, nil)
		wantNotFound(t, "Regenerate", err)
	})
}

func (s *suite) testRegenerateGrace(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()

	t.Run("future grace resolves", func(t *testing.T) {
		k := mustCreate(t, st, fullKey(token("n1")))
		newTok := token("n1-new")
		grace := time.Now().Add(time.Hour)
		got, err := st.Regenerate(ctx, k.Token, newTok, &grace, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.GraceUntil != nil {
			t.Error("Regenerate result has GraceUntil set")
		}
		_, err = st.Get(ctx, k.Token)
		wantNotFound(t, "Get old", err)

		look, err := st.Lookup(ctx, k.Token)
		if err != nil {
			t.Fatalf("Lookup old in grace: %v", err)
		}
		w := want(got)
		w.GraceUntil = ptr(ms(grace))
		checkKey(t, "Lookup old", w, look)

		look, err = st.Lookup(ctx, newTok)
		if err != nil {
			t.Fatal(err)
		}
		checkKey(t, "Lookup new", want(got), look)

		// Rotating again keeps the first old token pointed at the newest.
		newer := token("n1-newer")
		grace2 := time.Now().Add(2 * time.Hour)
		if _, err := st.Regenerate(ctx, newTok, newer, &grace2, nil); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			tok   string
			grace time.Time
		}{{k.Token, grace}, {newTok, grace2}} {
			look, err := st.Lookup(ctx, tc.tok)
			if err != nil {
				t.Fatalf("Lookup after second rotation: %v", err)
			}
			if look.Token != newer || look.GraceUntil == nil || !look.GraceUntil.Equal(ms(tc.grace)) {
				t.Errorf("Lookup = token %s grace %v; want %s, %v", keys.Redact(look.Token), look.GraceUntil, keys.Redact(newer), ms(tc.grace))
			}
		}

		// Deleting the active key kills the tokens in grace too.
		if _, err := st.Delete(ctx, []string{newer}); err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{k.Token, newTok, newer} {
			_, err := st.Lookup(ctx, tok)
			wantNotFound(t, "Lookup after delete", err)
		}
	})

	t.Run("past grace is dead", func(t *testing.T) {
		k := mustCreate(t, st, &keys.Key{Token: token("n2")})
		newTok := token("n2-new")
		grace := time.Now().Add(-time.Second)
		if _, err := st.Regenerate(ctx, k.Token, newTok, &grace, nil); err != nil {
			t.Fatal(err)
		}
		_, err := st.Lookup(ctx, k.Token)
		wantNotFound(t, "Lookup old after grace", err)
		if _, err := st.Lookup(ctx, newTok); err != nil {
			t.Errorf("Lookup new: %v", err)
		}
	})

	t.Run("live row wins over a token in grace", func(t *testing.T) {
		// A new key may reuse a token that is only in grace; Get finds the
		// live row and Lookup prefers it.
		k := mustCreate(t, st, &keys.Key{Token: token("n3")})
		newTok := token("n3-new")
		grace := time.Now().Add(time.Hour)
		if _, err := st.Regenerate(ctx, k.Token, newTok, &grace, nil); err != nil {
			t.Fatal(err)
		}
		again := mustCreate(t, st, &keys.Key{Token: k.Token, Spend: 42})
		look, err := st.Lookup(ctx, k.Token)
		if err != nil {
			t.Fatal(err)
		}
		if look.Token != again.Token || look.GraceUntil != nil || look.Spend != 42 {
			t.Errorf("Lookup = %s grace %v spend %v; want the live row", keys.Redact(look.Token), look.GraceUntil, look.Spend)
		}
	})
}

// ---- AddSpend ----

func (s *suite) testAddSpend(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	a := mustCreate(t, st, &keys.Key{Token: token("o1"), Spend: 1.5})
	b := mustCreate(t, st, &keys.Key{Token: token("o2")})
	c := mustCreate(t, st, fullKey(token("o3")))

	if err := st.AddSpend(ctx, map[string]float64{a.Token: 0.25, b.Token: 2, token("zz"): 5}); err != nil {
		t.Fatalf("AddSpend: %v", err)
	}
	for _, tc := range []struct {
		k    *keys.Key
		want float64
	}{{a, 1.75}, {b, 2}, {c, c.Spend}} {
		if got := mustGet(t, st, tc.k.Token).Spend; got != tc.want {
			t.Errorf("spend = %v, want %v", got, tc.want)
		}
	}
	// Nothing but spend (and updated_at) changes.
	got := mustGet(t, st, c.Token)
	w := want(c)
	w.UpdatedAt = got.UpdatedAt
	checkKey(t, "untouched key", w, got)

	for _, in := range []map[string]float64{nil, {}, {token("zz"): 1}} {
		if err := st.AddSpend(ctx, in); err != nil {
			t.Errorf("AddSpend(%v): %v", in, err)
		}
	}
	if err := st.AddSpend(ctx, map[string]float64{a.Token: -1.75}); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, st, a.Token).Spend; got != 0 {
		t.Errorf("spend after negative delta = %v, want 0", got)
	}
}

func (s *suite) testAddSpendConcurrent(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	var toks []string
	for i := range 4 {
		toks = append(toks, mustCreate(t, st, &keys.Key{Token: token(fmt.Sprint("p", i))}).Token)
	}
	const workers, batches = 10, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*batches)
	for w := range workers {
		wg.Go(func() {
			for b := range batches {
				// Overlapping batches in varying map order; deltas are exact
				// binary fractions so the sum is exact.
				d := map[string]float64{toks[(w+b)%4]: 0.5, toks[(w+b+1)%4]: 0.25, toks[(w+b+2)%4]: 0.125}
				errs <- st.AddSpend(ctx, d)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("AddSpend: %v", err)
		}
	}
	var sum float64
	for _, tok := range toks {
		sum += mustGet(t, st, tok).Spend
	}
	if want := float64(workers*batches) * 0.875; sum != want {
		t.Errorf("total spend = %v, want %v", sum, want)
	}
}

// ---- ResetBudgets ----

func (s *suite) testResetBudgets(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	rec := subscribe(t, st)
	now := ms(time.Now())
	past, future := now.Add(-time.Minute), now.Add(time.Hour)

	type tc struct {
		name      string
		k         *keys.Key
		wantReset bool
	}
	cases := []tc{
		{"due", &keys.Key{BudgetDuration: ptr("1d"), BudgetResetAt: ptr(past)}, true},
		{"due exactly now", &keys.Key{BudgetDuration: ptr("1h"), BudgetResetAt: ptr(now)}, true},
		{"due, expires later", &keys.Key{BudgetDuration: ptr("30d"), BudgetResetAt: ptr(past), Expires: ptr(future)}, true},
		{"not due", &keys.Key{BudgetDuration: ptr("1d"), BudgetResetAt: ptr(future)}, false},
		{"expired", &keys.Key{BudgetDuration: ptr("1d"), BudgetResetAt: ptr(past), Expires: ptr(past)}, false},
		// Expired means expires < now (spec section 4, as the Check decides).
		{"expires exactly now", &keys.Key{BudgetDuration: ptr("1d"), BudgetResetAt: ptr(past), Expires: ptr(now)}, true},
		{"no reset time", &keys.Key{BudgetDuration: ptr("1d")}, false},
		{"no duration", &keys.Key{BudgetResetAt: ptr(past)}, false},
		{"bad duration", &keys.Key{BudgetDuration: ptr("soon"), BudgetResetAt: ptr(past)}, false},
	}
	for i, c := range cases {
		c.k.Token = token(fmt.Sprint("q", i))
		c.k.Spend = 7
		c.k.MaxBudget = ptr(10.0)
		mustCreate(t, st, c.k)
	}
	rec.waitReset(t)
	// Create's own events must not count as the reset's.
	for _, c := range cases {
		rec.wait(t, "EventChanged after Create", func(e store.Event) bool {
			return e.Kind == store.EventChanged && e.Token == c.k.Token
		})
	}
	mark := rec.mark()

	n, err := st.ResetBudgets(ctx, now)
	if err != nil {
		t.Fatalf("ResetBudgets: %v", err)
	}
	wantN := 0
	for _, c := range cases {
		if c.wantReset {
			wantN++
		}
	}
	if n != wantN {
		t.Errorf("ResetBudgets = %d, want %d", n, wantN)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := mustGet(t, st, c.k.Token)
			w := want(c.k)
			if c.wantReset {
				d, err := keys.ParseDuration(*c.k.BudgetDuration)
				if err != nil {
					t.Fatal(err)
				}
				w.Spend = 0
				w.BudgetResetAt = ptr(ms(d.NextReset(now)))
				w.UpdatedAt = got.UpdatedAt
				e := rec.waitFrom(t, "EventChanged or EventBudgetReset after reset", mark, func(e store.Event) bool {
					return (e.Kind == store.EventChanged || e.Kind == store.EventBudgetReset) && e.Token == c.k.Token
				})
				if e.Kind == store.EventBudgetReset && (e.Spend != 0 || !e.BudgetResetAt.Equal(*w.BudgetResetAt)) {
					t.Errorf("EventBudgetReset = %+v, want spend 0 and budget_reset_at %v", e, *w.BudgetResetAt)
				}
			}
			checkKey(t, "after ResetBudgets", w, got)
		})
	}
	n, err = st.ResetBudgets(ctx, now)
	if err != nil || n != 0 {
		t.Errorf("second ResetBudgets = %d, %v; want 0, nil", n, err)
	}
}

// ---- AppendAudit ----

func (s *suite) testAppendAudit(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	obj := token("r1")
	given := time.Date(2024, 2, 3, 4, 5, 6, 789_654_000, time.FixedZone("Y", -3600))
	a1 := &keys.Audit{
		ID: "11111111-2222-4333-8444-555555555555", UpdatedAt: given,
		ChangedBy: "alice", ChangedByAPIKey: token("admin"), Action: keys.ActionUpdated,
		TableName: keys.KeyTable, ObjectID: obj,
		BeforeValue:   map[string]any{"spend": 1.5, "models": []any{"a"}},
		UpdatedValues: map[string]any{"spend": 2.0, "nested": map[string]any{"x": "y"}},
	}
	before := ms(time.Now())
	a2 := &keys.Audit{Action: keys.ActionDeleted, TableName: keys.KeyTable, ObjectID: obj, ChangedBy: "bob"}
	for _, a := range []*keys.Audit{a1, a2} {
		if err := st.AppendAudit(ctx, a); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
	}
	if a1.ID != "11111111-2222-4333-8444-555555555555" {
		t.Errorf("given ID replaced: %s", a1.ID)
	}
	if a2.ID == "" || a2.UpdatedAt.IsZero() {
		t.Fatalf("ID/UpdatedAt not filled: %q %v", a2.ID, a2.UpdatedAt)
	}
	if a2.UpdatedAt.Before(before) || a2.UpdatedAt.After(time.Now()) {
		t.Errorf("filled UpdatedAt = %v, want about now", a2.UpdatedAt)
	}
	a3 := &keys.Audit{Action: keys.ActionCreated, TableName: keys.KeyTable, ObjectID: obj}
	if err := st.AppendAudit(ctx, a3); err != nil {
		t.Fatal(err)
	}
	if a3.ID == a2.ID {
		t.Errorf("two audits got the same ID %s", a3.ID)
	}
	if err := st.AppendAudit(ctx, &keys.Audit{ID: a1.ID, ObjectID: obj}); err == nil {
		t.Error("AppendAudit with a duplicate ID succeeded")
	}

	ar, ok := st.(AuditReader)
	if !ok {
		t.Skip("backend does not implement storetest.AuditReader; audit rows not read back")
	}
	got, err := ar.Audits(ctx, obj)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("Audits = %d rows, want 3", len(got))
	}
	byID := map[string]*keys.Audit{}
	for _, a := range got {
		byID[a.ID] = a
	}
	for _, w := range []*keys.Audit{a1, a2, a3} {
		g := byID[w.ID]
		if g == nil {
			t.Errorf("audit %s missing", w.ID)
			continue
		}
		wc := *w
		wc.UpdatedAt = ms(w.UpdatedAt)
		if g.UpdatedAt.Location() != time.UTC {
			t.Errorf("audit UpdatedAt location %v", g.UpdatedAt.Location())
		}
		// nil and empty maps are both fine for absent values.
		if len(wc.BeforeValue) == 0 && len(g.BeforeValue) == 0 {
			wc.BeforeValue, g.BeforeValue = nil, nil
		}
		if len(wc.UpdatedValues) == 0 && len(g.UpdatedValues) == 0 {
			wc.UpdatedValues, g.UpdatedValues = nil, nil
		}
		wj, _ := json.Marshal(wc)
		gj, _ := json.Marshal(g)
		if string(wj) != string(gj) {
			t.Errorf("audit mismatch\n got: %s\nwant: %s", gj, wj)
		}
	}
	other, err := ar.Audits(ctx, token("zz"))
	if err != nil || len(other) != 0 {
		t.Errorf("Audits(other) = %d, %v; want none", len(other), err)
	}
}

// ---- Subscribe ----

// recorder collects the events one subscriber sees.
type recorder struct {
	mu     sync.Mutex
	events []store.Event
	notify chan struct{}
	unsub  func()
}

func subscribe(t *testing.T, st store.Store) *recorder {
	t.Helper()
	r := &recorder{notify: make(chan struct{}, 1)}
	r.unsub = st.Subscribe(func(e store.Event) {
		r.mu.Lock()
		r.events = append(r.events, e)
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	})
	t.Cleanup(r.unsub)
	return r
}

func (r *recorder) snapshot() []store.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// wait waits until some recorded event matches, failing after EventTimeout.
func (r *recorder) wait(t *testing.T, what string, match func(store.Event) bool) store.Event {
	t.Helper()
	return r.waitFrom(t, what, 0, match)
}

// mark returns how many events were recorded so far, for waitFrom.
func (r *recorder) mark() int { return len(r.snapshot()) }

// waitFrom is wait, considering only events recorded after the first from.
func (r *recorder) waitFrom(t *testing.T, what string, from int, match func(store.Event) bool) store.Event {
	t.Helper()
	deadline := time.NewTimer(EventTimeout)
	defer deadline.Stop()
	for {
		for _, e := range r.snapshot()[from:] {
			if match(e) {
				return e
			}
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("%s: no matching event within %v; got %+v", what, EventTimeout, r.snapshot())
		}
	}
}

// waitReset waits for EventReset and checks that it came first.
func (r *recorder) waitReset(t *testing.T) {
	t.Helper()
	r.wait(t, "EventReset", func(e store.Event) bool { return e.Kind == store.EventReset })
	if ev := r.snapshot(); ev[0].Kind != store.EventReset {
		t.Errorf("first event = %+v, want EventReset", ev[0])
	}
}

func (s *suite) testSubscribe(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	r1 := subscribe(t, st)
	r2 := subscribe(t, st)
	r1.waitReset(t)
	r2.waitReset(t)

	changed := func(r *recorder, what, tok string) {
		t.Helper()
		r.wait(t, what, func(e store.Event) bool { return e.Kind == store.EventChanged && e.Token == tok })
	}

	k := mustCreate(t, st, &keys.Key{Token: token("s1")})
	changed(r1, "Create", k.Token)
	changed(r2, "Create", k.Token)

	b := mustCreate(t, st, &keys.Key{Token: token("s2"), Spend: 1})
	if err := st.AddSpend(ctx, map[string]float64{k.Token: 2.5, b.Token: 0.5, token("zz"): 1}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tok   string
		spend float64
	}{{k.Token, 2.5}, {b.Token, 1.5}} {
		e := r1.wait(t, "AddSpend", func(e store.Event) bool { return e.Kind == store.EventSpend && e.Token == tc.tok })
		if e.Spend != tc.spend {
			t.Errorf("EventSpend spend = %v, want %v", e.Spend, tc.spend)
		}
	}

	// Each write below must produce its own event; count them per token.
	count := func(r *recorder, tok string) int {
		n := 0
		for _, e := range r.snapshot() {
			if e.Kind == store.EventChanged && e.Token == tok {
				n++
			}
		}
		return n
	}
	waitCount := func(what, tok string, n int) {
		t.Helper()
		r1.wait(t, what, func(store.Event) bool { return count(r1, tok) >= n })
	}
	base := count(r1, k.Token)
	if _, err := st.Update(ctx, k.Token, func(c *keys.Key) error { c.Models = []string{"x"}; return nil }); err != nil {
		t.Fatal(err)
	}
	waitCount("Update", k.Token, base+1)
	if _, err := st.SetBlocked(ctx, k.Token, true); err != nil {
		t.Fatal(err)
	}
	waitCount("SetBlocked", k.Token, base+2)

	newTok := token("s1-new")
	grace := time.Now().Add(time.Hour)
	if _, err := st.Regenerate(ctx, k.Token, newTok, &grace, nil); err != nil {
		t.Fatal(err)
	}
	waitCount("Regenerate old", k.Token, base+3)
	changed(r1, "Regenerate new", newTok)

	mark := r1.mark()
	if _, err := st.Delete(ctx, []string{newTok, b.Token}); err != nil {
		t.Fatal(err)
	}
	waitCount("Delete", newTok, 2)
	r1.waitFrom(t, "Delete", mark, func(e store.Event) bool { return e.Kind == store.EventChanged && e.Token == b.Token })

	// After unsubscribing, r2 sees nothing more; r1 still does.
	r2.unsub()
	n2 := len(r2.snapshot())
	c := mustCreate(t, st, &keys.Key{Token: token("s3")})
	changed(r1, "Create after other unsubscribed", c.Token)
	if _, err := st.Update(ctx, c.Token, func(k *keys.Key) error { k.TPMLimit = ptr[int64](5); return nil }); err != nil {
		t.Fatal(err)
	}
	waitCount("Update after other unsubscribed", c.Token, 2)
	time.Sleep(100 * time.Millisecond) // give an async feed a moment to misdeliver
	if got := r2.snapshot(); len(got) != n2 {
		t.Errorf("unsubscribed recorder got %+v", got[n2:])
	}
	r2.unsub() // unsubscribing twice is harmless
}

// ---- Ping / Close ----

func (s *suite) testPing(t *testing.T) {
	st := s.store(t)
	if err := st.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func (s *suite) testClose(t *testing.T) {
	st := s.open(t)
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := st.Ping(t.Context()); err == nil {
		t.Error("Ping after Close succeeded")
	}
}
