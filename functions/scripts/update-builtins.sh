#!/usr/bin/env bash
# Rebuilds the prebuilt example functions in runtime/builtin/ from functions/ and
# records the digest of the sources they came from (runtime/build.rs explains why
# they exist). Needs the wasm32-unknown-unknown target. Run it after changing the
# SDK or an example, and commit runtime/builtin/ with the change.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "error: the wasm32-unknown-unknown target is not installed. Fix: rustup target add wasm32-unknown-unknown" >&2
  exit 1
fi
EDGEFN_UPDATE_BUILTINS=1 cargo check -p edgefn --quiet
ls -l runtime/builtin/
