#!/usr/bin/env bash
# Builds the JavaScript and Python example transforms into WebAssembly components:
#   dist/js-transform.wasm      (js-transform/, componentize-js)
#   dist/python-transform.wasm  (python-transform/, componentize-py)
# Usage: guest-examples/build-js-python.sh [--aot] [--check]   (from any directory)
#   --aot    compiles the JavaScript ahead of time (componentize-js `enableAot`, through weval):
#            about 25% less time per record than the interpreter. Uses $WEVAL_BIN, or `weval` on
#            PATH, or installs weval 0.5.0 from crates.io into target/weval/ (7 min on 2 cores,
#            once: componentize-js's own npm download of it comes from GitHub).
#   --check  also runs the plain-Node and plain-Python tests of the transform logic and of the
#            SDKs they use (sdk/js, sdk/python), then runs the built components (and
#            dist/rust-transform.wasm when present) under Node through jco against
#            transform-cases.json.
# Installs what it needs on first use: `npm ci` in js-transform/ when node_modules is missing or
# older than package-lock.json; a venv (python-transform/.venv, or $PY_VENV) with the pinned
# componentize-py when missing. Sizes and timings go to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
check=0
aot=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    --aot) aot=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
size() { awk -v s="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MiB", s / 1048576 }'; }
magic() { # a component starts with \0asm, version 0x0d, layer 1
  [[ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" == "0061736d0d000100" ]] ||
    { echo "$1 is not a WebAssembly component" >&2; exit 1; }
}

mkdir -p "$here/dist"
total=$(now)

# --- JavaScript ---
js="$here/js-transform"
if [[ ! -f "$js/node_modules/.package-lock.json" || "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]]; then
  t=$(now)
  # npm ci refuses this lock when the registry lacks some other platform's optional binary that a
  # dependency lists (npm leaves those out of the lock); npm install then installs the same locked
  # versions and leaves the lock as it is.
  tmp="$(mktemp -d)"
  if ! (cd "$js" && npm ci --no-audit --no-fund --loglevel=error 2>"$tmp/npm-ci.log"); then
    echo "js: npm ci refused the lock ($(grep -m1 -o 'Missing: [^ ]*' "$tmp/npm-ci.log" || tail -n1 "$tmp/npm-ci.log")...); npm install from the lock instead" >&2
    cp "$js/package-lock.json" "$tmp/package-lock.json"
    (cd "$js" && npm install --no-audit --no-fund --loglevel=error) >&2
    cmp -s "$js/package-lock.json" "$tmp/package-lock.json" ||
      echo "js: warning: npm install changed js-transform/package-lock.json" >&2
  fi
  rm -rf "$tmp"
  echo "js: dependencies installed, $(since "$t")" >&2
fi
if (( aot )); then
  WEVAL_BIN=${WEVAL_BIN:-$(command -v weval || true)}
  if [[ -z "$WEVAL_BIN" ]]; then
    WEVAL_BIN="$here/target/weval/bin/weval"
    if [[ ! -x "$WEVAL_BIN" ]]; then
      t=$(now)
      # The version componentize-js's own weval package pins, so its AOT cache file matches.
      cargo install --quiet --locked weval --version 0.5.0 --root "$here/target/weval" >&2
      echo "js: installed weval into target/weval, $(since "$t")" >&2
    fi
  fi
  export WEVAL_BIN
fi
t=$(now)
(cd "$js" && node build.mjs "$here/dist/js-transform.wasm")
magic "$here/dist/js-transform.wasm"
echo "js: built dist/js-transform.wasm, $(size "$here/dist/js-transform.wasm"), $(since "$t")" >&2

# --- Python ---
t=$(now)
"$here/python-transform/build.sh" "$here/dist/python-transform.wasm"
magic "$here/dist/python-transform.wasm"
echo "python: built dist/python-transform.wasm, $(size "$here/dist/python-transform.wasm"), $(since "$t") (venv setup included)" >&2

if (( check )); then
  t=$(now)
  (cd "$js" && npm test --silent) >&2
  (cd "$here/sdk/js" && node --test test/*.test.mjs | tail -n 8) >&2
  py="${PY_VENV:-$here/python-transform/.venv}/bin/python"
  "$py" "$here/python-transform/test_app.py" >&2
  PY_VENV="${PY_VENV:-$here/python-transform/.venv}" "$py" "$here/sdk/python/test_replicator_plugin.py" >&2
  components=("$here/dist/js-transform.wasm" "$here/dist/python-transform.wasm")
  # the Rust example too when built (guest-examples/build.sh): the three must agree on every case
  [[ -f "$here/dist/rust-transform.wasm" ]] && components+=("$here/dist/rust-transform.wasm")
  (cd "$js" && node run-component.mjs "${components[@]}")
  echo "checks: $(since "$t")" >&2
fi
echo "js-python: done in $(since "$total")" >&2
