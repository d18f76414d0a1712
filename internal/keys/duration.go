package keys

import (
	"fmt"
	"strconv"
	"time"
)

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

var unitSuffix = [...]string{Second: "s", Minute: "m", Hour: "h", Day: "d", Week: "w", Month: "mo"}

// maxN bounds N. Hours, minutes and seconds are added as a time.Duration
// (10^6 hours is 114 years, inside its 292); days, weeks and months as
// calendar dates, which cannot overflow at this size.
const maxN = 1_000_000

// Duration is a parsed LiteLLM duration: N units.
type Duration struct {
	N    int
	Unit Unit
}

// ParseDuration parses LiteLLM's duration grammar: <int>s, <int>m, <int>h,
// <int>d, <int>w, <int>mo. Like LiteLLM it matches a unit prefix, so "30min"
// reads as 30m and "2days" as 2d; "mo" is tried before "m". A bare number,
// a sign, a decimal, an empty string, an unknown unit, or N above 1,000,000
// is an error wrapping ErrInvalid. "0s" (and any zero) is accepted: it means
// "now", as in LiteLLM.
func ParseDuration(s string) (Duration, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return Duration{}, fmt.Errorf("invalid duration %q: want <number><unit> with unit s, m, h, d, w or mo: %w", s, ErrInvalid)
	}
	if i > 7 {
		return Duration{}, fmt.Errorf("invalid duration %q: number too large: %w", s, ErrInvalid)
	}
	n, _ := strconv.Atoi(s[:i]) // all digits, at most 7: cannot fail
	if n > maxN {
		return Duration{}, fmt.Errorf("invalid duration %q: number too large: %w", s, ErrInvalid)
	}
	rest := s[i:]
	var u Unit
	switch {
	case len(rest) >= 2 && rest[:2] == "mo":
		u = Month
	case len(rest) >= 1:
		switch rest[0] {
		case 's':
			u = Second
		case 'm':
			u = Minute
		case 'h':
			u = Hour
		case 'd':
			u = Day
		case 'w':
			u = Week
		}
	}
	if u == 0 {
		return Duration{}, fmt.Errorf("invalid duration %q: want <number><unit> with unit s, m, h, d, w or mo: %w", s, ErrInvalid)
	}
	return Duration{N: n, Unit: u}, nil
}

// String renders the canonical form ("30d", "1mo").
func (d Duration) String() string {
	if d.Unit == 0 || int(d.Unit) >= len(unitSuffix) {
		return strconv.Itoa(d.N) + "?"
	}
	return strconv.Itoa(d.N) + unitSuffix[d.Unit]
}

// clock returns the length of an hour, minute or second duration.
func (d Duration) clock() time.Duration {
	n := time.Duration(d.N)
	switch d.Unit {
	case Hour:
		return n * time.Hour
	case Minute:
		return n * time.Minute
	}
	return n * time.Second
}

// AddTo returns t + d exactly: days, weeks and months are calendar steps
// (months: same day N months later, normalised like time.AddDate), hours,
// minutes and seconds fixed lengths.
func (d Duration) AddTo(t time.Time) time.Time {
	switch d.Unit {
	case Month:
		return t.AddDate(0, d.N, 0)
	case Week:
		return t.AddDate(0, 0, 7*d.N)
	case Day:
		return t.AddDate(0, 0, d.N)
	}
	return t.Add(d.clock())
}

// NextReset returns the next budget reset after now on LiteLLM's calendar
// schedule in UTC (spec section 5): 1d -> next midnight, 7d/1w -> next Monday
// 00:00, 30d/1mo -> the 1st of next month 00:00, other Nd -> today 00:00 + N
// days, Nw -> next Monday + N-1 weeks, Nmo -> the 1st of the month N months
// on, Nh -> the next hour boundary that is a multiple of N (counted from
// midnight; past midnight, midnight), Nm within the hour and Ns within the
// minute likewise. The result is UTC and always after now.
// A zero N resets at the next second.
func (d Duration) NextReset(now time.Time) time.Time {
	now = now.UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	if d.N <= 0 {
		return now.Truncate(time.Second).Add(time.Second)
	}
	switch {
	case d.Unit == Month || (d.Unit == Day && d.N == 30):
		n := d.N
		if d.Unit == Day {
			n = 1
		}
		return time.Date(now.Year(), now.Month()+time.Month(n), 1, 0, 0, 0, 0, time.UTC)
	case d.Unit == Week || (d.Unit == Day && d.N == 7):
		weeks := d.N
		if d.Unit == Day {
			weeks = 1
		}
		days := (int(time.Monday) - int(now.Weekday()) + 7) % 7
		if days == 0 {
			days = 7
		}
		return midnight.AddDate(0, 0, days+7*(weeks-1))
	case d.Unit == Day:
		return midnight.AddDate(0, 0, d.N)
	}
	// Nh, Nm, Ns: like LiteLLM, the next multiple of N within the enclosing
	// day (hours), hour (minutes) or minute (seconds); past its end, the
	// start of the next one.
	var base time.Time
	var span time.Duration
	switch d.Unit {
	case Hour:
		base, span = midnight, 24*time.Hour
	case Minute:
		base, span = now.Truncate(time.Hour), time.Hour
	default:
		base, span = now.Truncate(time.Minute), time.Minute
	}
	step := d.clock()
	next := (now.Sub(base)/step + 1) * step
	if next > span {
		next = span
	}
	return base.Add(next)
}

// NextResetFromString parses budgetDuration and returns its next reset after now.
func NextResetFromString(budgetDuration string, now time.Time) (time.Time, error) {
	d, err := ParseDuration(budgetDuration)
	if err != nil {
		return time.Time{}, err
	}
	return d.NextReset(now), nil
}
