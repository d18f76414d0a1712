#!/usr/bin/env bash
# Benchmark helper for docs/benchmarks.md ("A team key against a key without a team"):
# one sidecar (BIN, on core 0), two keys allowed gpt-4o: a plain key, and a key in a team
# with a user, a membership and budgets on all four; loadgen (core 1) alternates between
# them and prints the server's CPU per Check for each run.
# needs /tmp/loadgen-new (go build -o /tmp/loadgen-new ./cmd/loadgen)
# usage: bench-team.sh BIN [ROUNDS]
set -eu
BIN=$1; ROUNDS=${2:-4}
D=$(mktemp -d); HP=43$((RANDOM%900+100)); GP=44$((RANDOM%900+100))
M=sk-bench-master
SIDECAR_MASTER_KEY=$M taskset -c 0 "$BIN" --data-dir "$D/data" --http-addr 127.0.0.1:$HP --grpc-addr 127.0.0.1:$GP --log-level warn >"$D/log" 2>&1 &
PID=$!
trap 'kill $PID; wait $PID 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 100); do curl -sf 127.0.0.1:$HP/readyz >/dev/null && break; sleep 0.1; done
api() { curl -sf -X POST "http://127.0.0.1:$HP$1" -H "Authorization: Bearer $M" -H 'content-type: application/json' -d "$2"; }
key() { python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])'; }
api /user/new '{"user_id":"bench-user","user_role":"internal_user","max_budget":1000,"auto_create_key":false}' >/dev/null
api /team/new '{"team_id":"bench-team","models":["gpt-4o","gpt-4o-mini"],"max_budget":1000}' >/dev/null
api /team/member_add '{"team_id":"bench-team","member":{"role":"user","user_id":"bench-user"},"max_budget_in_team":1000}' >/dev/null
PLAIN=$(api /key/generate '{"models":["gpt-4o","gpt-4o-mini"],"max_budget":1000,"key_alias":"plain"}' | key)
TEAM=$(api /key/generate '{"models":["gpt-4o","gpt-4o-mini"],"max_budget":1000,"key_alias":"team","team_id":"bench-team","user_id":"bench-user"}' | key)
for r in $(seq "$ROUNDS"); do
  for k in plain team; do
    K=$PLAIN; [ $k = team ] && K=$TEAM
    OUT=$(taskset -c 1 /tmp/loadgen-new -addr 127.0.0.1:$GP -key "$K" -concurrency 10 -duration 8s -metrics "http://127.0.0.1:$HP/metrics" 2>&1)
    echo "round $r $k: $(echo "$OUT" | grep -E 'server CPU|checks/s|allowed|denied' | tr '\n' ' ')"
  done
done
