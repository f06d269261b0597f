#!/usr/bin/env bash
# Builds the C HTTP examples into wasm modules (functions/scripts/build-c.sh):
# hello.wasm (the serverless hello world) and device.wasm (a device's last
# reading as JSON).
#
#   examples/c-http/build.sh [OUTPUT_DIR]     (default: next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here}"
mkdir -p "$out"
for name in hello device; do
  "$here/../../scripts/build-c.sh" "$here/$name.c" "$out/$name.wasm"
done
