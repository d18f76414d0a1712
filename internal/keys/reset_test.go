package keys_test

import (
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

func TestBudgetResetDue(t *testing.T) {
	now := time.Date(2025, 5, 14, 10, 30, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		name     string
		resetAt  *time.Time
		expires  *time.Time
		duration *string
		due      bool
		next     time.Time
	}{
		{"no reset_at", nil, nil, s("1d"), false, time.Time{}},
		{"no duration", at(-time.Hour), nil, nil, false, time.Time{}},
		{"bad duration", at(-time.Hour), nil, s("1fortnight"), false, time.Time{}},
		{"future", at(time.Second), nil, s("1d"), false, time.Time{}},
		{"exactly now", at(0), nil, s("1d"), true, time.Date(2025, 5, 15, 0, 0, 0, 0, time.UTC)},
		{"past", at(-48 * time.Hour), nil, s("1h"), true, time.Date(2025, 5, 14, 11, 0, 0, 0, time.UTC)},
		{"expired", at(-time.Hour), at(-time.Nanosecond), s("1d"), false, time.Time{}},
		{"expires exactly now (not expired)", at(-time.Hour), at(0), s("1d"), true, time.Date(2025, 5, 15, 0, 0, 0, 0, time.UTC)},
		{"expires later", at(-time.Hour), at(time.Hour), s("1d"), true, time.Date(2025, 5, 15, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &keys.Key{BudgetResetAt: tc.resetAt, Expires: tc.expires, BudgetDuration: tc.duration}
			next, due := k.BudgetResetDue(now)
			if due != tc.due || !next.Equal(tc.next) {
				t.Fatalf("BudgetResetDue = %v, %v; want %v, %v", next, due, tc.next, tc.due)
			}
			var r, e time.Time
			if tc.resetAt != nil {
				r = *tc.resetAt
			}
			if tc.expires != nil {
				e = *tc.expires
			}
			if tc.duration != nil && tc.name != "bad duration" && keys.ResetDue(r, e, now) != tc.due {
				t.Fatalf("ResetDue disagrees with BudgetResetDue")
			}
		})
	}
}
