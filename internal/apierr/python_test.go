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

func TestPyFloat(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want string
	}{{10, "10.0"}, {0.5, "0.5"}, {0, "0.0"}, {1e16, "1e+16"}, {1.5e-05, "1.5e-05"}, {-2, "-2.0"}, {123.25, "123.25"}} {
		if got := PyFloat(tt.in); got != tt.want {
			t.Errorf("PyFloat(%v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
