#!/usr/bin/env bash
# Builds the C reading example (reading by path, any payload size) into a wasm
# module (functions/scripts/build-c.sh).
#
#   examples/c-reading/build.sh [OUTPUT]     (default: reading.wasm next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/../../scripts/build-c.sh" "$here/reading.c" "${1:-$here/reading.wasm}"
