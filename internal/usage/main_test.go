package usage

import (
	"testing"

	"go.uber.org/goleak"
)

// Extractors that decoded zstd and were never Closed must not leave
// goroutines behind (the decoder runs synchronously).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
