#!/usr/bin/env bash
# Builds (or adds to) a signed apt repository of edgefn packages, a plain tree of
# files that any static web server can host as it is (see PI.md):
#
#   runtime/packaging/build-apt-repo.sh [--key KEY] OUTDIR DEB...
#     KEY      the signing key's fingerprint or id in GNUPGHOME (default: $EDGEFN_APT_KEY);
#              GNUPGHOME (environment) is the keyring that holds its secret part
#     OUTDIR   the repository's root; .deb files already in its pool stay (older
#              versions remain installable), the indexes are rebuilt from the whole pool
#     DEB      the packages to add, any architecture (arm64, armhf, amd64)
#
# It writes:
#   OUTDIR/pool/main/e/edgefn/*.deb
#   OUTDIR/dists/stable/main/binary-ARCH/Packages, Packages.gz   (each architecture in the pool)
#   OUTDIR/dists/stable/Release (with MD5/SHA1/SHA256/SHA512 of the indexes),
#                        InRelease (signed inline) and Release.gpg (detached)
#   OUTDIR/edgefn-archive-keyring.gpg   the public key, a binary keyring for signed-by=
#
# A client then adds one line (as root, with the keyring copied to /usr/share/keyrings):
#   deb [signed-by=/usr/share/keyrings/edgefn-archive-keyring.gpg] https://HOST/PATH stable main
# Uses Debian's tools: apt-ftparchive (apt-utils), dpkg-deb and gpg.
set -euo pipefail
usage() { echo "usage: build-apt-repo.sh [--key KEY] OUTDIR DEB..." >&2; exit 2; }
key="${EDGEFN_APT_KEY:-}"
if [ "${1:-}" = "--key" ]; then key="${2:-}"; shift 2 || usage; fi
[ $# -ge 2 ] || usage
outdir="$1"; shift
[ -n "$key" ] || { echo "build-apt-repo.sh: no signing key: pass --key KEY or set EDGEFN_APT_KEY (and GNUPGHOME)" >&2; exit 2; }
for tool in apt-ftparchive gpg dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "build-apt-repo.sh: $tool not found (apt-get install apt-utils gpg dpkg)" >&2; exit 1; }
done
gpg --batch --quiet --list-secret-keys "$key" >/dev/null 2>&1 \
  || { echo "build-apt-repo.sh: no secret key $key in ${GNUPGHOME:-~/.gnupg}" >&2; exit 1; }

suite=stable
component=main
pool="pool/$component/e/edgefn"
mkdir -p "$outdir/$pool"
for deb in "$@"; do
  [ "$(dpkg-deb -f "$deb" Package)" = "edgefn" ] || { echo "build-apt-repo.sh: $deb is not an edgefn package" >&2; exit 1; }
  install -m 0644 "$deb" "$outdir/$pool/"
done
cd "$outdir"
# Every architecture in the pool gets its index (the file name ends in _ARCH.deb).
mapfile -t arches < <(for deb in "$pool"/*.deb; do dpkg-deb -f "$deb" Architecture; done | sort -u)

rm -rf "dists/$suite"
for arch in "${arches[@]}"; do
  dir="dists/$suite/$component/binary-$arch"
  mkdir -p "$dir"
  # Paths relative to the repository's root, as apt resolves Filename: against it.
  apt-ftparchive --arch "$arch" packages "pool/$component" > "$dir/Packages"
  gzip -9n < "$dir/Packages" > "$dir/Packages.gz"
  printf 'Archive: %s\nComponent: %s\nOrigin: edgefn\nLabel: edgefn\nArchitecture: %s\n' \
    "$suite" "$component" "$arch" > "$dir/Release"
done
# Written beside, then moved in: apt-ftparchive must not hash a half-written Release.
release="$(mktemp)"
trap 'rm -f "$release"' EXIT
apt-ftparchive \
  -o APT::FTPArchive::Release::Origin=edgefn \
  -o APT::FTPArchive::Release::Label=edgefn \
  -o APT::FTPArchive::Release::Suite="$suite" \
  -o APT::FTPArchive::Release::Codename="$suite" \
  -o APT::FTPArchive::Release::Architectures="${arches[*]}" \
  -o APT::FTPArchive::Release::Components="$component" \
  -o APT::FTPArchive::Release::Description="edgefn: serverless WebAssembly functions for IoT gateways" \
  release "dists/$suite" > "$release"
install -m 0644 "$release" "dists/$suite/Release"
gpg --batch --yes --local-user "$key" --digest-algo SHA512 --clearsign -o "dists/$suite/InRelease" "dists/$suite/Release"
gpg --batch --yes --local-user "$key" --digest-algo SHA512 --armor --detach-sign -o "dists/$suite/Release.gpg" "dists/$suite/Release"
gpg --batch --yes --export -o edgefn-archive-keyring.gpg "$key"
chmod 0644 "dists/$suite/InRelease" "dists/$suite/Release.gpg" edgefn-archive-keyring.gpg
echo "build-apt-repo.sh: $(pwd): ${arches[*]}, $(find "$pool" -name '*.deb' | wc -l) packages, signed by $key" >&2
