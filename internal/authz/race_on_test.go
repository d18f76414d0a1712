//go:build race

package authz_test

// raceEnabled: the race detector makes sync.Pool drop items, so
// allocation counts are only compared without it.
const raceEnabled = true
