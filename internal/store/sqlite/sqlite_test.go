package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
