#!/usr/bin/env bash
# Builds the .deb for one target from an already built binary (see PI.md).
#
#   runtime/packaging/build-deb.sh TARGET [OUTDIR]
#     TARGET: aarch64-unknown-linux-gnu (-> arm64), armv7-unknown-linux-gnueabihf (-> armhf)
#             or x86_64-unknown-linux-gnu (-> amd64: CI's install test, or a laptop's SDK)
#     reads   target/TARGET/pi/edgefn   (cargo build --profile pi --target TARGET), or, when
#             TARGET is the machine's own (a native build on the Pi), target/pi/edgefn
#             (cargo build --profile pi) if the first is absent
#     writes  OUTDIR/edgefn_VERSION_ARCH.deb   (default OUTDIR: target/deb)
#
# Uses dpkg-deb, Debian's own tool: the package installs the binary, the default
# configuration /etc/edgefn/gateway.toml (a conffile), the systemd unit, the Rust
# guest SDK (/usr/share/edgefn/sdk, which `edgefn new --lang rust` builds against),
# and creates the edgefn system user on install.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${1:?usage: build-deb.sh TARGET [OUTDIR]}"
outdir="${2:-$root/target/deb}"
case "$target" in
  aarch64-unknown-linux-gnu) arch=arm64; objdump=aarch64-linux-gnu-objdump ;;
  armv7-unknown-linux-gnueabihf) arch=armhf; objdump=arm-linux-gnueabihf-objdump ;;
  x86_64-unknown-linux-gnu) arch=amd64; objdump=x86_64-linux-gnu-objdump ;;
  *) echo "build-deb.sh: unknown target $target" >&2; exit 2 ;;
esac
# Building for the machine itself (amd64 on a laptop, arm64 or armhf on a Pi): its own
# objdump reads the binary when the cross one is not installed.
native=false
[ "$(dpkg --print-architecture)" = "$arch" ] && native=true
if ! command -v "$objdump" >/dev/null && $native; then objdump=objdump; fi
command -v "$objdump" >/dev/null || { echo "build-deb.sh: $objdump not found (binutils for $arch)" >&2; exit 1; }
binary="$root/target/$target/pi/edgefn"
if [ ! -x "$binary" ] && $native && [ -x "$root/target/pi/edgefn" ]; then binary="$root/target/pi/edgefn"; fi
[ -x "$binary" ] || { echo "build-deb.sh: $binary not found; run: cargo build --profile pi --target $target" >&2; exit 1; }
echo "build-deb.sh: packaging $binary" >&2
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
# The newest glibc symbol version the binary needs is the libc6 it depends on.
glibc="$("$objdump" -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"

stage="$(mktemp -d)"
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$binary" "$stage/usr/bin/edgefn"
install -D -m 0644 "$root/device-configs/pi-default.toml" "$stage/etc/edgefn/gateway.toml"
install -D -m 0644 "$here/edgefn.service" "$stage/lib/systemd/system/edgefn.service"
install -D -m 0644 "$root/README.md" "$stage/usr/share/doc/edgefn/README.md"
install -D -m 0644 "$root/PI.md" "$stage/usr/share/doc/edgefn/PI.md"
install -D -m 0644 "$root/UPSTREAM.md" "$stage/usr/share/doc/edgefn/UPSTREAM.md"
install -D -m 0644 "$root/functions/ABI.md" "$stage/usr/share/doc/edgefn/ABI.md"
install -D -m 0644 "$root/runtime/data/uci_occupancy/README.md" "$stage/usr/share/doc/edgefn/demo-dataset.md"
install -D -m 0644 "$here/copyright" "$stage/usr/share/doc/edgefn/copyright"
# The Rust guest SDK, as source: `edgefn new --lang rust` points a new project at it
# (its Cargo.toml stands alone, with no workspace to inherit from).
sdk="$root/functions/sdk"
install -D -m 0644 "$sdk/Cargo.toml" "$stage/usr/share/edgefn/sdk/Cargo.toml"
(cd "$sdk" && find src -type f) | sort | while read -r file; do
  install -D -m 0644 "$sdk/$file" "$stage/usr/share/edgefn/sdk/$file"
done
find "$stage/usr" -type d -exec chmod 0755 {} +
gzip -9n < "$here/changelog" > "$stage/usr/share/doc/edgefn/changelog.gz"
chmod 0644 "$stage/usr/share/doc/edgefn/changelog.gz"
# Man pages and shell completions, generated from the command line the binary parses.
docs="$stage/generated"
(cd "$root" && cargo run --quiet --example generate-docs -- "$docs") >&2
mkdir -p "$stage/usr/share/man/man1"
for page in "$docs"/*.1; do gzip -9n < "$page" > "$stage/usr/share/man/man1/$(basename "$page").gz"; done
install -D -m 0644 "$docs/edgefn.bash" "$stage/usr/share/bash-completion/completions/edgefn"
install -D -m 0644 "$docs/_edgefn" "$stage/usr/share/zsh/vendor-completions/_edgefn"
install -D -m 0644 "$docs/edgefn.fish" "$stage/usr/share/fish/vendor_completions.d/edgefn.fish"
rm -rf "$docs"
chmod 0644 "$stage"/usr/share/man/man1/*.gz
mkdir -p "$stage/DEBIAN"
for script in postinst prerm postrm; do install -m 0755 "$here/$script" "$stage/DEBIAN/$script"; done
echo "/etc/edgefn/gateway.toml" > "$stage/DEBIAN/conffiles"
size_kb="$(du -sk "$stage" | cut -f1)"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: edgefn
Version: $version
Architecture: $arch
Maintainer: edgefn developers <dev@edgefn.invalid>
Depends: libc6 (>= $glibc), adduser, init-system-helpers (>= 1.54)
Recommends: mosquitto
Section: net
Priority: optional
Installed-Size: $size_kb
Description: serverless WebAssembly functions for IoT gateways
 edgefn subscribes to the MQTT topics devices publish on, runs sandboxed
 WebAssembly functions (bounded in fuel, memory, stack and time) on every
 message, publishes the commands they decide on, and delivers results to a
 cloud broker through a durable on-disk outbox.
 .
 The package also carries the Rust SDK for writing functions, which
 "edgefn new --lang rust" builds against.
CONTROL
mkdir -p "$outdir"
deb="$outdir/edgefn_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
