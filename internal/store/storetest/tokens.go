package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// testListTokens: ListTokens lists every token Lookup resolves (keys and
// rotated-out tokens in grace), not tokens whose grace has passed, and
// stops at fn's error.
func (s *suite) testListTokens(t *testing.T) {
	st := s.store(t)
	ctx := t.Context()
	var live []string
	for _, tag := range []string{"lt1", "lt2", "lt3"} {
		live = append(live, mustCreate(t, st, &keys.Key{Token: token(tag)}).Token)
	}
	new1, new2 := token("lt1-new"), token("lt2-new")
	grace := time.Now().Add(time.Hour)
	if _, err := st.Regenerate(ctx, live[0], new1, &grace, nil); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Second)
	if _, err := st.Regenerate(ctx, live[1], new2, &past, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := st.ListTokens(ctx, func(h string) error { got = append(got, h); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{live[0], new1, new2, live[2]} {
		if !slices.Contains(got, tok) {
			t.Errorf("ListTokens misses %s (Lookup resolves it)", keys.Redact(tok))
		}
		if _, err := st.Lookup(ctx, tok); err != nil {
			t.Errorf("Lookup %s: %v", keys.Redact(tok), err)
		}
	}
	if slices.Contains(got, live[1]) {
		t.Errorf("ListTokens lists %s, whose grace has passed", keys.Redact(live[1]))
	}

	stop := errors.New("stop")
	n := 0
	err := st.ListTokens(ctx, func(string) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("ListTokens with a failing fn = %v after %d calls; want stop after 1", err, n)
	}
}
