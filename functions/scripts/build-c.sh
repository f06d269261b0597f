#!/usr/bin/env bash
# Builds one C function (no libc) into a wasm module: the C examples' build.sh
# call it.
#
#   functions/scripts/build-c.sh SOURCE.c OUTPUT.wasm
#
# Needs clang with the wasm32 target and wasm-ld (Debian: clang, lld). No libc:
# every import is declared in functions/include/edgefn.h with import_module("edgefn"), and
# undefined symbols are link errors, so nothing else can sneak in as an import.
set -euo pipefail

include="$(cd "$(dirname "${BASH_SOURCE[0]}")/../include" && pwd)"
"${CC:-clang}" --target=wasm32 -nostdlib -ffreestanding -mbulk-memory -O2 -Wall -Wextra \
    -I "$include" \
    -Wl,--no-entry \
    -Wl,--export=handle \
    -Wl,--export=edgefn_abi_version \
    -Wl,--stack-first \
    -o "$2" "$1"
echo "built $2"
