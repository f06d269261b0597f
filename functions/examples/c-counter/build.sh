#!/usr/bin/env bash
# Builds the C counter example into a wasm module.
#
#   examples/c-counter/build.sh [OUTPUT]     (default: counter.wasm next to this script)
#
# Needs clang with the wasm32 target and wasm-ld (Debian: clang, lld). No libc:
# every import is declared in functions/include/edgefn.h with import_module("edgefn"), and
# undefined symbols are link errors, so nothing else can sneak in as an import.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/counter.wasm}"

"${CC:-clang}" --target=wasm32 -nostdlib -ffreestanding -mbulk-memory -O2 -Wall -Wextra \
    -I "$here/../../include" \
    -Wl,--no-entry \
    -Wl,--export=handle \
    -Wl,--export=edgefn_abi_version \
    -Wl,--stack-first \
    -o "$out" "$here/counter.c"

echo "built $out"
