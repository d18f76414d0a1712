package mgmt

import (
	"testing"
	"time"
)

func TestParseSpendDate(t *testing.T) {
	tests := []struct {
		in   string
		end  bool
		want time.Time
		err  bool
	}{
		{"", false, time.Time{}, false},
		{"2025-03-04", false, time.Date(2025, 3, 4, 0, 0, 0, 0, time.UTC), false},
		{"2025-03-04", true, time.Date(2025, 3, 5, 0, 0, 0, 0, time.UTC), false},
		{"2025-03-04T10:00:00+02:00", true, time.Date(2025, 3, 4, 8, 0, 0, 0, time.UTC), false},
		{"yesterday", false, time.Time{}, true},
		{"2025-13-01", false, time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseSpendDate(tt.in, "start_date", tt.end)
		if (err != nil) != tt.err || !got.Equal(tt.want) {
			t.Errorf("parseSpendDate(%q, end=%v) = %v, %v; want %v, err %v", tt.in, tt.end, got, err, tt.want, tt.err)
		}
	}
}

func FuzzParseSpendDate(f *testing.F) {
	for _, s := range []string{"", "2025-03-04", "2025-03-04T10:00:00Z", "x", "9999-12-31"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, end bool) {
		got, err := parseSpendDate(s, "end_date", end)
		if err != nil && !got.IsZero() {
			t.Fatalf("%q: error %v with a time %v", s, err, got)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Fatalf("error message not bounded: %d bytes", len(err.Error()))
		}
	})
}
