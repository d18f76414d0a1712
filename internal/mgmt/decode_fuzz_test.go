package mgmt

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// FuzzKeyFields drives the body decoder, validation and apply step directly:
// any input either fails with a 400/422 envelope error or yields a key that
// still encodes as JSON.
func FuzzKeyFields(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `[]`, `{"key":"sk-x","models":["a"],"metadata":{"a":1},"tags":null}`,
		`{"duration":"30d","budget_duration":"1mo","grace_period":"1h","max_budget":-1}`,
		`{"duration":"-1","budget_duration":null,"spend":1e308}`, `{"tpm_limit":1.5}`, `{"models":`,
		`{"temp_budget_expiry":"2030-01-01","soft_budget":-0.0}`, `{} {}`, `{"metadata":null,"guardrails":["g"]}`,
		`{"duration":"1000000mo"}`, `{"budget_duration":"1000000w"}`, `{"grace_period":"1000000d"}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 1, 31, 23, 59, 59, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		obj, err := parseObject(body)
		if err == nil {
			var fields *keyFields
			if fields, err = keyFieldsFrom(obj); err == nil {
				var p *plan
				if p, err = validate(fields); err == nil {
					k := &keys.Key{Token: "t", Metadata: map[string]any{"old": true}}
					p.apply(k, now)
					if _, err := json.Marshal(view(k, now)); err != nil {
						t.Fatalf("applied key does not encode: %v", err)
					}
					return
				}
			}
		}
		var ae *apierr.Error
		if !errors.As(err, &ae) || (ae.Status != http.StatusBadRequest && ae.Status != http.StatusUnprocessableEntity) || ae.Message == "" {
			t.Fatalf("%q: error %v is not a 400/422 envelope", body, err)
		}
	})
}
