package store

import (
	"context"
	"time"
)

// SpendWriter is the metering side of a store: both backends implement it
// (a separate interface so the key Store contract stays as it is).
type SpendWriter interface {
	// ApplySpend applies one batch atomically: every key's spend and
	// model_spend deltas (rows locked in Keys order, which the caller sorts
	// by token), the team/user/membership roll-ups whose tables exist, and
	// the spend-log rows (a request_id already logged is skipped). A batch
	// whose ID was already applied is not applied again (a retry after an
	// ambiguous commit). It returns each updated key's spend after the
	// batch; keys that do not exist are left out.
	ApplySpend(ctx context.Context, b *SpendBatch) (map[string]float64, error)

	// SpendLogs returns spend-log rows matching q, newest first.
	SpendLogs(ctx context.Context, q SpendLogQuery) ([]SpendLog, error)
}

// SpendBatch is one flush of metered spend.
type SpendBatch struct {
	// ID identifies the batch for idempotent retries (unique per batch).
	ID string
	// Keys are per-key deltas, sorted by Token (the lock order).
	Keys []KeySpend
	// Teams, Users and Memberships are roll-up deltas, sorted by ID. They
	// are applied to LiteLLM's team, user and team-membership tables when
	// those tables exist, else dropped.
	Teams       []EntitySpend
	Users       []EntitySpend
	Memberships []MembershipSpend
	// Logs are the LiteLLM_SpendLogs rows of the batch's requests.
	Logs []SpendLog
}

// KeySpend is one key's delta: spend += Spend, model_spend[m] += ModelSpend[m].
type KeySpend struct {
	Token      string
	Spend      float64
	ModelSpend map[string]float64
}

// EntitySpend is a team's or user's delta.
type EntitySpend struct {
	ID         string
	Spend      float64
	ModelSpend map[string]float64
}

// MembershipSpend is a team member's delta (LiteLLM_TeamMembership).
type MembershipSpend struct {
	TeamID, UserID string
	Spend          float64
}

// SpendLog is one LiteLLM_SpendLogs row (the columns the sidecar fills).
type SpendLog struct {
	RequestID         string    `json:"request_id"`
	CallType          string    `json:"call_type"`
	APIKey            string    `json:"api_key"` // the key's hash
	Spend             float64   `json:"spend"`
	TotalTokens       int64     `json:"total_tokens"`
	PromptTokens      int64     `json:"prompt_tokens"`
	CompletionTokens  int64     `json:"completion_tokens"`
	StartTime         time.Time `json:"startTime"`
	EndTime           time.Time `json:"endTime"`
	Model             string    `json:"model"`
	ModelGroup        string    `json:"model_group"`
	CustomLLMProvider string    `json:"custom_llm_provider"`
	User              string    `json:"user"`
	TeamID            string    `json:"team_id"`
	EndUser           string    `json:"end_user"`
	Status            string    `json:"status"` // "success" or "failure"
	// Metadata is stored as the row's metadata JSON (key alias, whether
	// usage was estimated or the model unpriced, the HTTP status).
	Metadata          map[string]any `json:"metadata"`
	RequestDurationMS int64          `json:"request_duration_ms"`
}

// SpendLogQuery filters SpendLogs. Empty strings and zero times mean no
// filter; Start is inclusive, End exclusive. Limit 0 means 1000.
type SpendLogQuery struct {
	APIKey     string
	RequestID  string
	Start, End time.Time
	Limit      int
}

// DefaultSpendLogLimit caps SpendLogs when SpendLogQuery.Limit is 0.
const DefaultSpendLogLimit = 1000
