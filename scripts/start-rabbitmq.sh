#!/usr/bin/env bash
# Makes sure RabbitMQ answers AMQP on 127.0.0.1:${RABBITMQ_PORT:-5672}, for
# the tests and for `[workers] dispatch`. Idempotent: exits at once if a
# broker already answers; otherwise starts Debian's rabbitmq-server with
# `rabbitmq-server -detached` and waits until it answers (at most
# ${START_TIMEOUT:-90} seconds). The tests log in as guest/guest, which
# RabbitMQ allows from loopback only.
#
# Install the broker first if the machine has none:
#   apt-get install -y rabbitmq-server
set -euo pipefail
PORT="${RABBITMQ_PORT:-5672}"
TIMEOUT="${START_TIMEOUT:-90}"

# An AMQP 0-9-1 broker answers the protocol header with a method frame.
answers() {
  python3 - "$PORT" <<'PY' 2>/dev/null
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    data = s.recv(16)
    sys.exit(0 if len(data) >= 7 and data[0] == 1 else 1)
except OSError:
    sys.exit(1)
PY
}

if answers; then
  echo "rabbitmq: answering on 127.0.0.1:$PORT"
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  echo "rabbitmq: nothing answers on 127.0.0.1:$PORT and rabbitmq-server is not installed;" >&2
  echo "rabbitmq: install it with: apt-get install -y rabbitmq-server   (then run this script again)" >&2
  exit 1
fi

echo "rabbitmq: not answering on 127.0.0.1:$PORT; starting it with rabbitmq-server -detached"
PATH="$PATH:/usr/sbin" RABBITMQ_NODE_PORT="$PORT" rabbitmq-server -detached

deadline=$((SECONDS + TIMEOUT))
until answers; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "rabbitmq: still not answering on 127.0.0.1:$PORT after ${TIMEOUT}s; see /var/log/rabbitmq/" >&2
    exit 1
  fi
  sleep 0.5
done
echo "rabbitmq: answering on 127.0.0.1:$PORT after ${SECONDS}s"
