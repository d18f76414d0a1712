package main

import (
	"io"

	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/postgres"
)

// feedStatuser is a store with a change feed that can go deaf (Postgres).
type feedStatuser interface {
	FeedStatus() postgres.FeedStatus
}

// writeFeedDetail adds the change feed's trouble, if any, to a readiness
// answer. A deaf or disconnected feed does not make the sidecar unready:
// the Check still decides from cached keys, for at most the cache's
// staleness bound, and from the store on a miss.
func writeFeedDetail(w io.Writer, st store.Store) {
	fs, ok := st.(feedStatuser)
	if !ok {
		return
	}
	if d := fs.FeedStatus().Detail; d != "" {
		io.WriteString(w, "feed: "+d+"\n")
	}
}
