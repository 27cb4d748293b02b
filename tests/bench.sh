#!/usr/bin/env bash
# The benchmark: builds the host in release mode, starts PostgreSQL, the S3 test server, moto
# (S3 that notifies SQS, for change capture), fauxqs (the fastest SQS server that runs here) and
# the BigQuery emulator, and prints figures (docs/benchmarks.md explains each).
#   tests/bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
export INFRA_RUN=${INFRA_RUN:-/tmp/replicator-infra/run}
cargo build --release -p replicator -p replicator-tests -p s3-test-server --bins
tests/servers/s3db-js.sh install
guest-examples/build.sh --features rust-transform/bench-arena
guest-examples/build-js-python.sh --aot
export S3_SERVER_BIN=$ROOT/target/release/s3-test-server
STARTED=()
# fauxqs after moto: SQS_ENDPOINT is fauxqs, MOTO_ENDPOINT moto.
for server in postgres s3 sqs fauxqs bigquery; do
    tests/servers/$server.sh status 2>/dev/null || STARTED+=("$server")
    eval "$(tests/servers/$server.sh start)"
done
trap 'for s in "${STARTED[@]}"; do tests/servers/$s.sh stop; done' EXIT
export REPLICATOR_BIN=$ROOT/target/release/replicator
RUST_LOG=warn target/release/bench
echo
cargo bench -p replicator --bench journal_stores
echo
cargo bench -p replicator --bench plugins
