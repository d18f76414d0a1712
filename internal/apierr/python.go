package apierr

import "strings"

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
