#!/usr/bin/env bash
# Makes sure an S3-compatible server answers on 127.0.0.1:${S3_PORT:-9000},
# for the tests and for trying pipelines with s3:// URLs. Idempotent: exits
# at once if a server already answers there (after making sure the buckets
# exist).
#
# Otherwise it starts moto's S3 server, installing it first if it is
# missing (the PyPI package moto, pinned below, ~30 s), into a virtual
# environment under $SLUICE_SERVICES (default ~/.cache/sluice-services). It
# listens on loopback only, keeps its objects in memory (gone when it
# stops), accepts any credentials, and supports conditional writes
# (If-None-Match: *), which the checkpoint log needs. Stop it with
# scripts/stop-s3.sh.
#
# Point sluice at it with
#   export AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true \
#          AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
#
# Env: S3_PORT (9000), S3_BUCKETS (buckets to create, "sluice-test"),
#      SLUICE_SERVICES (~/.cache/sluice-services), START_TIMEOUT (seconds, 60).
set -euo pipefail
PORT="${S3_PORT:-9000}"
BUCKETS="${S3_BUCKETS-sluice-test}"
BASE="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}/s3"
VENV="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}/venv-moto"
TIMEOUT="${START_TIMEOUT:-60}"
PIDFILE="$BASE/s3.pid"
PACKAGES=("moto[s3,server]==5.1.22")
ENDPOINT="http://127.0.0.1:$PORT"

# Any HTTP answer to ListBuckets means an S3 server is serving.
answers() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$ENDPOINT/" || true)
  [ "$code" = 200 ] || [ "$code" = 403 ]
}

create_buckets() {
  local bucket code
  for bucket in $BUCKETS; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT \
      --aws-sigv4 "aws:amz:us-east-1:s3" --user "test:test" \
      -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
      "$ENDPOINT/$bucket")
    case "$code" in
      200|409) ;;
      *) echo "s3: cannot create bucket $bucket: HTTP $code" >&2; exit 1 ;;
    esac
  done
}

if answers; then
  create_buckets
  echo "s3: answering on $ENDPOINT (buckets: ${BUCKETS:-none})"
  exit 0
fi

if [ ! -x "$VENV/bin/moto_server" ]; then
  echo "s3: installing moto (${PACKAGES[*]} from PyPI) into $VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
fi

mkdir -p "$BASE"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "s3: pid $(cat "$PIDFILE") is running but not answering yet; waiting"
else
  ( cd "$BASE" && exec setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" \
      > "$BASE/server.log" 2>&1 < /dev/null ) &
  echo $! > "$PIDFILE"
  echo "s3: started moto, pid $(cat "$PIDFILE"), log in $BASE/server.log"
fi

deadline=$((SECONDS + TIMEOUT))
until answers; do
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "s3: moto exited; the end of its log:" >&2
    tail -20 "$BASE/server.log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "s3: not answering on $ENDPOINT after ${TIMEOUT}s; see $BASE/server.log" >&2
    exit 1
  fi
  sleep 0.2
done
create_buckets
echo "s3: answering on $ENDPOINT after ${SECONDS}s (buckets: ${BUCKETS:-none})"
