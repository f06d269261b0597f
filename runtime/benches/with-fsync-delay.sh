#!/usr/bin/env bash
# Runs a command with every fsync and fdatasync slowed by MS milliseconds, as an
# SD card slows them (a preloaded shim, fsync_delay.c; child processes inherit it).
#
#   bash runtime/benches/with-fsync-delay.sh 5 cargo bench --bench outbox -- --quick
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 MS COMMAND..." >&2; exit 2; }
ms="$1"; shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
shim="$root/target/fsync-delay.so"
mkdir -p "$root/target"
cc -shared -fPIC -O2 -o "$shim" "$root/runtime/benches/fsync_delay.c" -ldl
echo "every fsync and fdatasync now waits ${ms} ms" >&2
EDGEFN_FSYNC_DELAY_US=$((ms * 1000)) LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}" exec "$@"
