#!/usr/bin/env bash
# Builds the example for wasm32-wasip1 and copies the module to $1 (default
# ./json-summary.wasm). Needs `rustup target add wasm32-wasip1`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(realpath -m "${1:-json-summary.wasm}")"
cd "$here"
cargo build --release --quiet --target wasm32-wasip1 --target-dir "${CARGO_TARGET_DIR:-$here/target}"
cp "${CARGO_TARGET_DIR:-$here/target}/wasm32-wasip1/release/json_summary.wasm" "$out"
