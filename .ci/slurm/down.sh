#!/usr/bin/env bash
# Stop every daemon .ci/slurm/up.sh started, by PID (last started first).
STATE=${1:?usage: down.sh STATE_DIR}
[ -f "$STATE/pids" ] || exit 0
tac "$STATE/pids" | while read -r pid; do
  [ -n "$pid" ] || continue
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
done
: > "$STATE/pids"
