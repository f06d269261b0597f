#!/usr/bin/env bash
# Builds the C HTTP examples into wasm modules: hello.wasm (the serverless hello
# world) and device.wasm (a device's last reading as JSON).
#
#   examples/c-http/build.sh [OUTPUT_DIR]     (default: next to this script)
#
# Needs clang with the wasm32 target and wasm-ld (Debian: clang, lld). No libc.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here}"
mkdir -p "$out"
for name in hello device; do
  "${CC:-clang}" --target=wasm32 -nostdlib -ffreestanding -mbulk-memory -O2 -Wall -Wextra \
      -I "$here/../../include" \
      -Wl,--no-entry \
      -Wl,--export=handle \
      -Wl,--export=edgefn_abi_version \
      -Wl,--stack-first \
      -o "$out/$name.wasm" "$here/$name.c"
  echo "built $out/$name.wasm"
done
