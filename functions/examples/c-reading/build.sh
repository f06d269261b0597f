#!/usr/bin/env bash
# Builds the C reading example (reading by path, any payload size) into a wasm module.
#
#   examples/c-reading/build.sh [OUTPUT]     (default: reading.wasm next to this script)
#
# Needs clang with the wasm32 target and wasm-ld (Debian: clang, lld). No libc:
# every import is declared in functions/include/edgefn.h with import_module("edgefn"), and
# undefined symbols are link errors, so nothing else can sneak in as an import.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/reading.wasm}"

"${CC:-clang}" --target=wasm32 -nostdlib -ffreestanding -mbulk-memory -O2 -Wall -Wextra \
    -I "$here/../../include" \
    -Wl,--no-entry \
    -Wl,--export=handle \
    -Wl,--export=edgefn_abi_version \
    -Wl,--stack-first \
    -o "$out" "$here/reading.c"

echo "built $out"
