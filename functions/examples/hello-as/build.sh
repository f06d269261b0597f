#!/usr/bin/env bash
# Builds the AssemblyScript hello world into a wasm module.
#
#   examples/hello-as/build.sh [OUTPUT]     (default: hello.wasm next to this script)
#
# Needs Node.js and npm: the first build fetches the compiler from the npm registry.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(realpath -m "${1:-$here/hello.wasm}")"
cd "$here"
[ -d node_modules ] || npm ci --no-audit --no-fund --silent
npx asc --target release
cp build/hello.wasm "$out"
echo "built $out"
