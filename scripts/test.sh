#!/usr/bin/env bash
# The whole test suite, as the README's test command: starts a 3-node Garage cluster on
# loopback for the S3 tests (building garage once per machine when it is missing, about 11
# minutes on 2 cores; scripts/garage-cluster.sh), runs `cargo test --workspace` with any extra
# arguments, and stops the cluster again, also when the tests fail or this script is killed (a
# watchdog ends it once this shell has gone).
#
#   scripts/test.sh                      everything
#   scripts/test.sh --locked             as CI runs it
#   CAIRN_TEST_S3=off scripts/test.sh    without the cluster (the S3 tests skip, saying so)
#   CAIRN_TEST_S3_URL=... scripts/test.sh  against a cluster (or bucket) you started yourself
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CAIRN_TEST_S3_URL:-}" ] && [ "${CAIRN_TEST_S3:-on}" != off ]; then
  # Its own state folder and ports, so a cluster a developer keeps running is left alone.
  export CAIRN_GARAGE_DIR=${CAIRN_GARAGE_DIR:-/tmp/cairn-garage-test-$$}
  export CAIRN_GARAGE_PORT=${CAIRN_GARAGE_PORT:-39900}
  export CAIRN_GARAGE_OWNER=$$
  trap 'scripts/garage-cluster.sh down || true' EXIT
  env_lines=$(scripts/garage-cluster.sh up)
  eval "$env_lines"
fi
cargo test --workspace "$@"
