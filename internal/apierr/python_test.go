package apierr

import "testing"

func TestPyList(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want string
	}{
		{nil, "[]"},
		{[]string{"a"}, "['a']"},
		{[]string{"gpt-4o", "openai/*"}, "['gpt-4o', 'openai/*']"},
	} {
		if got := PyList(tt.in); got != tt.want {
			t.Errorf("PyList(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
