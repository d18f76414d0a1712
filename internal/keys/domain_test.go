package keys

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestKeyMaterial(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k := Generate()
		if len(k) != 25 || !strings.HasPrefix(k, Prefix) {
			t.Fatalf("Generate() = %q, want sk- + 22 chars", k)
		}
		b, err := base64.RawURLEncoding.DecodeString(k[3:])
		if err != nil || len(b) != 16 {
			t.Fatalf("%q: body is not 16 bytes of URL-safe base64: %v", k, err)
		}
		if seen[k] {
			t.Fatalf("Generate repeated %q", k)
		}
		seen[k] = true
	}
	// printf 'sk-1234' | sha256sum
	const want = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
	if got := HashHex("sk-1234"); got != want {
		t.Errorf("HashHex(sk-1234) = %s, want %s", got, want)
	}
	tests := []struct{ in, name, ref, redact string }{
		{"sk-1234", "sk-...1234", want, "sk-...1234"},
		{"sk-abcdefghijklmnopqrstuv", "sk-...stuv", HashHex("sk-abcdefghijklmnopqrstuv"), "sk-...stuv"},
		{want, "sk-..." + want[60:], want, want[:12]},
		{"abc", "sk-...abc", "abc", "abc"},
	}
	for _, tt := range tests {
		if got := Name(tt.in); got != tt.name {
			t.Errorf("Name(%q) = %q, want %q", tt.in, got, tt.name)
		}
		if got := Ref(tt.in); got != tt.ref {
			t.Errorf("Ref(%q) = %q, want %q", tt.in, got, tt.ref)
		}
		if got := Redact(tt.in); got != tt.redact {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.redact)
		}
	}
}

