#!/usr/bin/env bash
# s3db.js 21.6.2 (tests/js) for the integration tests: not a server, only an install step.
#
#   tests/servers/s3db-js.sh install   # npm ci in tests/js if node_modules is missing or stale
#
# Idempotent: runs `npm ci` only when tests/js/node_modules is missing or package.json /
# package-lock.json changed since the last successful install (a hash stamp kept in
# node_modules). Prints nothing on stdout; progress and errors go to stderr.
# Needs Node >= 20 and npm on PATH and access to the npm registry (first install ~15 s, 290 MB).
#
# Then: node tests/js/s3db-tool.mjs '<connectionString>' < commands.json
# Why the overrides and stubs are needed: tests/js/package.json.
set -euo pipefail

ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
JS=$ROOT/tests/js
STAMP=$JS/node_modules/.replicator-install.sha256

. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

cmd_install() {
    local t0 want
    t0=$(date +%s%N)
    command -v node >/dev/null && command -v npm >/dev/null ||
        die "node and npm are required (Node >= 20); install them first"
    want=$(cd "$JS" && cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
    if [[ -d $JS/node_modules/s3db.js && -r $STAMP && $(cat "$STAMP") == "$want" ]]; then
        log "tests/js/node_modules is up to date"
        return 0
    fi
    log "npm ci in $JS ($(node --version))"
    (cd "$JS" && npm ci --no-audit --no-fund >&2) || die "npm ci failed in $JS"
    echo "$want" >"$STAMP"
    log "installed s3db.js $(node -p "require('$JS/node_modules/s3db.js/package.json').version") ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
}

case ${1:-} in
    install) cmd_install ;;
    *) echo "usage: $0 install" >&2; exit 64 ;;
esac
