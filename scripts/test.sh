#!/usr/bin/env bash
# Runs every test of sluice: unit tests, the invalid-pipeline corpus, and the
# end-to-end tests that run the real `sluice` binary on real folders.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p sluice-engine`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked "$@"
