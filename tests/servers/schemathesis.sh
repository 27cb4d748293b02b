#!/usr/bin/env bash
# schemathesis (PyPI) for the property-based run of the HTTP API against its OpenAPI
# description (tests/openapi.rs): not a server, only an install step.
#
#   tests/servers/schemathesis.sh install   # prints `export SCHEMATHESIS_BIN=...` on stdout
#
# Idempotent: makes a venv under $INFRA_RUN/../schemathesis-venv with the pinned version when
# it is missing or another version. Needs python3 with venv and access to PyPI (~30 s first).
set -euo pipefail

VERSION=4.32.5
INFRA_RUN=${INFRA_RUN:-/tmp/replicator-infra/run}
VENV=${SCHEMATHESIS_VENV:-$(dirname "$INFRA_RUN")/schemathesis-venv}

. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

cmd_install() {
    local t0
    t0=$(date +%s%N)
    if [[ $("$VENV/bin/schemathesis" --version 2>/dev/null) != *"$VERSION"* ]]; then
        log "installing schemathesis $VERSION into $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2 ||
            die "pip install schemathesis==$VERSION failed"
        log "installed ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
    fi
    echo "export SCHEMATHESIS_BIN=$VENV/bin/schemathesis"
}

case ${1:-} in
    install) cmd_install ;;
    *) echo "usage: $0 install" >&2; exit 64 ;;
esac
