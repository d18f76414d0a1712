// Package pybool parses booleans the way pydantic — and so LiteLLM — does,
// for query parameters and environment variables alike: one strict grammar,
// so that "yes" means true everywhere and a typo is an error, not false.
package pybool

import (
	"errors"
	"strings"
)

// ErrSyntax is returned for a string that is none of the accepted spellings.
var ErrSyntax = errors.New("not a boolean: want one of true/false, 1/0, yes/no, on/off, t/f, y/n")

// Parse returns the boolean s spells. It accepts, in any case and with
// surrounding spaces ignored, what pydantic's bool accepts: "1", "true",
// "t", "yes", "y", "on" for true and "0", "false", "f", "no", "n", "off" for
// false. Anything else, the empty string included, is ErrSyntax.
func Parse(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "t", "yes", "y", "on":
		return true, nil
	case "0", "false", "f", "no", "n", "off":
		return false, nil
	}
	return false, ErrSyntax
}
