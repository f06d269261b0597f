#!/usr/bin/env bash
# Builds json-summary in C against wasi-libc and copies the module to $1
# (default ./json-summary.wasm next to this script).
#
# Needs clang, wasm-ld and wasi-libc with the wasm32 compiler runtime
# (Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32).
# `-mexec-model=reactor`: a library the gateway calls into (its `_initialize`
# runs libc's constructors once per instance), not a program with a `main`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(realpath -m "${1:-$here/json-summary.wasm}")"
"${CC:-clang}" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
    -I "$here/../../../include" -Wl,--strip-all \
    -o "$out" "$here/summary.c"
