//go:build race

package cache_test

// raceEnabled: the race detector makes sync.Pool (inside ristretto) drop
// items, so allocation counts are only pinned without it.
const raceEnabled = true
