#!/usr/bin/env bash
# Stops what scripts/start-gcs.sh started (its pids only); the objects,
# kept in memory, are gone.
set -euo pipefail
BASE="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}/gcs"
for name in front server; do
  if [ -f "$BASE/$name.pid" ] && kill "$(cat "$BASE/$name.pid")" 2>/dev/null; then
    echo "gcs: stopped $name (pid $(cat "$BASE/$name.pid"))"
  fi
  rm -f "$BASE/$name.pid"
done
