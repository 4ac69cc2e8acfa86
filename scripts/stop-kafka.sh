#!/usr/bin/env bash
# Stops the Tansu broker that scripts/start-kafka.sh started (by its pid
# file only; a broker started some other way is left alone).
set -uo pipefail
PIDFILE="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}/kafka/kafka.pid"
[ -f "$PIDFILE" ] || { echo "kafka: not started by scripts/start-kafka.sh"; exit 0; }
pid="$(cat "$PIDFILE")"
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  echo "kafka: stopped pid $pid"
fi
rm -f "$PIDFILE"
