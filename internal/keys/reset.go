package keys

import "time"

// The budget-reset rule, shared by everything that decides whether a key's
// spend counts: the Check (which treats a due key as already reset), the
// management API's /key/info view (which shows it reset) and the reset job
// (which writes it). A key's budget is due for reset at now when
//
//   - budget_reset_at is set and not after now (reset_at <= now),
//   - it has not expired (expires is NULL or not before now: expired means
//     expires < now, as in the Check), and
//   - budget_duration parses (without a period there is no next boundary,
//     so the job cannot reset it and nobody may pretend it did).
//
// The stores' ResetBudgets select candidates in SQL with the same
// comparisons and then apply BudgetResetDue to each.

// ResetDue is the time part of the rule, for callers that have already
// checked budget_duration (the Check precomputes it per cached key): a
// zero resetAt means no reset, a zero expires never expires.
func ResetDue(resetAt, expires, now time.Time) bool {
	return !resetAt.IsZero() && !resetAt.After(now) && (expires.IsZero() || !expires.Before(now))
}

// BudgetResetDue applies the rule to a row's columns. When the reset is
// due it returns the next boundary (budget_duration's NextReset from now).
func BudgetResetDue(resetAt, expires *time.Time, budgetDuration *string, now time.Time) (next time.Time, due bool) {
	if resetAt == nil || budgetDuration == nil {
		return time.Time{}, false
	}
	var exp time.Time
	if expires != nil {
		exp = *expires
	}
	if !ResetDue(*resetAt, exp, now) {
		return time.Time{}, false
	}
	d, err := ParseDuration(*budgetDuration)
	if err != nil {
		return time.Time{}, false
	}
	return d.NextReset(now), true
}

// BudgetResetDue applies the budget-reset rule to k (see ResetDue).
func (k *Key) BudgetResetDue(now time.Time) (next time.Time, due bool) {
	return BudgetResetDue(k.BudgetResetAt, k.Expires, k.BudgetDuration, now)
}
