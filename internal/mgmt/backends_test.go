package mgmt_test

import (
	"testing"

	"github.com/virtualkeys/sidecar/internal/mgmt"
)

func backends() []backend {
	return []backend{
		{"mem", func(testing.TB) mgmt.Store { return newMemStore() }},
	}
}
