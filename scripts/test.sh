#!/usr/bin/env bash
# Runs every test of sluice: unit tests, the invalid-pipeline corpus, the
# end-to-end tests that run the real `sluice` binary on real folders, and
# the dispatch and stream tests against a real RabbitMQ on 127.0.0.1:5672
# and a real Kafka-protocol broker on 127.0.0.1:9092 (each started first,
# by scripts/start-rabbitmq.sh and scripts/start-kafka.sh, if it is not
# answering).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p sluice-engine`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/start-rabbitmq.sh
scripts/start-kafka.sh
exec cargo test --workspace --locked "$@"
