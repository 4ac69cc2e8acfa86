#!/usr/bin/env bash
# Runs every test of sluice: unit tests, the invalid-pipeline corpus, the
# end-to-end tests that run the real `sluice` binary on real folders, and
# the dispatch and stream tests against a real RabbitMQ on 127.0.0.1:5672
# and a real Kafka-protocol broker on 127.0.0.1:9092, and the bucket tests
# against a real S3-compatible server on 127.0.0.1:9000, a GCS emulator on
# 127.0.0.1:4443 and Azurite on 127.0.0.1:10000-10001 (each started first,
# by scripts/start-rabbitmq.sh, scripts/start-kafka.sh, scripts/start-s3.sh,
# scripts/start-gcs.sh and scripts/start-azurite.sh, if it is not
# answering).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p sluice-engine`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/start-rabbitmq.sh
scripts/start-kafka.sh
scripts/start-s3.sh
scripts/start-gcs.sh
scripts/start-azurite.sh
scripts/start-rabbitmq-tls.sh
exec cargo test --workspace --locked "$@"
