package mgmt_test

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// memStore is a minimal in-memory store used only while the real backends
// are not available to this package's tests. TODO: remove.
type memStore struct {
	mu     sync.Mutex
	rows   map[string]*keys.Key
	grace  map[string]graceRec
	audits []*keys.Audit
}

type graceRec struct {
	active string
	until  time.Time
}

func newMemStore() *memStore {
	return &memStore{rows: map[string]*keys.Key{}, grace: map[string]graceRec{}}
}

func clone(k *keys.Key) *keys.Key {
	b, _ := json.Marshal(k)
	var c keys.Key
	_ = json.Unmarshal(b, &c)
	c.GraceUntil = k.GraceUntil
	return &c
}

func (m *memStore) aliasTaken(alias *string, self string) error {
	if alias == nil {
		return nil
	}
	for t, r := range m.rows {
		if t != self && r.KeyAlias != nil && *r.KeyAlias == *alias {
			return &keys.ConflictError{Field: "key_alias", Value: *alias}
		}
	}
	return nil
}

func (m *memStore) Create(_ context.Context, k *keys.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.rows[k.Token]; ok {
		return &keys.ConflictError{Field: "token", Value: k.Token}
	}
	if err := m.aliasTaken(k.KeyAlias, k.Token); err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	if k.CreatedAt == nil {
		k.CreatedAt = &now
	}
	if k.UpdatedAt == nil {
		k.UpdatedAt = &now
	}
	m.rows[k.Token] = clone(k)
	return nil
}

func (m *memStore) Get(_ context.Context, hash string) (*keys.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.rows[hash]; ok {
		return clone(r), nil
	}
	return nil, keys.ErrNotFound
}

func (m *memStore) GetByAlias(_ context.Context, alias string) (*keys.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.rows {
		if r.KeyAlias != nil && *r.KeyAlias == alias {
			return clone(r), nil
		}
	}
	return nil, keys.ErrNotFound
}

func (m *memStore) Lookup(ctx context.Context, hash string) (*keys.Key, error) {
	k, err := m.Get(ctx, hash)
	if err == nil {
		return k, nil
	}
	m.mu.Lock()
	g, ok := m.grace[hash]
	m.mu.Unlock()
	if !ok || !time.Now().Before(g.until) {
		return nil, keys.ErrNotFound
	}
	k, err = m.Get(ctx, g.active)
	if err != nil {
		return nil, err
	}
	k.GraceUntil = &g.until
	return k, nil
}

func (m *memStore) Update(_ context.Context, hash string, fn func(k *keys.Key) error) (*keys.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[hash]
	if !ok {
		return nil, keys.ErrNotFound
	}
	c := clone(r)
	if err := fn(c); err != nil {
		return nil, err
	}
	if err := m.aliasTaken(c.KeyAlias, hash); err != nil {
		return nil, err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	c.UpdatedAt = &now
	c.Token = hash
	m.rows[hash] = clone(c)
	return c, nil
}

func (m *memStore) Delete(_ context.Context, hashes []string) ([]*keys.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*keys.Key
	for _, h := range hashes {
		if r, ok := m.rows[h]; ok {
			out = append(out, r)
			delete(m.rows, h)
		}
	}
	return out, nil
}

func (m *memStore) List(_ context.Context, q store.ListQuery) (store.ListResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var all []*keys.Key
	eq := func(f string, p *string) bool { return f == "" || (p != nil && *p == f) }
	for _, r := range m.rows {
		if eq(q.UserID, r.UserID) && eq(q.TeamID, r.TeamID) && eq(q.OrganizationID, r.OrganizationID) &&
			eq(q.KeyAlias, r.KeyAlias) && (q.KeyHash == "" || q.KeyHash == r.Token) {
			all = append(all, clone(r))
		}
	}
	slices.SortFunc(all, func(a, b *keys.Key) int {
		var c int
		switch q.SortBy {
		case "spend":
			c = cmp.Compare(a.Spend, b.Spend)
		case "", "created_at":
			c = a.CreatedAt.Compare(*b.CreatedAt)
		}
		if c == 0 {
			c = cmp.Compare(a.Token, b.Token)
		}
		if q.Desc || q.SortBy == "" {
			c = -c
		}
		return c
	})
	res := store.ListResult{Total: len(all)}
	start := (max(q.Page, 1) - 1) * q.Size
	if start < len(all) {
		res.Keys = all[start:min(start+q.Size, len(all))]
	}
	return res, nil
}

func (m *memStore) SetBlocked(ctx context.Context, hash string, blocked bool) (*keys.Key, error) {
	return m.Update(ctx, hash, func(k *keys.Key) error { k.Blocked = &blocked; return nil })
}

func (m *memStore) Regenerate(_ context.Context, oldHash, newHash string, graceUntil *time.Time, fn func(k *keys.Key) error) (*keys.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[oldHash]
	if !ok {
		return nil, keys.ErrNotFound
	}
	if _, ok := m.rows[newHash]; ok {
		return nil, &keys.ConflictError{Field: "token", Value: newHash}
	}
	c := clone(r)
	if fn != nil {
		if err := fn(c); err != nil {
			return nil, err
		}
	}
	c.Token = newHash
	delete(m.rows, oldHash)
	m.rows[newHash] = clone(c)
	if graceUntil != nil {
		m.grace[oldHash] = graceRec{newHash, *graceUntil}
	}
	return c, nil
}

func (m *memStore) AppendAudit(_ context.Context, a *keys.Audit) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := *a
	m.audits = append(m.audits, &c)
	return nil
}

func (m *memStore) Audits(_ context.Context, objectID string) ([]*keys.Audit, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*keys.Audit
	for _, a := range m.audits {
		if a.ObjectID == objectID {
			out = append(out, a)
		}
	}
	return out, nil
}

func (m *memStore) Close() error { return nil }