func TestDurationGrammar(t *testing.T) {
	tests := []struct {
		in   string
		want Duration
		err  bool
	}{
		{"30s", Duration{30, Second}, false},
		{"5m", Duration{5, Minute}, false},
		{"30min", Duration{30, Minute}, false},
		{"2h", Duration{2, Hour}, false},
		{"1d", Duration{1, Day}, false},
		{"2days", Duration{2, Day}, false},
		{"1w", Duration{1, Week}, false},
		{"1mo", Duration{1, Month}, false},
		{"3months", Duration{3, Month}, false},
		{"0s", Duration{0, Second}, false},
		{"1000000d", Duration{1000000, Day}, false},
		{"", Duration{}, true},
		{"30", Duration{}, true},
		{"-1d", Duration{}, true},
		{"+1d", Duration{}, true},
		{"1.5h", Duration{}, true},
		{"1y", Duration{}, true},
		{"d", Duration{}, true},
		{" 1d", Duration{}, true},
		{"1000001d", Duration{}, true},
		{"99999999999999999999s", Duration{}, true},
		{"-1", Duration{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if tt.err {
				if err == nil || !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseDuration(%q) = %v, %v; want an ErrInvalid", tt.in, got, err)
				}
				if !strings.Contains(err.Error(), "invalid duration") {
					t.Errorf("error %q does not say what is wrong", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back, err := ParseDuration(got.String()); err != nil || back != got {
				t.Errorf("String round trip: %q -> %v, %v", got.String(), back, err)
			}
		})
	}
}

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestAddTo(t *testing.T) {
	tests := []struct {
		d        string
		from, to string
	}{
		{"30s", "2025-01-31T10:00:00Z", "2025-01-31T10:00:30Z"},
		{"90m", "2025-01-31T23:00:00Z", "2025-02-01T00:30:00Z"},
		{"1d", "2025-03-01T12:00:00Z", "2025-03-02T12:00:00Z"},
		{"2w", "2025-03-01T12:00:00Z", "2025-03-15T12:00:00Z"},
		{"1mo", "2025-03-15T08:00:00Z", "2025-04-15T08:00:00Z"},
		{"1mo", "2025-01-31T00:00:00Z", "2025-03-03T00:00:00Z"}, // AddDate normalises Feb 31
		{"12mo", "2024-02-29T00:00:00Z", "2025-03-01T00:00:00Z"},
	}
	for _, tt := range tests {
		d, err := ParseDuration(tt.d)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.AddTo(date(tt.from)); !got.Equal(date(tt.to)) {
			t.Errorf("%s + %s = %s, want %s", tt.from, tt.d, got, tt.to)
		}
	}
}

func TestBudgetResetSchedule(t *testing.T) {
	tests := []struct {
		d, now, want string
	}{
		{"1d", "2025-05-14T10:30:00Z", "2025-05-15T00:00:00Z"},
		{"1d", "2025-05-14T00:00:00Z", "2025-05-15T00:00:00Z"}, // exactly at midnight: the next one
		{"1d", "2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z"},
		{"3d", "2025-05-14T10:30:00Z", "2025-05-17T00:00:00Z"},
		{"7d", "2025-05-14T10:30:00Z", "2025-05-19T00:00:00Z"}, // Wednesday -> Monday
		{"1w", "2025-05-19T00:00:00Z", "2025-05-26T00:00:00Z"}, // Monday midnight -> next Monday
		{"1w", "2025-05-18T23:00:00Z", "2025-05-19T00:00:00Z"}, // Sunday -> Monday
		{"2w", "2025-05-14T10:30:00Z", "2025-05-26T00:00:00Z"},
		{"30d", "2025-05-14T10:30:00Z", "2025-06-01T00:00:00Z"},
		{"1mo", "2025-12-14T10:30:00Z", "2026-01-01T00:00:00Z"},
		{"1mo", "2025-05-01T00:00:00Z", "2025-06-01T00:00:00Z"},
		{"3mo", "2025-11-30T10:00:00Z", "2026-02-01T00:00:00Z"},
		{"1h", "2025-05-14T10:30:00Z", "2025-05-14T11:00:00Z"},
		{"1h", "2025-05-14T10:00:00Z", "2025-05-14T11:00:00Z"},
		{"5h", "2025-05-14T10:30:00Z", "2025-05-14T15:00:00Z"},
		{"5h", "2025-05-14T21:00:00Z", "2025-05-15T00:00:00Z"}, // past midnight: midnight
		{"48h", "2025-05-14T21:00:00Z", "2025-05-15T00:00:00Z"},
		{"15m", "2025-05-14T10:31:10Z", "2025-05-14T10:45:00Z"},
		{"15m", "2025-05-14T10:50:00Z", "2025-05-14T11:00:00Z"},
		{"7m", "2025-05-14T10:57:00Z", "2025-05-14T11:00:00Z"},
		{"30s", "2025-05-14T10:31:10.5Z", "2025-05-14T10:31:30Z"},
		{"0s", "2025-05-14T10:31:10.5Z", "2025-05-14T10:31:11Z"},
	}
	for _, tt := range tests {
		t.Run(tt.d+"@"+tt.now, func(t *testing.T) {
			got, err := NextResetFromString(tt.d, date(tt.now))
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(date(tt.want)) || got.Location() != time.UTC {
				t.Errorf("got %s, want %s (UTC)", got, tt.want)
			}
		})
	}
	// Input in another zone is converted: 2025-05-14T23:30-05:00 is 04:30Z on the 15th.
	ny := time.FixedZone("EST", -5*3600)
	got, _ := NextResetFromString("1d", time.Date(2025, 5, 14, 23, 30, 0, 0, ny))
	if want := date("2025-05-16T00:00:00Z"); !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("non-UTC input: got %s, want %s", got, want)
	}
	if _, err := NextResetFromString("soon", time.Now()); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad duration: %v", err)
	}
}

