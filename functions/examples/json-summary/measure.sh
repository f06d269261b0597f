#!/usr/bin/env bash
# Builds json-summary in every language here and prints, as a Markdown table,
# each module's size and the fuel an event costs through `edgefn invoke
# --repeat 100`: the first (which also pays for translating the code it runs,
# once per instance) and the last (what a running gateway pays per event). The
# table in functions/README.md comes from this script.
#
#   functions/examples/json-summary/measure.sh [EDGEFN]   (default: edgefn on PATH)
#
# Needs what each build.sh needs. Fuel is exact and the same on every machine
# for the same module and reading.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
edgefn="${1:-edgefn}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
reading='{"temperature":21.5,"humidity":40,"pressure":1013.25,"battery":97,"linkquality":120,"label":"x"}'
echo "reading: $reading"
echo
echo "| language | toolchain | module bytes | fuel, first event | fuel, each later event |"
echo "|---|---|---:|---:|---:|"
for lang in rust-std c-wasi assemblyscript; do
  case $lang in
    rust-std) toolchain="rustc $(rustc -V | cut -d' ' -f2), std + serde_json, wasm32-wasip1" ;;
    c-wasi) toolchain="clang $(clang -dumpversion), wasi-libc" ;;
    assemblyscript) toolchain="asc $(cd "$here/assemblyscript" && node -p 'require("./package.json").devDependencies.assemblyscript')" ;;
  esac
  "$here/$lang/build.sh" "$work/$lang.wasm" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
  out="$("$edgefn" invoke --module "$work/$lang.wasm" --topic zigbee2mqtt/climate --payload "$reading" --set topic=stats/summary --repeat 100)"
  grep -q '^result   ok' <<<"$out" || { echo "$lang failed:"; echo "$out"; exit 1; }
  fuel="$(sed -n 's/^fuel *\([0-9]*\) of.*/\1/p' <<<"$out")"
  first="$(sed -n 's/^first *\([0-9]*\) fuel.*/\1/p' <<<"$out")"
  printf '| %s | %s | %s | %s | %s |\n' "$lang" "$toolchain" "$(stat -c %s "$work/$lang.wasm")" "$first" "$fuel"
done
