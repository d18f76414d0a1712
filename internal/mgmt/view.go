package mgmt

import (
	"bytes"
	"encoding/json"
	"math"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// marshal encodes v without HTML escaping (LiteLLM's responses do not escape
// <, > and &).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// view returns a copy of k ready for the wire: empty arrays and objects
// instead of null, and, when the key's budget_reset_at has passed (and it has
// not expired), spend 0 and the next reset boundary, as the background reset
// job will persist.
func view(k *keys.Key, now time.Time) *wireKey {
	v := *k
	v.Models = nonNilList(v.Models)
	v.AllowedCacheControls = nonNilList(v.AllowedCacheControls)
	v.AllowedRoutes = nonNilList(v.AllowedRoutes)
	for _, m := range []*map[string]any{&v.Aliases, &v.Config, &v.Permissions, &v.Metadata, &v.ModelSpend, &v.ModelMaxBudget} {
		if *m == nil {
			*m = map[string]any{}
		}
	}
	if next, due := k.BudgetResetDue(now); due { // the rule the Check and the reset job use
		v.Spend = 0
		v.BudgetResetAt = &next
	}
	return wire(&v)
}

// wireKey is a key as the API renders it: the row, with spend and
// max_budget shadowed by renderings that survive a non-finite value (NaN or
// Infinity written by SQL), which JSON cannot carry: those render as null
// instead of failing the whole response.
type wireKey struct {
	*keys.Key
	Spend     wireFloat  `json:"spend"`
	MaxBudget *wireFloat `json:"max_budget"`
}

func wire(k *keys.Key) *wireKey {
	w := &wireKey{Key: k, Spend: wireFloat(k.Spend)}
	if k.MaxBudget != nil {
		m := wireFloat(*k.MaxBudget)
		w.MaxBudget = &m
	}
	return w
}

// wireFloat is a float64 that renders NaN and ±Inf as null.
type wireFloat float64

func (f wireFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

// keyRow lets response types embed the row under a name that does not
// collide with their own "key" field.
type keyRow = wireKey

// infoRow is a key without its token (GET /key/info).
type infoRow struct {
	*keyRow
	Token *string `json:"token,omitempty"` // shadows keys.Key.Token: always nil
}

type infoResponse struct {
	Key  string  `json:"key"`
	Info infoRow `json:"info"`
}

type infoV2Response struct {
	Key  []string   `json:"key"`
	Info []*wireKey `json:"info"`
}

// updateResponse is /key/update's answer: the key as sent plus the row.
type updateResponse struct {
	*keyRow
	Key string `json:"key"`
}

// generateResponse is /key/generate's and /key/regenerate's answer: the row,
// the raw key, and every request field with its stored value.
type generateResponse struct {
	*keyRow
	Key                string  `json:"key"`
	TokenID            string  `json:"token_id"`
	Duration           *string `json:"duration"`
	SoftBudget         any     `json:"soft_budget"`
	ModelRPMLimit      any     `json:"model_rpm_limit"`
	ModelTPMLimit      any     `json:"model_tpm_limit"`
	Guardrails         any     `json:"guardrails"`
	Tags               any     `json:"tags"`
	EnforcedParams     any     `json:"enforced_params"`
	TempBudgetIncrease any     `json:"temp_budget_increase"`
	TempBudgetExpiry   any     `json:"temp_budget_expiry"`
	SendInviteEmail    *bool   `json:"send_invite_email"`
	KeyType            *string `json:"key_type"`
}

func newGenerateResponse(k *keys.Key, raw string, f *keyFields, now time.Time) *generateResponse {
	v := view(k, now)
	md := v.Metadata
	g := &generateResponse{
		keyRow:             v,
		TokenID:            v.Token,
		SoftBudget:         md["soft_budget"],
		ModelRPMLimit:      md["model_rpm_limit"],
		ModelTPMLimit:      md["model_tpm_limit"],
		Guardrails:         md["guardrails"],
		Tags:               md["tags"],
		EnforcedParams:     md["enforced_params"],
		TempBudgetIncrease: md["temp_budget_increase"],
		TempBudgetExpiry:   md["temp_budget_expiry"],
	}
	g.Key = raw
	if f.Duration.ok() {
		g.Duration = &f.Duration.V
	}
	if f.SendInviteEmail.ok() {
		g.SendInviteEmail = &f.SendInviteEmail.V
	}
	if f.KeyType.ok() {
		g.KeyType = &f.KeyType.V
	}
	return g
}

type listResponse struct {
	Keys        any `json:"keys"`
	TotalCount  int `json:"total_count"`
	CurrentPage int `json:"current_page"`
	TotalPages  int `json:"total_pages"`
}

type deleteResponse struct {
	DeletedKeys []string `json:"deleted_keys"`
}

type healthResponse struct {
	Key              string `json:"key"`
	LoggingCallbacks any    `json:"logging_callbacks"`
}

// rowMap renders a key as a JSON object for the audit log. Rows hold hashes
// and key_name ("sk-..." + 4 chars), never a raw key.
func rowMap(k *keys.Key) map[string]any {
	if k == nil {
		return nil
	}
	b, err := json.Marshal(wire(k))
	if err != nil {
		return nil
	}
	m, err := keys.DecodeObject(b) // numbers stay exact
	if err != nil {
		return nil
	}
	return m
}
