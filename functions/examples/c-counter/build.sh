#!/usr/bin/env bash
# Builds the C counter example into a wasm module (functions/scripts/build-c.sh).
#
#   examples/c-counter/build.sh [OUTPUT]     (default: counter.wasm next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/../../scripts/build-c.sh" "$here/counter.c" "${1:-$here/counter.wasm}"
