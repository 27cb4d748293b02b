#!/usr/bin/env bash
# Builds app.py into a WebAssembly component of the world `batch-transformer`.
#   ./build.sh [OUT.wasm]         (default: ../dist/python-transform.wasm)
# The venv is $PY_VENV if set, else .venv beside this script; it is created and the pinned
# requirements installed when missing or when requirements.txt changed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$(cd "$here/../../wit" && pwd)"
sdk="$(cd "$here/../sdk/python" && pwd)"  # replicator_plugin.py
out="$(realpath -m "${1:-$here/../dist/python-transform.wasm}")"
venv="${PY_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

stamp="$venv/.requirements.txt"
if [[ ! -x "$venv/bin/componentize-py" ]] || ! cmp -s "$here/requirements.txt" "$stamp"; then
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi

mkdir -p "$(dirname "$out")"
start=$(date +%s.%N)
# The component imports WASI as componentize-py's runtime needs it; the host links WASI deny-by-
# default (no files, no network; print() output is discarded). PY_STUB_WASI=1 builds with
# --stub-wasi instead: the component then imports only `log`, but anything touching WASI (print,
# time, random) traps. -p: where app.py lives.
stub=()
[[ "${PY_STUB_WASI:-0}" == 1 ]] && stub=(--stub-wasi)
"$venv/bin/componentize-py" -d "$wit" -w batch-transformer componentize "${stub[@]}" -p "$here" -p "$sdk" app -o "$out" >&2
end=$(date +%s.%N)
size=$(stat -c %s "$out")
awk -v o="$out" -v s="$size" -v a="$start" -v b="$end" \
  'BEGIN { printf "python-transform: %s (%.1f MiB, %.1f s)\n", o, s / 1048576, b - a }' >&2
