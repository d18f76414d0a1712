package mgmt

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/virtualkeys/sidecar/internal/keygen"
)

// opt is one optional request field: absent (Set false), explicit null
// (Null), or a value.
type opt[T any] struct {
	Set  bool
	Null bool
	V    T
	raw  json.RawMessage
}

// decoder decodes one field's raw JSON.
type decoder interface {
	decode(name string, raw json.RawMessage) error
}

func (o *opt[T]) decode(name string, raw json.RawMessage) error {
	o.Set = true
	o.raw = raw
	if string(raw) == "null" {
		o.Null = true
		return nil
	}
	var v T
	// UseNumber: numbers inside objects (metadata, config, ...) keep their
	// exact text, so an integer above 2^53 is stored as sent.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return invalid(name, name+": "+expected(any(&v)))
	}
	o.V = v
	return nil
}

// ok reports whether the field is present with a non-null value.
func (o *opt[T]) ok() bool { return o.Set && !o.Null }

func expected(v any) string {
	switch v.(type) {
	case *string:
		return "Input should be a valid string"
	case *[]string:
		return "Input should be a valid list of strings"
	case *map[string]any:
		return "Input should be a valid dictionary"
	case *float64:
		return "Input should be a valid number"
	case *int64:
		return "Input should be a valid integer"
	case *bool:
		return "Input should be a valid boolean"
	}
	return "Input has the wrong type"
}

// readObject reads the body as one JSON object (empty body: emptyOK decides
// whether that is {} or an error) and returns its members, undecoded.
func readObject(r *http.Request, emptyOK bool) (map[string]json.RawMessage, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, invalid("", "could not read the request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if emptyOK {
			return map[string]json.RawMessage{}, nil
		}
		return nil, invalid("body", "body: Field required: the request needs a JSON object body")
	}
	return parseObject(body)
}

// parseObject decodes exactly one JSON object with nothing after it.
func parseObject(body []byte) (map[string]json.RawMessage, error) {
	if bytes.Contains(bytes.ToLower(body), []byte(`\u0000`)) {
		// Postgres cannot store NUL in text or JSONB.
		return nil, invalid("body", `body: strings must not contain NUL (\u0000)`)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, invalid("body", "body: Input should be a valid JSON object")
		}
		return nil, invalid("body", "body: malformed JSON: "+err.Error())
	}
	if m == nil {
		return nil, invalid("body", "body: Input should be a valid JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("body", "body: malformed JSON: unexpected data after the top-level object")
	}
	return m, nil
}

// decodeFields decodes the known members of obj into fields; unknown members
// are ignored (spec section 3). Members are decoded in a fixed order so the
// first error reported does not depend on map iteration.
func decodeFields(obj map[string]json.RawMessage, fields []namedField) error {
	for _, f := range fields {
		raw, ok := obj[f.name]
		if !ok {
			continue
		}
		if err := f.d.decode(f.name, raw); err != nil {
			return err
		}
	}
	return nil
}

// decodeBody reads a request's JSON object (a body is required) into
// fields.
func decodeBody(r *http.Request, fields ...namedField) error {
	obj, err := readObject(r, false)
	if err != nil {
		return err
	}
	return decodeFields(obj, fields)
}

type namedField struct {
	name string
	d    decoder
}

