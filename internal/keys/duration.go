package keys

import "time"

// ParseDuration parses LiteLLM's duration grammar: <int>s, <int>m, <int>h,
// <int>d, <int>w, <int>mo. Like LiteLLM it matches a unit prefix, so "30min"
// reads as 30m and "2days" as 2d. A bare number, a sign, a decimal, an empty
// string or an unknown unit is an error wrapping ErrInvalid.
func ParseDuration(s string) (Duration, error) {
	panic("TODO")
}

// Unit is a duration unit of LiteLLM's grammar.
type Unit uint8

// Units.
const (
	Second Unit = iota + 1
	Minute
	Hour
	Day
	Week
	Month
)

// Duration is a parsed LiteLLM duration: N units.
type Duration struct {
	N    int
	Unit Unit
}

// String renders the canonical form ("30d", "1mo").
func (d Duration) String() string { panic("TODO") }

// AddTo returns t + d exactly: months are calendar months (same day N months
// later, normalised like time.AddDate), everything else fixed lengths.
func (d Duration) AddTo(t time.Time) time.Time { panic("TODO") }

// NextReset returns the next budget reset after now on LiteLLM's calendar
// schedule in UTC (spec section 5): 1d -> next midnight, 7d/1w -> next Monday
// 00:00, 30d/1mo -> the 1st of next month 00:00, other Nd -> today 00:00 + N
// days, Nh -> next hour boundary that is a multiple of N, Nm/Ns likewise.
func (d Duration) NextReset(now time.Time) time.Time { panic("TODO") }
