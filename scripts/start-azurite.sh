#!/usr/bin/env bash
# Makes sure Azurite, the Azure Storage emulator, answers on 127.0.0.1
# (Blob on ${AZURITE_BLOB_PORT:-10000}, Queue on ${AZURITE_QUEUE_PORT:-10001}),
# for the tests and for trying pipelines with az:// URLs and azqueue://
# notifications. Idempotent: exits at once if both already answer there
# (after making sure the containers exist).
#
# Otherwise it starts Azurite (the npm package azurite, pinned below,
# installed under $SLUICE_SERVICES, default ~/.cache/sluice-services, ~30 s),
# in memory, on loopback only, without telemetry, and with
# --skipApiVersionCheck, since current Azure clients send a newer API
# version than Azurite knows. It serves the emulator's well-known account
# devstoreaccount1. Stop it with scripts/stop-azurite.sh.
#
# Point sluice at it with
#   export AZURE_STORAGE_USE_EMULATOR=true
# (object_store then uses devstoreaccount1, its well-known key and
# http://127.0.0.1:10000, or $AZURITE_BLOB_STORAGE_URL).
#
# Env: AZURITE_BLOB_PORT (10000), AZURITE_QUEUE_PORT (10001),
#      AZURITE_CONTAINERS (containers to create, "sluice-test"),
#      SLUICE_SERVICES (~/.cache/sluice-services), START_TIMEOUT (seconds, 60).
set -euo pipefail
BLOB_PORT="${AZURITE_BLOB_PORT:-10000}"
QUEUE_PORT="${AZURITE_QUEUE_PORT:-10001}"
CONTAINERS="${AZURITE_CONTAINERS-sluice-test}"
SERVICES="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}"
BASE="$SERVICES/azurite"
TIMEOUT="${START_TIMEOUT:-60}"
PACKAGE="azurite@3.35.0"
PIDFILE="$BASE/azurite.pid"
LOCK="$(cd "$(dirname "$0")" && pwd)/azurite"

# Azurite answers any request; an unsigned one with 403 or 400.
answers() {
  local blob queue
  blob=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$BLOB_PORT/devstoreaccount1?comp=list" || true)
  queue=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$QUEUE_PORT/devstoreaccount1?comp=list" || true)
  [ "$blob" != 000 ] && [ "$queue" != 000 ]
}

# Creates each container with a request signed by the account's
# well-known key (Shared Key, as Azure's clients sign).
create_containers() {
  [ -n "$CONTAINERS" ] || return 0
  python3 - "$BLOB_PORT" $CONTAINERS <<'PY'
import base64, hashlib, hmac, sys, urllib.request, urllib.error
from email.utils import formatdate
ACCOUNT = "devstoreaccount1"
KEY = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
port = sys.argv[1]
for container in sys.argv[2:]:
    date = formatdate(usegmt=True)
    headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
    canonical = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    resource = f"/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
    to_sign = "PUT\n" + "\n" * 11 + canonical + resource
    signature = base64.b64encode(hmac.new(KEY, to_sign.encode(), hashlib.sha256).digest()).decode()
    headers["Authorization"] = f"SharedKey {ACCOUNT}:{signature}"
    url = f"http://127.0.0.1:{port}/{ACCOUNT}/{container}?restype=container"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="PUT", headers=headers), timeout=10)
    except urllib.error.HTTPError as error:
        if error.code != 409:
            sys.exit(f"azurite: cannot create container {container}: HTTP {error.code} {error.read()[:300]!r}")
PY
}

if answers; then
  create_containers
  echo "azurite: answering on 127.0.0.1:$BLOB_PORT (blob) and :$QUEUE_PORT (queue) (containers: ${CONTAINERS:-none})"
  exit 0
fi

# Installed with npm ci from scripts/azurite/package-lock.json, so every
# package under Azurite is the version it was tried with (a newer release
# of one of them, or one the registry lacks, cannot break the install);
# installed again whenever that lock file changes.
if ! cmp -s "$LOCK/package-lock.json" "$BASE/package-lock.json" || [ ! -x "$BASE/node_modules/.bin/azurite" ]; then
  echo "azurite: installing $PACKAGE (locked in scripts/azurite/) from the npm registry into $BASE"
  mkdir -p "$BASE"
  cp "$LOCK/package.json" "$LOCK/package-lock.json" "$BASE/"
  ( cd "$BASE" && npm ci --no-audit --no-fund > "$BASE/install.log" 2>&1 ) \
    || { rm -f "$BASE/package-lock.json"; echo "azurite: npm ci failed; the end of $BASE/install.log:" >&2; tail -20 "$BASE/install.log" >&2; exit 1; }
fi

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "azurite: pid $(cat "$PIDFILE") is running but not answering yet; waiting"
else
  ( cd "$BASE" && exec setsid "$BASE/node_modules/.bin/azurite" --silent --inMemoryPersistence \
      --skipApiVersionCheck --disableTelemetry \
      --blobHost 127.0.0.1 --blobPort "$BLOB_PORT" --queueHost 127.0.0.1 --queuePort "$QUEUE_PORT" \
      --tableHost 127.0.0.1 --tablePort "${AZURITE_TABLE_PORT:-10002}" \
      > "$BASE/server.log" 2>&1 < /dev/null ) &
  echo $! > "$PIDFILE"
  echo "azurite: started, pid $(cat "$PIDFILE"), log in $BASE/server.log"
fi

deadline=$((SECONDS + TIMEOUT))
until answers; do
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "azurite: it exited; the end of its log:" >&2
    tail -20 "$BASE/server.log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "azurite: not answering after ${TIMEOUT}s; see $BASE/server.log" >&2
    exit 1
  fi
  sleep 0.2
done
create_containers
echo "azurite: answering on 127.0.0.1:$BLOB_PORT (blob) and :$QUEUE_PORT (queue) after ${SECONDS}s (containers: ${CONTAINERS:-none})"
