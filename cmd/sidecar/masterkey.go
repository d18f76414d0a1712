package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// masterKeyFile is the name, inside the data dir, of the generated master key.
const masterKeyFile = "master_key"

// loadOrCreateMasterKey returns the master key kept in dir, or generates
// one, keeps it there (mode 0600) and prints it once to stderr with a
// warning, so a restart keeps the same key.
func loadOrCreateMasterKey(dir string, stderr io.Writer) (string, error) {
	path := filepath.Join(dir, masterKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("master key file %s is empty: delete it to generate a new key, or set --master-key", path)
		}
		return k, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read master key: %w", err)
	}

	k := keys.Generate()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process won the race: use its key
		return loadOrCreateMasterKey(dir, stderr)
	}
	if err != nil {
		return "", fmt.Errorf("keep master key: %w", pathErr(err))
	}
	if _, err := f.WriteString(k + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("keep master key: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("keep master key: %w", err)
	}
	fmt.Fprintf(stderr, "WARNING: no master key was configured (--master-key, SIDECAR_MASTER_KEY or LITELLM_MASTER_KEY).\n"+
		"Generated one and kept it in %s; this is the only time it is printed:\n\n    %s\n\n", path, k)
	return k, nil
}
