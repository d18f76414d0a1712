// Package keys is the virtual-key domain: the Key record as LiteLLM stores it,
// raw-key generation and hashing, the raw-or-hash rule, LiteLLM's duration
// grammar, the calendar budget-reset schedule and the model-access rules.
//
// It does no I/O. Stores, the management API and the ext_authz Check all speak
// in these types; each edge maps the sentinel errors below to its own wire codes.
package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Sentinel errors. Backends translate driver errors into these; the edges
// (HTTP status, gRPC response) map them to wire codes.
var (
	// ErrNotFound: no key (or no row) matches.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a uniqueness rule was violated (token or key_alias).
	// Backends wrap it in a *ConflictError naming the field.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: input that fails a domain rule (bad duration, bad custom key)
	// or that a column cannot hold (a number out of its range). Backends
	// wrap it in an *InvalidError naming the field when they can tell it.
	ErrInvalid = errors.New("invalid")
	// ErrNoReference: a column refers to a row that does not exist (a
	// foreign key such as budget_id or organization_id on LiteLLM's
	// tables). Backends wrap it in a *ReferenceError naming the field.
	ErrNoReference = errors.New("referenced row does not exist")
	// ErrUnavailable: the store could not answer: it is unreachable, the
	// connection broke, or the statement ran past its timeout. The request
	// may succeed when retried; nothing about the input is wrong.
	ErrUnavailable = errors.New("store unavailable")
)

// ReferenceError names the field whose value refers to a missing row.
// errors.Is(err, ErrNoReference) is true for it.
type ReferenceError struct {
	Field string // e.g. "budget_id", "organization_id"
	Value string // the value that refers to nothing ("" when unknown)
	Table string // the table it should be in ("" when unknown)
}

func (e *ReferenceError) Error() string {
	s := e.Field + " " + e.Value + ": no such row"
	if e.Table != "" {
		s += " in " + e.Table
	}
	return s
}

// Unwrap makes errors.Is(err, ErrNoReference) hold.
func (e *ReferenceError) Unwrap() error { return ErrNoReference }

// InvalidError names the field whose value a rule or a column refused.
// errors.Is(err, ErrInvalid) is true for it.
type InvalidError struct {
	Field  string // "" when the backend cannot tell which field
	Reason string // e.g. "value out of range for the column"
}

