// Package sqlite is the embedded key store: a store.Store on one SQLite
// file (modernc.org/sqlite, no cgo), the sidecar's default backend.
//
// It keeps LiteLLM's tables and column names in SQLite types (JSON objects
// and arrays as JSON text, timestamps as sortable UTC text with millisecond
// precision). The database runs in WAL mode with one writer connection
// (transactions BEGIN IMMEDIATE, serialised in the process) and a small pool
// of read-only connections. The change feed is in-process: after each commit
// the write's events are delivered synchronously, in commit order, to every
// subscriber, outside the write lock. A single SQLite file is not shared by
// replicas, so no cross-process feed is needed.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

// ReadConns is the size of the read pool.
const ReadConns = 4

// busyTimeoutMS is how long a connection waits for another process's lock.
const busyTimeoutMS = 5000

// Store is a store.Store on a SQLite file. Create it with Open.
type Store struct {
	w   *sql.DB // one connection; every write goes through it
	r   *sql.DB // read-only pool
	log *slog.Logger

	// wsem serialises write transactions in the process (a one-slot
	// semaphore, so waiting honours the context).
	wsem chan struct{}

	// emitMu orders event delivery by commit order: a writer takes it before
	// releasing wsem and holds it while calling subscribers.
	emitMu sync.Mutex
	subMu  sync.Mutex
	subs   map[uint64]func(store.Event)
	nextID uint64

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the SQLite database at path and applies
// the embedded migrations. The directory must exist. log may be nil.
func Open(ctx context.Context, path string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite: path %q: must be a plain file path: %w", path, keys.ErrInvalid)
	}
	common := url.Values{}
	common.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	common.Add("_pragma", "foreign_keys(1)")
	common.Add("_pragma", "synchronous(NORMAL)")

	wq := url.Values{}
	for k, v := range common {
		wq[k] = append([]string(nil), v...)
	}
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Set("_txlock", "immediate")
	w, err := sql.Open("sqlite", path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	s := &Store{w: w, log: log, wsem: make(chan struct{}, 1), subs: map[uint64]func(store.Event){}}
	// Switching a new file to WAL takes an exclusive lock without waiting
	// on the busy handler: a process opening the same new file at the same
	// moment gets SQLITE_BUSY. Retry that briefly.
	err = w.PingContext(ctx)
	for try := 0; err != nil && isBusy(err) && try < 100 && ctx.Err() == nil; try++ {
		time.Sleep(10 * time.Millisecond)
		err = w.PingContext(ctx)
	}
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	if err := s.migrate(ctx); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}

	rq := common
	rq.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	r.SetMaxOpenConns(ReadConns)
	r.SetMaxIdleConns(ReadConns)
	if err := r.PingContext(ctx); err != nil {
		_ = w.Close()
		_ = r.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	s.r = r
	return s, nil
}

// Ping reports whether both the read pool and the writer answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes the database. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.subMu.Lock()
		s.subs = map[uint64]func(store.Event){}
		s.subMu.Unlock()
		s.closeErr = errors.Join(s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// Subscribe registers fn for change events. fn first receives EventReset,
// from within Subscribe; after that it is called synchronously by each
// writer after its commit, one call at a time in commit order. fn must not
// block and must not write to the store. An event being delivered when
// unsubscribe is called may still reach fn.
func (s *Store) Subscribe(fn func(store.Event)) (unsubscribe func()) {
	var id uint64
	s.subMu.Lock()
	func() {
		defer s.subMu.Unlock()
		id = s.nextID
		s.nextID++
		s.subs[id] = fn
		// Under subMu: no writer can copy the list (and so deliver to fn)
		// until fn has seen EventReset.
		fn(store.Event{Kind: store.EventReset})
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.subMu.Lock()
			delete(s.subs, id)
			s.subMu.Unlock()
		})
	}
}

// write runs fn in one BEGIN IMMEDIATE transaction on the writer and, after
// a successful commit, delivers the events fn returned.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) ([]store.Event, error)) error {
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("sqlite: waiting for the writer: %w", ctx.Err())
	}
	locked := true
	defer func() {
		if locked {
			<-s.wsem
		}
	}()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	// Roll back on error and also if fn (caller code) panics, so the one
	// writer connection is never left inside a transaction.
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	evs, err := fn(tx)
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	if len(evs) == 0 {
		return nil
	}
	s.emitMu.Lock()
	<-s.wsem // release the writer before calling subscribers
	locked = false
	defer s.emitMu.Unlock()
	s.emit(evs)
	return nil
}

// emit calls every subscriber with evs. The caller holds emitMu.
func (s *Store) emit(evs []store.Event) {
	s.subMu.Lock()
	fns := make([]func(store.Event), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.subMu.Unlock()
	for _, fn := range fns {
		for _, e := range evs {
			fn(e)
		}
	}
}

// isBusy reports SQLite's SQLITE_BUSY / "database is locked".
func isBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}
