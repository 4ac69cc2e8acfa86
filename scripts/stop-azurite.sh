#!/usr/bin/env bash
# Stops the Azurite that scripts/start-azurite.sh started (by its pid file
# only); its blobs and queues, kept in memory, are gone.
set -uo pipefail
PIDFILE="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}/azurite/azurite.pid"
[ -f "$PIDFILE" ] || { echo "azurite: not started by scripts/start-azurite.sh"; exit 0; }
pid="$(cat "$PIDFILE")"
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  echo "azurite: stopped pid $pid"
fi
rm -f "$PIDFILE"
