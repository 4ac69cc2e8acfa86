#!/usr/bin/env bash
# Makes sure the local RabbitMQ also answers AMQP over TLS (amqps) on
# 127.0.0.1:${RABBITMQ_TLS_PORT:-5671}, with a certificate for `localhost`
# signed by a test CA made here, for the tests of `amqps://` brokers.
# Idempotent: exits at once if the TLS port answers with a certificate the
# test CA signed.
#
# - Starts the broker itself first if it is down (scripts/start-rabbitmq.sh).
# - Makes the CA and the broker's certificate with the `openssl` command in
#   ${SLUICE_TLS_DIR:-/var/tmp/sluice-rabbitmq-tls} (ca.pem is what clients
#   trust: SLUICE_AMQP_CA_FILE=$SLUICE_TLS_DIR/ca.pem), readable by the
#   broker's user.
# - Adds the TLS listener to the running broker with `rabbitmqctl eval`, so
#   that no configuration file changes and no restart is needed; a broker
#   restarted later has no TLS listener until this runs again.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${RABBITMQ_TLS_PORT:-5671}"
DIR="${SLUICE_TLS_DIR:-/var/tmp/sluice-rabbitmq-tls}"

scripts/start-rabbitmq.sh >/dev/null

verified() {
  [ -f "$DIR/ca.pem" ] || return 1
  echo | timeout 5 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$DIR/ca.pem" \
    -verify_return_error -verify_hostname localhost >/dev/null 2>&1
}

if verified; then
  echo "rabbitmq-tls: answering on 127.0.0.1:$PORT"
  exit 0
fi

if ! command -v openssl >/dev/null 2>&1; then
  echo "rabbitmq-tls: the openssl command is needed to make the test CA: apt-get install -y openssl" >&2
  exit 1
fi

mkdir -p "$DIR"
if [ ! -f "$DIR/server.pem" ]; then
  echo "rabbitmq-tls: making a test CA and a certificate for localhost in $DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/ca.key" -out "$DIR/ca.pem" -days 3650 \
    -subj "/CN=sluice test CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$DIR/server.key" -out "$DIR/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$DIR/server.ext"
  openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
    -out "$DIR/server.pem" -days 3650 -extfile "$DIR/server.ext" 2>/dev/null
fi
# The broker runs as its own user: it must read the key.
if id rabbitmq >/dev/null 2>&1; then
  chgrp rabbitmq "$DIR" "$DIR"/server.* "$DIR/ca.pem"
  chmod 750 "$DIR"
  chmod 640 "$DIR"/server.* "$DIR/ca.pem"
else
  chmod 755 "$DIR"
  chmod 644 "$DIR"/server.* "$DIR/ca.pem"
fi

RABBITMQCTL="$(command -v rabbitmqctl || echo /usr/sbin/rabbitmqctl)"
# A listener left from an earlier CA is replaced.
"$RABBITMQCTL" eval "rabbit_networking:stop_tcp_listener($PORT)." >/dev/null 2>&1 || true
"$RABBITMQCTL" eval "rabbit_networking:start_ssl_listener($PORT, [{cacertfile,\"$DIR/ca.pem\"},
  {certfile,\"$DIR/server.pem\"}, {keyfile,\"$DIR/server.key\"}, {verify,verify_none},
  {fail_if_no_peer_cert,false}], 10)." >/dev/null

for _ in $(seq 1 40); do
  if verified; then
    echo "rabbitmq-tls: answering on 127.0.0.1:$PORT (trust $DIR/ca.pem)"
    exit 0
  fi
  sleep 0.25
done
echo "rabbitmq-tls: the TLS listener on 127.0.0.1:$PORT does not answer; see /var/log/rabbitmq/" >&2
exit 1
