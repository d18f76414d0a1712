package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
	"github.com/virtualkeys/sidecar/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "keys.db"))
	})
}

func TestPersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	ctx := t.Context()
	alias := "persist"
	s := open(t, path)
	k := &keys.Key{Token: keys.HashHex(keys.Generate()), KeyAlias: &alias, Spend: 3.25, Models: []string{"m"}}
	if err := s.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for i := range 2 { // the second reopen checks migrations stay idempotent
		s = open(t, path)
		got, err := s.GetByAlias(ctx, alias)
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		if got.Token != k.Token || got.Spend != 3.25 || len(got.Models) != 1 {
			t.Errorf("reopen %d: got %+v", i, got)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sidecar_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(entries) {
		t.Errorf("sidecar_migrations has %d rows, want %d (one per migration file)", n, len(entries))
	}
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

// TestExtraColumns: a newer LiteLLM schema may have columns we do not know;
// reads ignore them and updates leave them untouched.
func TestExtraColumns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	ctx := t.Context()
	s := open(t, path)
	defer s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `ALTER TABLE "LiteLLM_VerificationToken" ADD COLUMN object_permission_id TEXT`); err != nil {
		t.Fatal(err)
	}
	tok := keys.HashHex("sk-extra")
	if err := s.Create(ctx, &keys.Key{Token: tok}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE "LiteLLM_VerificationToken" SET object_permission_id = 'perm' WHERE token = ?`, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, tok, func(k *keys.Key) error { k.Spend = 2; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, tok); err != nil {
		t.Fatal(err)
	}
	var perm string
	if err := db.QueryRowContext(ctx, `SELECT object_permission_id FROM "LiteLLM_VerificationToken" WHERE token = ?`, tok).Scan(&perm); err != nil {
		t.Fatal(err)
	}
	if perm != "perm" {
		t.Errorf("unknown column = %q after Update, want untouched", perm)
	}
}

// TestTwoStoresOneFile: two Stores (as two processes would) writing the same
// file concurrently never surface SQLITE_BUSY.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	ctx := t.Context()
	a, b := open(t, path), open(t, path)
	defer a.Close()
	defer b.Close()
	tok := keys.HashHex("sk-shared")
	if err := a.Create(ctx, &keys.Key{Token: tok}); err != nil {
		t.Fatal(err)
	}
	const perStore = 50
	var wg sync.WaitGroup
	errs := make(chan error, 4*perStore)
	for i, s := range []*sqlite.Store{a, b, a, b} {
		wg.Go(func() {
			for j := range perStore {
				if j%5 == 0 {
					errs <- s.Create(ctx, &keys.Key{Token: keys.HashHex(fmt.Sprintf("sk-%d-%d", i, j))})
					continue
				}
				errs <- s.AddSpend(ctx, map[string]float64{tok: 1})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent write: %v", err)
		}
	}
	k, err := b.Get(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := float64(4 * perStore * 4 / 5); k.Spend != want {
		t.Errorf("spend = %v, want %v", k.Spend, want)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.db")
	if err := os.WriteFile(corrupt, []byte(strings.Repeat("this is not a sqlite database\n", 200)), 0o600); err != nil {
		t.Fatal(err)
	}
	roDir := filepath.Join(dir, "ro")
	if err := os.Mkdir(roDir, 0o500); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		skip    bool
		invalid bool
	}{
		{"empty path", "", false, true},
		{"memory", ":memory:", false, true},
		{"uri", "file:x.db", false, true},
		{"query in path", filepath.Join(dir, "a.db?_pragma=foo"), false, true},
		{"missing directory", filepath.Join(dir, "nope", "keys.db"), false, false},
		{"directory", dir, false, false},
		{"corrupt file", corrupt, false, false},
		{"parent is a file", filepath.Join(corrupt, "keys.db"), false, false},
		{"unwritable directory", filepath.Join(roDir, "keys.db"), os.Geteuid() == 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip {
				t.Skip("running as root: permissions are not enforced")
			}
			s, err := sqlite.Open(t.Context(), tc.path, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", tc.path)
			}
			if tc.invalid != errors.Is(err, keys.ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = %v, want %v (err %v)", !tc.invalid, tc.invalid, err)
			}
			if !strings.Contains(err.Error(), "sqlite") {
				t.Errorf("error %q does not say it is the sqlite store", err)
			}
			t.Logf("Open(%q): %v", tc.path, err)
		})
	}
}

func TestCanceledContext(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tok := keys.HashHex("sk-cancel")
	if err := s.Create(ctx, &keys.Key{Token: tok}); err == nil {
		t.Error("Create with canceled context succeeded")
	}
	if _, err := s.Get(t.Context(), tok); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Get after canceled Create = %v, want ErrNotFound", err)
	}
}

// TestSpendEventsInCommitOrder: with concurrent positive increments, every
// subscriber sees each key's spend grow monotonically, and the last event
// carries the final value (a cache applying EventSpend ends up right).
func TestSpendEventsInCommitOrder(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	ctx := t.Context()
	tok := keys.HashHex("sk-order")
	if err := s.Create(ctx, &keys.Key{Token: tok}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []float64
	unsub := s.Subscribe(func(e store.Event) {
		if e.Kind == store.EventSpend && e.Token == tok {
			mu.Lock()
			seen = append(seen, e.Spend)
			mu.Unlock()
		}
	})
	defer unsub()
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if err := s.AddSpend(ctx, map[string]float64{tok: 1}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != workers*each {
		t.Fatalf("saw %d spend events, want %d", len(seen), workers*each)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("spend events out of order at %d: %v then %v", i, seen[i-1], seen[i])
		}
	}
	if last := seen[len(seen)-1]; last != workers*each {
		t.Errorf("last spend event = %v, want %d", last, workers*each)
	}
}

// TestSubscriberMayRead: subscribers run outside the write lock, so one that
// reads the store from its callback does not deadlock.
func TestSubscriberMayRead(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	ctx := t.Context()
	tok := keys.HashHex("sk-reader")
	var got *keys.Key
	unsub := s.Subscribe(func(e store.Event) {
		if e.Kind == store.EventChanged && e.Token == tok {
			got, _ = s.Get(ctx, tok)
		}
	})
	defer unsub()
	if err := s.Create(ctx, &keys.Key{Token: tok, Spend: 4}); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Spend != 4 {
		t.Errorf("subscriber read %+v, want the committed key", got)
	}
}

// TestTimeRange: timestamps outside years 0-9999 cannot be stored sortably
// and are rejected as invalid input rather than stored wrong.
func TestTimeRange(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	ctx := t.Context()
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	tok := keys.HashHex("sk-far")
	if err := s.Create(ctx, &keys.Key{Token: tok, Expires: &far}); !errors.Is(err, keys.ErrInvalid) {
		t.Errorf("Create(expires year 10000) = %v, want ErrInvalid", err)
	}
	if err := s.Create(ctx, &keys.Key{Token: tok}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Update(ctx, tok, func(k *keys.Key) error { k.BudgetResetAt = &far; return nil })
	if !errors.Is(err, keys.ErrInvalid) {
		t.Errorf("Update(budget_reset_at year 10000) = %v, want ErrInvalid", err)
	}
	edge := time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC)
	k, err := s.Update(ctx, tok, func(k *keys.Key) error { k.Expires = &edge; return nil })
	if err != nil || !k.Expires.Equal(edge) {
		t.Errorf("Update(expires 9999-12-31) = %v, %v", k, err)
	}
}

// FuzzStrings: arbitrary strings in text columns and JSON values round-trip
// and bad input never panics; filters are bound, never spliced.
func FuzzStrings(f *testing.F) {
	for _, s := range []string{"", "a", "'; DROP TABLE \"LiteLLM_VerificationToken\"; --", "ünï✓", "\x00nul", "%_", "\xff\xfe"} {
		f.Add(s, s)
	}
	s, err := sqlite.Open(f.Context(), filepath.Join(f.TempDir(), "keys.db"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	var n int
	f.Fuzz(func(t *testing.T, alias, user string) {
		ctx := t.Context()
		n++
		tok := keys.HashHex(fmt.Sprint("sk-fuzz-", n))
		k := &keys.Key{Token: tok, KeyAlias: &alias, UserID: &user, Models: []string{user}}
		err := s.Create(ctx, k)
		if errors.Is(err, keys.ErrConflict) {
			return // alias already used by an earlier input
		}
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		defer s.Delete(ctx, []string{tok})
		got, err := s.Get(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if *got.KeyAlias != alias || *got.UserID != user {
			t.Errorf("round trip: alias %q user %q, want %q %q", *got.KeyAlias, *got.UserID, alias, user)
		}
		res, err := s.List(ctx, store.ListQuery{Page: 1, Size: 10, UserID: user, KeyAlias: alias})
		if err != nil {
			t.Fatal(err)
		}
		if res.Total != 1 || len(res.Keys) != 1 || res.Keys[0].Token != tok {
			t.Errorf("List by user/alias: total %d", res.Total)
		}
		if _, err := s.List(ctx, store.ListQuery{Page: 1, Size: 10, SortBy: alias}); err == nil && alias != "" && !slices.Contains(store.SortColumns, alias) {
			t.Errorf("List accepted sort column %q", alias)
		}
	})
}

// TestConcurrentOpen: processes starting together on a new file each apply
// the migrations at most once and none fails on a lock.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	const n = 4
	stores := make([]*sqlite.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = sqlite.Open(t.Context(), path, nil) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		if err := stores[i].Ping(t.Context()); err != nil {
			t.Errorf("Ping %d: %v", i, err)
		}
		stores[i].Close()
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var dup int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) - count(DISTINCT version) FROM sidecar_migrations`).Scan(&dup); err != nil {
		t.Fatal(err)
	}
	if dup != 0 {
		t.Errorf("%d migrations applied twice", dup)
	}
}

// TestPanicInFn: a panic in caller code inside a write (recovered further
// up, e.g. by an HTTP panic guard) must not leave the writer stuck in a
// transaction.
func TestPanicInFn(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "keys.db"))
	defer s.Close()
	ctx := t.Context()
	tok := keys.HashHex("sk-panic")
	if err := s.Create(ctx, &keys.Key{Token: tok}); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic in fn was swallowed")
			}
		}()
		_, _ = s.Update(ctx, tok, func(k *keys.Key) error { k.Spend = 9; panic("boom") })
	}()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.AddSpend(wctx, map[string]float64{tok: 1}); err != nil {
		t.Fatalf("write after panic: %v", err)
	}
	k, err := s.Get(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if k.Spend != 1 {
		t.Errorf("spend = %v, want 1 (the panicking update rolled back)", k.Spend)
	}
}

func TestOrgConformance(t *testing.T) {
	storetest.RunOrg(t, func(t *testing.T) storetest.OrgStore {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "org.db"), nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
