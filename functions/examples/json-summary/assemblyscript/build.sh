#!/usr/bin/env bash
# Builds the AssemblyScript json-summary example into a WASI reactor module and
# copies it to $1 (default: json-summary.wasm next to this script). Needs node and
# npm; installs the pinned compiler into node_modules on first use.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(realpath -m "${1:-$here/json-summary.wasm}")"
cd "$here"
[ -d node_modules ] || npm ci --no-audit --no-fund
npx asc --target release
cp build/json-summary.wasm "$out"