func TestModelAccessRules(t *testing.T) {
	groups := AccessGroups{"gpt-family": {"gpt-4o", "gpt-4o-mini"}, "claude-all": {"anthropic/*"}}
	aliases := map[string]any{"my-model": "gpt-4o", "cheap": "gpt-3.5-turbo", "weird": 42}
	tests := []struct {
		name    string
		allowed []string
		model   string
		want    bool
	}{
		{"empty list allows all", nil, "anything", true},
		{"star", []string{"*"}, "anything", true},
		{"all-proxy-models", []string{"gpt-4o", "all-proxy-models"}, "claude", true},
		{"all-team-models", []string{"all-team-models"}, "claude", true},
		{"exact", []string{"gpt-4o"}, "gpt-4o", true},
		{"exact is case-sensitive", []string{"gpt-4o"}, "GPT-4o", false},
		{"not listed", []string{"gpt-4o"}, "gpt-4", false},
		{"prefix is not a match", []string{"gpt-4"}, "gpt-4o", false},
		{"glob", []string{"openai/*"}, "openai/gpt-4o", true},
		{"glob other provider", []string{"openai/*"}, "anthropic/claude", false},
		{"glob middle", []string{"gpt-*-mini"}, "gpt-4o-mini", true},
		{"glob middle miss", []string{"gpt-*-mini"}, "gpt-4o", false},
		{"glob empty run", []string{"openai/*"}, "openai/", true},
		{"alias to allowed target", []string{"gpt-4o"}, "my-model", true},
		{"alias itself allowed", []string{"my-model"}, "my-model", true},
		{"alias to disallowed target", []string{"gpt-4o"}, "cheap", false},
		{"non-string alias ignored", []string{"gpt-4o"}, "weird", false},
		{"access group", []string{"gpt-family"}, "gpt-4o-mini", true},
		{"access group miss", []string{"gpt-family"}, "o1", false},
		{"access group glob", []string{"claude-all"}, "anthropic/claude-3-opus", true},
		{"access group via alias", []string{"gpt-family"}, "my-model", true},
		{"unknown group is a model name", []string{"nope"}, "nope", true},
		{"empty model", []string{"gpt-4o"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ModelAllowed(tt.allowed, aliases, groups, tt.model); got != tt.want {
				t.Errorf("ModelAllowed(%v, %q) = %v, want %v", tt.allowed, tt.model, got, tt.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		p, n string
		want bool
	}{
		{"", "", true}, {"*", "", true}, {"a*", "a", true}, {"*a", "ba", true}, {"*a", "ab", false},
		{"a*b*c", "aXbYc", true}, {"a*b*c", "aXbY", false}, {"**", "x", true}, {"a*a*a", "aaa", true},
		{"a*a*a", "aa", false}, {"*/*", "openai/gpt", true}, {"*/*", "gpt", false},
	}
	for _, tt := range tests {
		if got := Match(tt.p, tt.n); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.p, tt.n, got, tt.want)
		}
	}
}

func TestModelAllowedDoesNotAllocate(t *testing.T) {
	groups := AccessGroups{"g": {"anthropic/*"}}
	aliases := map[string]any{"a": "gpt-4o"}
	allowed := []string{"gpt-4o-mini", "openai/*", "g"}
	n := testing.AllocsPerRun(200, func() {
		ModelAllowed(allowed, aliases, groups, "anthropic/claude")
		ModelAllowed(allowed, aliases, groups, "a")
		ModelAllowed(allowed, aliases, groups, "nope")
	})
	if n != 0 {
		t.Errorf("ModelAllowed allocates %v times per call set", n)
	}
}

func BenchmarkModelAllowed(b *testing.B) {
	allowed := []string{"gpt-4o-mini", "gpt-4o", "openai/*"}
	b.ReportAllocs()
	for b.Loop() {
		ModelAllowed(allowed, nil, nil, "openai/gpt-4.1")
	}
}

func FuzzDurationGrammar(f *testing.F) {
	for _, s := range []string{"30s", "5m", "30min", "2h", "1d", "7d", "30d", "1w", "1mo", "12mo", "0s", "1000000mo", "", "1.5h", "-1d", "1y"} {
		f.Add(s, int64(1747218600))
	}
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		d, err := ParseDuration(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("%q -> %v does not round-trip: %v, %v", s, d, back, err)
		}
		now := time.Unix(unix%(1<<34), 0).UTC() // within ±500 years of 1970
		if next := d.NextReset(now); !next.After(now) {
			t.Fatalf("NextReset(%v) of %q = %v, not after now", now, s, next)
		}
		if d.N > 0 && !d.AddTo(now).After(now) {
			t.Fatalf("AddTo(%v) of %q = %v, not after now", now, s, d.AddTo(now))
		}
	})
}

