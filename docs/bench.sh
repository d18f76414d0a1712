#!/usr/bin/env bash
# Benchmark helper for docs/benchmarks.md ("This round, end to end"): needs /tmp/loadgen-new (go build -o /tmp/loadgen-new ./cmd/loadgen).
# usage: bench.sh BIN LABEL  -> prints one result line
set -u
BIN=$1; LABEL=$2; EXTRA=${3:-}
D=$(mktemp -d); HP=41$((RANDOM%900+100)); GP=42$((RANDOM%900+100))
SIDECAR_MASTER_KEY=sk-bench-master taskset -c 0 $BIN --data-dir $D/data --http-addr 127.0.0.1:$HP --grpc-addr 127.0.0.1:$GP --log-level warn $EXTRA >$D/log 2>&1 &
PID=$!
for i in $(seq 100); do curl -sf 127.0.0.1:$HP/readyz >/dev/null && break; sleep 0.1; done
KEY=$(curl -s -X POST http://127.0.0.1:$HP/key/generate -H 'Authorization: Bearer sk-bench-master' -H 'content-type: application/json' \
  -d '{"models":["gpt-4o","gpt-4o-mini"],"key_alias":"bench"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
OUT=$(taskset -c 1 /tmp/loadgen-new -addr 127.0.0.1:$GP -key "$KEY" -concurrency 10 -duration 8s -metrics http://127.0.0.1:$HP/metrics 2>&1)
echo "$LABEL $(echo "$OUT" | tr '\n' ' ' )"
kill $PID; wait $PID 2>/dev/null; rm -rf $D
