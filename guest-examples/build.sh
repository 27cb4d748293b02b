#!/usr/bin/env bash
# Builds every guest in this workspace as a WebAssembly component and copies them to
# dist/<name>.wasm. Works from any directory. Extra arguments go to `cargo build`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target=wasm32-wasip2
cd "$here"

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "build.sh: installing the $target target" >&2
    rustup target add "$target"
fi

cargo build --release --target "$target" "$@"

# Crate (cdylib) name → dist name: cargo writes `rust_transform.wasm` for `rust-transform`.
crates=(rust-transform rust-driver loop-forever alloc-forever panic bad-output read-file driver-forbidden-host)
out="${CARGO_TARGET_DIR:-$here/target}/$target/release"
mkdir -p "$here/dist"
for crate in "${crates[@]}"; do
    src="$out/${crate//-/_}.wasm"
    if [[ ! -f "$src" ]]; then
        echo "build.sh: missing $src" >&2
        exit 1
    fi
    # A component starts with \0asm and the layer/version bytes 0d 00 01 00.
    if [[ "$(head -c 8 "$src" | od -An -tx1 | tr -d ' \n')" != "0061736d0d000100" ]]; then
        echo "build.sh: $src is not a WebAssembly component" >&2
        exit 1
    fi
    cp "$src" "$here/dist/$crate.wasm"
    printf '%8d bytes  dist/%s.wasm\n' "$(stat -c %s "$here/dist/$crate.wasm")" "$crate" >&2
done
