#!/usr/bin/env bash
# Builds {{name}}.wasm, the WebAssembly component, in this directory. Works from any directory;
# honours CARGO_TARGET_DIR; extra arguments go to `cargo build`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target=wasm32-wasip2
# A relative CARGO_TARGET_DIR means relative to where the script was started.
out="${CARGO_TARGET_DIR:-$here/target}"
[[ "$out" = /* ]] || out="$PWD/$out"
export CARGO_TARGET_DIR="$out"
cd "$here"

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
cargo build --release --target "$target" "$@"

# Renamed into place, so a running replicator that watches the file never reads half of it.
cp "$out/$target/release/{{snake_name}}.wasm" "$here/.{{name}}.wasm.tmp"
mv -f "$here/.{{name}}.wasm.tmp" "$here/{{name}}.wasm"
echo "built $here/{{name}}.wasm ($(wc -c <"$here/{{name}}.wasm") bytes)" >&2
