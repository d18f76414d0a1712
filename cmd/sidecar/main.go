// Command sidecar is the virtual-key sidecar for Envoy and Istio: an
// ext_authz gRPC server that decides every LLM request from an in-memory
// cache of LiteLLM-style virtual keys, and a co-located management HTTP API
// that is LiteLLM's /key/* API. Keys live in Postgres (shared by replicas,
// invalidated across them by LISTEN/NOTIFY) or, by default, in an embedded
// SQLite store in the data directory.
//
// main only wires: run parses the configuration, builds the parts and runs
// them under one errgroup until the context is cancelled (SIGINT/SIGTERM),
// then shuts down gracefully.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errHelp) || errors.Is(err, errVersion) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "sidecar: %v\n", err)
		os.Exit(1)
	}
}

// run is the whole program, callable from tests. --help and --version
// print to stdout; logs go to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		return err
	}
	s, err := newSidecar(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	return s.serve(ctx)
}
