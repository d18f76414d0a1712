// Package storetest is the conformance suite every store backend must pass.
// A backend's test calls Run with a function that opens a fresh, empty store.
package storetest

import (
	"testing"

	"github.com/virtualkeys/sidecar/internal/store"
)

// Opener returns a fresh, empty store for one test; the suite closes it.
type Opener func(t *testing.T) store.Store

// Run runs the conformance suite against the backend that open opens.
func Run(t *testing.T, open Opener) {
	t.Helper()
	// TODO: filled in by the sqlite/conformance work.
}
