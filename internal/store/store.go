// Package store is the contract shared by the key stores: the operations the
// management API, the ext_authz cache and the spend/budget jobs need, and the
// change feed that invalidates caches across replicas.
//
// Two backends implement it, postgres (production, shared by replicas) and
// sqlite (embedded, the default); storetest holds the conformance suite both
// must pass. Backends translate driver errors into keys.ErrNotFound,
// keys.ErrConflict (*keys.ConflictError), keys.ErrNoReference
// (*keys.ReferenceError: a foreign key such as budget_id), keys.ErrInvalid
// (*keys.InvalidError: a value no column can hold, checked with
// keys.CheckRanges before SQL) and keys.ErrUnavailable (unreachable,
// broken connection, timeout). JSON object columns are decoded with
// keys.DecodeObject (numbers as json.Number) and an update writes one only
// when its value changed.
package store

import (
	"context"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// Store is a key store. All methods are safe for concurrent use.
type Store interface {
	// Create inserts k. k.Token must be set. CreatedAt/UpdatedAt are filled
	// when nil. A duplicate token or key_alias is a *keys.ConflictError.
	Create(ctx context.Context, k *keys.Key) error

	// Get returns the key whose token is hash, or keys.ErrNotFound.
	Get(ctx context.Context, hash string) (*keys.Key, error)

	// GetByAlias returns the key with that key_alias, or keys.ErrNotFound.
	GetByAlias(ctx context.Context, alias string) (*keys.Key, error)

	// Lookup is the data plane's read: like Get, but a token rotated out with
	// a grace period whose revoke_at is still in the future resolves to the
	// active key, with GraceUntil set to its revoke_at.
	Lookup(ctx context.Context, hash string) (*keys.Key, error)

	// Update loads the key under a row lock, calls fn to change it, and
	// writes back every known column except token (spend too, so fn may set
	// it; the lock keeps concurrent spend increments from being lost).
	// UpdatedAt is set to now. Columns the store does not know are left
	// untouched. A key_alias collision is a *keys.ConflictError; a missing key
	// keys.ErrNotFound; an error from fn aborts and is returned as is.
	Update(ctx context.Context, hash string, fn func(k *keys.Key) error) (*keys.Key, error)

	// Delete removes the keys with these hashes (missing ones are ignored)
	// and returns the rows it removed.
	Delete(ctx context.Context, hashes []string) ([]*keys.Key, error)

	// List returns one page of keys matching q and the total match count.
	List(ctx context.Context, q ListQuery) (ListResult, error)

	// SetBlocked sets blocked and returns the updated key.
	SetBlocked(ctx context.Context, hash string, blocked bool) (*keys.Key, error)

	// Regenerate moves the row from oldHash to newHash, keeping every other
	// column, after fn (may be nil) has applied further changes (new
	// key_name, rotation_count, ...). If graceUntil is non-nil the old token
	// keeps resolving through Lookup until then; otherwise it dies at once.
	// A newHash already in use is a *keys.ConflictError on "token".
	Regenerate(ctx context.Context, oldHash, newHash string, graceUntil *time.Time, fn func(k *keys.Key) error) (*keys.Key, error)

	// AddSpend adds each delta to its key's spend (spend = spend + delta) in
	// one batch, locking rows in a deterministic (sorted) order. Unknown
	// hashes are ignored.
	AddSpend(ctx context.Context, deltas map[string]float64) error

	// ResetBudgets sets spend to 0 and moves budget_reset_at to the next
	// boundary (keys.Duration.NextReset from now) for every key with
	// budget_reset_at <= now that has not expired. It returns how many keys
	// it reset.
	ResetBudgets(ctx context.Context, now time.Time) (int, error)

	// ListTokens calls fn with every token hash Lookup resolves: each key's
	// token and each rotated-out token still in its grace period, in pages
	// (no connection is held while fn runs), in no promised order, possibly
	// with duplicates. An error from fn stops it and is returned as is. It
	// feeds the data plane's filter of known keys.
	ListTokens(ctx context.Context, fn func(hash string) error) error

	// AppendAudit writes one "LiteLLM_AuditLog" row.
	AppendAudit(ctx context.Context, a *keys.Audit) error

	// Subscribe registers fn for change events and returns a function that
	// unregisters it. fn is called from the feed's goroutine and must not
	// block. The first event a subscriber sees after the feed connects (and
	// after every reconnect) is EventReset.
	Subscribe(fn func(Event)) (unsubscribe func())

	// Ping reports whether the store answers (readiness).
	Ping(ctx context.Context) error

	// Close stops the feed and releases connections.
	Close() error
}

// EventKind says what a change event means for a cache.
type EventKind uint8

const (
	// EventChanged: the key's configuration changed, or it was created,
	// deleted or rotated out. Drop it from caches.
	EventChanged EventKind = iota + 1
	// EventSpend: only spend changed (and updated_at). Spend holds the new
	// value; a cache may update its copy instead of reloading the row.
	EventSpend
	// EventReset: the feed (re)connected. Notifications sent while it was
	// down are lost, so every cached key may be stale: purge.
	EventReset
	// EventDown: the feed lost its connection and is reconnecting, or is
	// connected but deaf (its heartbeat stopped arriving). Cached keys stay
	// usable for a bounded time; an EventReset follows once it is back.
	EventDown
	// EventBudgetReset: the budget reset job (ResetBudgets) set the key's
	// spend to Spend and its budget_reset_at to BudgetResetAt, and changed
	// nothing else. A cache may apply it in place instead of reloading.
	EventBudgetReset

	// Team, user and membership events (store.Org). Team, User and Budget
	// name the row.

	// EventTeamChanged: a LiteLLM_TeamTable row changed (or was created or
	// deleted). Drop it (Team) from caches.
	EventTeamChanged
	// EventTeamSpend: only the team's spend changed; Spend is the new value.
	EventTeamSpend
	// EventUserChanged: a LiteLLM_UserTable row changed (User).
	EventUserChanged
	// EventUserSpend: only the user's spend changed; Spend is the new value.
	EventUserSpend
	// EventMemberChanged: the (Team, User) membership changed.
	EventMemberChanged
	// EventMemberSpend: only the membership's spend changed.
	EventMemberSpend
	// EventBudgetChanged: a LiteLLM_BudgetTable row changed (Budget); any
	// membership pointing at it may have new limits.
	EventBudgetChanged
)

// Event is one change-feed event.
type Event struct {
	Kind  EventKind
	Token string  // the key's hash (EventChanged, EventSpend, EventBudgetReset)
	Spend float64 // the new spend (EventSpend, EventBudgetReset, EventTeamSpend, EventUserSpend, EventMemberSpend)
	// BudgetResetAt is the new budget_reset_at (EventBudgetReset).
	BudgetResetAt time.Time

	Team   string // team_id (EventTeam*, EventMember*)
	User   string // user_id (EventUser*, EventMember*)
	Budget string // budget_id (EventBudgetChanged)
}

// Sort columns List accepts (the whitelist: anything else is rejected).
var SortColumns = []string{"spend", "max_budget", "created_at", "updated_at", "token", "key_alias"}

// ListQuery filters, sorts and pages List. Empty filter strings mean "no
// filter". Page starts at 1.
type ListQuery struct {
	Page, Size     int
	UserID         string
	TeamID         string
	OrganizationID string
	KeyHash        string
	KeyAlias       string
	SortBy         string // one of SortColumns; "" = created_at desc, token desc
	Desc           bool   // sort direction for SortBy
	// OrTeamIDs, when set, makes the result the keys the other filters
	// match (none when there are no other filters) plus every key of these
	// teams: LiteLLM's list of a user's own keys and the keys of the teams
	// it is an admin of. Empty: no effect.
	OrTeamIDs []string
}

// ListResult is one page of List.
type ListResult struct {
	Keys  []*keys.Key
	Total int
}