func FuzzModelRules(f *testing.F) {
	f.Add("openai/*", "openai/gpt-4o")
	f.Add("gpt-*-mini", "gpt-4o-mini")
	f.Add("a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, pattern, model string) {
		got := Match(pattern, model)
		if !strings.Contains(pattern, "*") && got != (pattern == model) {
			t.Fatalf("Match(%q, %q) = %v without a star", pattern, model, got)
		}
		if !Match(model, model) && !strings.Contains(model, "*") {
			t.Fatalf("%q does not match itself", model)
		}
		if !ModelAllowed([]string{pattern, model}, nil, nil, model) {
			t.Fatalf("a list containing %q does not allow it", model)
		}
		_ = ModelAllowed([]string{pattern}, map[string]any{model: pattern}, AccessGroups{pattern: {model}}, model)
	})
}

func TestCheckRanges(t *testing.T) {
	max, over := int64(MaxInt4), int64(MaxInt4)+1
	for _, tc := range []struct {
		name  string
		k     Key
		field string // "" = valid
	}{
		{"empty", Key{}, ""},
		{"largest max_parallel_requests", Key{MaxParallelRequests: &max}, ""},
		{"max_parallel_requests above int4", Key{MaxParallelRequests: &over}, "max_parallel_requests"},
		{"rotation_count above int4", Key{RotationCount: over}, "rotation_count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRanges(&tc.k)
			var ie *InvalidError
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("CheckRanges = %v", err)
			case tc.field != "" && (!errors.As(err, &ie) || ie.Field != tc.field || !errors.Is(err, ErrInvalid)):
				t.Errorf("CheckRanges = %v, want InvalidError on %s", err, tc.field)
			}
		})
	}
}

func TestDecodeObject(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" = error
	}{
		{``, `{}`},
		{`null`, `{}`},
		{`{}`, `{}`},
		{`{"big": 12345678901234567890, "odd": 9007199254740993, "f": 1.50, "e": 1e400}`, `{"big":12345678901234567890,"e":1e400,"f":1.50,"odd":9007199254740993}`},
		{`{"a": {"b": [1, 2.0]}}`, `{"a":{"b":[1,2.0]}}`},
		{`[1]`, ``},
		{`{} {}`, ``},
		{`{"a":`, ``},
	} {
		m, err := DecodeObject([]byte(tc.in))
		if tc.want == "" {
			if err == nil {
				t.Errorf("DecodeObject(%q) = %v, want an error", tc.in, m)
			}
			continue
		}
		if err != nil {
			t.Errorf("DecodeObject(%q): %v", tc.in, err)
			continue
		}
		b, err := json.Marshal(m)
		if err != nil || string(b) != tc.want {
			t.Errorf("DecodeObject(%q) re-encodes as %s (%v), want %s", tc.in, b, err, tc.want)
		}
	}
}

// FuzzDecodeObject: whatever a JSON column holds, decoding never panics,
// and what it decodes re-encodes to JSON that decodes to the same value.
func FuzzDecodeObject(f *testing.F) {
	for _, s := range []string{`{}`, `null`, `{"big": 12345678901234567890}`, `{"a": [1, {"b": -0.0e-5}]}`, `[1]`, `{"a":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeObject(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("decoded %q does not re-encode: %v", b, err)
		}
		m2, err := DecodeObject(out)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", out, err)
		}
		out2, _ := json.Marshal(m2)
		if string(out) != string(out2) {
			t.Fatalf("not stable: %s then %s", out, out2)
		}
	})
}

func TestNumber(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want float64
		ok   bool
	}{
		{1.5, 1.5, true}, {int(2), 2, true}, {int64(3), 3, true},
		{json.Number("9007199254740993"), 9007199254740992, true}, {json.Number("0.25"), 0.25, true},
		{json.Number("x"), 0, false}, {"1", 0, false}, {nil, 0, false}, {true, 0, false},
	} {
		got, ok := Number(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Number(%#v) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