func (e *InvalidError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// ConflictError names the unique field that a write collided on.
// errors.Is(err, ErrConflict) is true for it.
type ConflictError struct {
	Field string // "token" or "key_alias"
	Value string // the conflicting value (never a raw key: tokens are hashes)
}

func (e *ConflictError) Error() string { return e.Field + " " + e.Value + ": conflict" }

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Prefix starts every LiteLLM virtual key.
const Prefix = "sk-"

// Key is one row of "LiteLLM_VerificationToken", with LiteLLM's column names
// as JSON names. Pointer fields are nullable columns (nil = SQL NULL);
// JSON object columns are maps (nil is stored as {}), array columns slices
// (nil is stored as an empty array).
type Key struct {
	Token                string         `json:"token"` // lowercase hex SHA-256 of the raw key
	KeyName              *string        `json:"key_name"`
	KeyAlias             *string        `json:"key_alias"`
	Spend                float64        `json:"spend"`
	Expires              *time.Time     `json:"expires"`
	Models               []string       `json:"models"`
	Aliases              map[string]any `json:"aliases"`
	Config               map[string]any `json:"config"`
	UserID               *string        `json:"user_id"`
	TeamID               *string        `json:"team_id"`
	OrganizationID       *string        `json:"organization_id"`
	Permissions          map[string]any `json:"permissions"`
	MaxParallelRequests  *int64         `json:"max_parallel_requests"`
	Metadata             map[string]any `json:"metadata"`
	Blocked              *bool          `json:"blocked"` // nil = not blocked
	TPMLimit             *int64         `json:"tpm_limit"`
	RPMLimit             *int64         `json:"rpm_limit"`
	MaxBudget            *float64       `json:"max_budget"` // nil = unlimited
	BudgetDuration       *string        `json:"budget_duration"`
	BudgetResetAt        *time.Time     `json:"budget_reset_at"`
	AllowedCacheControls []string       `json:"allowed_cache_controls"`
	AllowedRoutes        []string       `json:"allowed_routes"`
	ModelSpend           map[string]any `json:"model_spend"`
	ModelMaxBudget       map[string]any `json:"model_max_budget"`
	BudgetID             *string        `json:"budget_id"`
	SoftBudgetCooldown   bool           `json:"soft_budget_cooldown"`
	CreatedAt            *time.Time     `json:"created_at"`
	CreatedBy            *string        `json:"created_by"`
	UpdatedAt            *time.Time     `json:"updated_at"`
	UpdatedBy            *string        `json:"updated_by"`
	RotationCount        int64          `json:"rotation_count"`
	LastRotationAt       *time.Time     `json:"last_rotation_at"`

	// GraceUntil is not a column. A store's Lookup sets it when the key was
	// found through a rotated-out token still inside its grace period
	// ("LiteLLM_DeprecatedVerificationToken".revoke_at); Token is then the
	// active token, and the presented credential stops working at GraceUntil.
	GraceUntil *time.Time `json:"-"`
}

// IsBlocked reports whether the key is blocked (NULL counts as not blocked).
func (k *Key) IsBlocked() bool { return k.Blocked != nil && *k.Blocked }

// Audit is one row of "LiteLLM_AuditLog".
type Audit struct {
	ID              string    // uuid; the store fills it when empty
	UpdatedAt       time.Time // the store fills it when zero
	ChangedBy       string
	ChangedByAPIKey string // a hash, never a raw key
	Action          string // created, updated, deleted, blocked, unblocked, regenerated
	TableName       string // "LiteLLM_VerificationToken"
	ObjectID        string // the key's hash
	BeforeValue     map[string]any
	UpdatedValues   map[string]any
}

// Audit actions.
const (
	ActionCreated     = "created"
	ActionUpdated     = "updated"
	ActionDeleted     = "deleted"
	ActionBlocked     = "blocked"
	ActionUnblocked   = "unblocked"
	ActionRegenerated = "regenerated"
)

// KeyTable is LiteLLM's key table name, used as Audit.TableName.
const KeyTable = "LiteLLM_VerificationToken"

// Generate returns a new raw key: "sk-" + 22 URL-safe base64 characters of
// 16 random bytes from crypto/rand.
func Generate() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return Prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// Hash returns the SHA-256 of a raw key (prefix included).
func Hash(raw string) [32]byte { return sha256.Sum256([]byte(raw)) }

// HashHex returns the stored form of a raw key: lowercase hex SHA-256.
func HashHex(raw string) string {
	h := Hash(raw)
	return hex.EncodeToString(h[:])
}

// Name returns LiteLLM's key_name for a raw key: "sk-..." + its last 4 chars.
func Name(raw string) string { return "sk-..." + last4(raw) }

func last4(s string) string {
	if len(s) <= 4 {
		return s
	}
	return s[len(s)-4:]
}

// Ref resolves a key reference from the management API: a raw key (starts
// with "sk-") is hashed; anything else is taken to be a hash already.
func Ref(s string) string {
	if strings.HasPrefix(s, Prefix) {
		return HashHex(s)
	}
	return s
}

// Redact renders a raw key or hash safely for logs and errors: "sk-...last4"
// for a raw key, the first 12 hex characters for a hash.
func Redact(s string) string {
	if strings.HasPrefix(s, Prefix) {
		return Name(s)
	}
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// MaxInt4 is the largest value of a Postgres integer (int4) column:
// LiteLLM's max_parallel_requests and rotation_count.
const MaxInt4 = 1<<31 - 1

// CheckRanges reports the first field of k whose value no store column can
// hold, as an *InvalidError; both stores call it before writing, so a value
// too large for LiteLLM's schema is refused alike on either backend.
func CheckRanges(k *Key) error {
	if v := k.MaxParallelRequests; v != nil && (*v > MaxInt4 || *v < -MaxInt4-1) {
		return &InvalidError{Field: "max_parallel_requests", Reason: "must be at most 2147483647"}
	}
	if k.RotationCount > MaxInt4 || k.RotationCount < -MaxInt4-1 {
		return &InvalidError{Field: "rotation_count", Reason: "must be at most 2147483647"}
	}
	return nil
}

// Number reads a number out of a decoded JSON column value: a json.Number
// (DecodeObject), a float64 (encoding/json's default) or an int/int64 (set
// in Go). Anything else, or a json.Number that is not a float, is false.
func Number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// DecodeObject decodes a stored JSON object column losslessly: numbers
// become json.Number, so an integer above 2^53 is written back exactly as
// it was read. null or empty input is an empty map.
func DecodeObject(b []byte) (map[string]any, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}
