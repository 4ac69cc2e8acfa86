#!/usr/bin/env bash
# Stops the S3 server that scripts/start-s3.sh started (by its pid
# file only; a server started some other way is left alone).
set -uo pipefail
PIDFILE="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}/s3/s3.pid"
[ -f "$PIDFILE" ] || { echo "s3: not started by scripts/start-s3.sh"; exit 0; }
pid="$(cat "$PIDFILE")"
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  echo "s3: stopped pid $pid"
fi
rm -f "$PIDFILE"
