package pybool

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
		err  bool
	}{
		{"1", true, false}, {"true", true, false}, {"True", true, false}, {"TRUE", true, false},
		{"t", true, false}, {"T", true, false}, {"yes", true, false}, {"YES", true, false},
		{"y", true, false}, {"on", true, false}, {"On", true, false}, {" true ", true, false},
		{"0", false, false}, {"false", false, false}, {"False", false, false}, {"f", false, false},
		{"no", false, false}, {"NO", false, false}, {"n", false, false}, {"off", false, false},
		{"OFF", false, false},
		{"", false, true}, {"2", false, true}, {"yess", false, true}, {"enable", false, true},
		{"truee", false, true}, {"-1", false, true}, {"none", false, true}, {"null", false, true},
	} {
		got, err := Parse(tc.in)
		if tc.err {
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("Parse(%q) = %v, %v; want ErrSyntax", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"yes", "no", "1", "off", "", "Tru"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses is one of the spellings, and case does not matter.
		b2, err2 := Parse(strings.ToUpper(s))
		if err2 != nil || b2 != b {
			t.Fatalf("Parse(%q)=%v but Parse(upper)=%v,%v", s, b, b2, err2)
		}
	})
}
