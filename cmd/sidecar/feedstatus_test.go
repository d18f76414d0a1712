package main

import (
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/postgres"
)

type feedStore struct {
	store.Store
	st postgres.FeedStatus
}

func (f feedStore) FeedStatus() postgres.FeedStatus { return f.st }

func TestWriteFeedDetail(t *testing.T) {
	tests := []struct {
		name string
		st   store.Store
		want string
	}{
		{"no feed status (embedded store)", struct{ store.Store }{}, ""},
		{"healthy feed", feedStore{st: postgres.FeedStatus{Connected: true}}, ""},
		{"deaf feed", feedStore{st: postgres.FeedStatus{Connected: true, Deaf: true, Detail: "change feed deaf: set --feed-database-url"}},
			"feed: change feed deaf: set --feed-database-url\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			writeFeedDetail(&b, tc.st)
			if b.String() != tc.want {
				t.Errorf("got %q, want %q", b.String(), tc.want)
			}
		})
	}
}
