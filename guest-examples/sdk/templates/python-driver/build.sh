#!/usr/bin/env bash
# Builds {{name}}.wasm, the WebAssembly component, in this directory. Works from any directory.
# componentize-py comes from $PY_VENV when set, else from .venv here, which is made (with the
# pinned componentize-py of requirements.txt) when missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="${PY_VENV:-$here/.venv}"
if [[ ! -x "$venv/bin/componentize-py" ]]; then
  [[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q -r requirements.txt
fi
# The world is sink-driver plus wasi:http/outgoing-handler, for the SDK's http_request (see
# sdk/wasi-http/world.wit); both WIT packages name an interface `types`, hence the two names.
# -p: where app.py and the SDK (sdk/replicator_plugin.py) are.
"$venv/bin/componentize-py" -d wit -d sdk/wasi-http -w replicator:python-http/http-driver \
  --import-interface-name replicator:plugin/types@0.1.0=types \
  --import-interface-name wasi:http/types@0.2.12=http_types \
  componentize -p . -p sdk app -o ".{{name}}.wasm.tmp" >&2
# Renamed into place, so a running replicator that watches the file never reads half of it.
mv -f ".{{name}}.wasm.tmp" "{{name}}.wasm"
echo "built $here/{{name}}.wasm ($(wc -c <"{{name}}.wasm") bytes)" >&2
