#!/usr/bin/env bash
# The benchmark: starts PostgreSQL, builds the host in release mode and prints figures.
#   tests/bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
export INFRA_RUN=${INFRA_RUN:-/tmp/replicator-infra/run}
started=
if ! tests/servers/postgres.sh status 2>/dev/null; then started=1; fi
eval "$(tests/servers/postgres.sh start)"
trap '[[ -n $started ]] && tests/servers/postgres.sh stop' EXIT
cargo build --release -p replicator -p replicator-tests --bins
export REPLICATOR_BIN=$ROOT/target/release/replicator
RUST_LOG=warn target/release/bench
echo
cargo bench -p replicator --bench journal_stores
