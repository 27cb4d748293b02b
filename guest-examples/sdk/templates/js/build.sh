#!/usr/bin/env bash
# Builds {{name}}.wasm, the WebAssembly component, in this directory. Works from any directory;
# installs the devDependencies (componentize-js) when node_modules is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
[[ -d node_modules/@bytecodealliance/componentize-js ]] || npm install --no-audit --no-fund --loglevel=error
node build.mjs
