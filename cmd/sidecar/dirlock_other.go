//go:build !unix

package main

// lockDataDir is a no-op where flock does not exist: run one process per
// data dir.
func lockDataDir(string) (func(), error) { return func() {}, nil }
