//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDataDir takes an exclusive, non-blocking flock on the data directory
// itself (no lock file is written) and holds it until release. The
// embedded store is one process's: a second process on the same directory
// would serve its own cache, deaf to the first one's writes. The kernel
// drops the lock when the process dies, so a crash leaves nothing stale.
func lockDataDir(dir string) (release func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, pathErr(err))
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another sidecar process (the embedded store serves one process; stop the other one, or give this one its own --data-dir)", dir)
		}
		return nil, fmt.Errorf("data dir %s: lock: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