// keyFields are the fields of /key/generate, /key/update and
// /key/regenerate.
type keyFields struct {
	Key                  opt[string]
	KeyAlias             opt[string]
	Duration             opt[string]
	Models               opt[[]string]
	Aliases              opt[map[string]any]
	Config               opt[map[string]any]
	Spend                opt[float64]
	MaxBudget            opt[float64]
	SoftBudget           opt[float64]
	BudgetDuration       opt[string]
	MaxParallelRequests  opt[int64]
	Metadata             opt[map[string]any]
	TPMLimit             opt[int64]
	RPMLimit             opt[int64]
	ModelRPMLimit        opt[map[string]any]
	ModelTPMLimit        opt[map[string]any]
	TPMLimitType         opt[string]
	RPMLimitType         opt[string]
	ModelMaxBudget       opt[map[string]any]
	AllowedCacheControls opt[[]string]
	AllowedRoutes        opt[[]string]
	Permissions          opt[map[string]any]
	Blocked              opt[bool]
	Guardrails           opt[[]string]
	Tags                 opt[[]string]
	EnforcedParams       opt[[]string]
	TempBudgetIncrease   opt[float64]
	TempBudgetExpiry     opt[string]
	UserID               opt[string]
	TeamID               opt[string]
	OrganizationID       opt[string]
	BudgetID             opt[string]
	SendInviteEmail      opt[bool]
	KeyType              opt[string]
	// regenerate only
	NewKey      opt[string]
	GracePeriod opt[string]
}

func (f *keyFields) list() []namedField {
	return []namedField{
		{"key", &f.Key},
		{"key_alias", &f.KeyAlias},
		{"duration", &f.Duration},
		{"models", &f.Models},
		{"aliases", &f.Aliases},
		{"config", &f.Config},
		{"spend", &f.Spend},
		{"max_budget", &f.MaxBudget},
		{"soft_budget", &f.SoftBudget},
		{"budget_duration", &f.BudgetDuration},
		{"max_parallel_requests", &f.MaxParallelRequests},
		{"metadata", &f.Metadata},
		{"tpm_limit", &f.TPMLimit},
		{"rpm_limit", &f.RPMLimit},
		{"model_rpm_limit", &f.ModelRPMLimit},
		{"model_tpm_limit", &f.ModelTPMLimit},
		{"tpm_limit_type", &f.TPMLimitType},
		{"rpm_limit_type", &f.RPMLimitType},
		{"model_max_budget", &f.ModelMaxBudget},
		{"allowed_cache_controls", &f.AllowedCacheControls},
		{"allowed_routes", &f.AllowedRoutes},
		{"permissions", &f.Permissions},
		{"blocked", &f.Blocked},
		{"guardrails", &f.Guardrails},
		{"tags", &f.Tags},
		{"enforced_params", &f.EnforcedParams},
		{"temp_budget_increase", &f.TempBudgetIncrease},
		{"temp_budget_expiry", &f.TempBudgetExpiry},
		{"user_id", &f.UserID},
		{"team_id", &f.TeamID},
		{"organization_id", &f.OrganizationID},
		{"budget_id", &f.BudgetID},
		{"send_invite_email", &f.SendInviteEmail},
		{"key_type", &f.KeyType},
		{"new_key", &f.NewKey},
		{"grace_period", &f.GracePeriod},
	}
}

// decodeKeyFields reads a generate/update/regenerate body.
func decodeKeyFields(r *http.Request, emptyOK bool) (*keyFields, error) {
	obj, err := readObject(r, emptyOK)
	if err != nil {
		return nil, err
	}
	return keyFieldsFrom(obj)
}

func keyFieldsFrom(obj map[string]json.RawMessage) (*keyFields, error) {
	f := &keyFields{}
	if err := decodeFields(obj, f.list()); err != nil {
		return nil, err
	}
	if f.Spend.Set && f.Spend.Null {
		return nil, invalid("spend", "spend: Input should be a valid number, not null")
	}
	for _, lt := range []struct {
		name string
		o    *opt[string]
	}{{"tpm_limit_type", &f.TPMLimitType}, {"rpm_limit_type", &f.RPMLimitType}} {
		if lt.o.ok() && !slices.Contains(limitTypes, lt.o.V) {
			return nil, invalid(lt.name, lt.name+": Input should be 'guaranteed_throughput', 'best_effort_throughput' or 'dynamic'")
		}
	}
	return f, nil
}

// limitTypes are the values of tpm_limit_type and rpm_limit_type.
var limitTypes = []string{keygen.GuaranteedThroughput, "best_effort_throughput", "dynamic"}

// numberText renders a number field as the caller sent it.
func numberText(raw json.RawMessage) string {
	return strings.TrimSpace(string(raw))
}
