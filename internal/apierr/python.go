package apierr

import (
	"math"
	"strconv"
	"strings"
)

// PyList renders a list of strings as Python's str(list) does,
// ['a', 'b'], for messages that quote LiteLLM's.
func PyList(l []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + s + "'")
	}
	b.WriteByte(']')
	return b.String()
}

// PyFloat renders a float as Python's str(float) does for ordinary values:
// 10 -> "10.0", 0.5 -> "0.5", 1e16 -> "1e+16", 1.5e-05 -> "1.5e-05".
func PyFloat(f float64) string {
	if a := math.Abs(f); a != 0 && (a >= 1e16 || a < 1e-4) && !math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".eEnN") {
		s += ".0"
	}
	return s
}
