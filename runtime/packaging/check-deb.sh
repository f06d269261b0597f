#!/usr/bin/env bash
# Checks a built .deb: architecture, the binary, the unit, the default configuration
# (a conffile), the Rust SDK and the maintainer scripts are all there, and lintian
# finds no error or warning. Exits non-zero otherwise.
#   runtime/packaging/check-deb.sh FILE.deb ARCH
set -euo pipefail
deb="${1:?usage: check-deb.sh FILE.deb ARCH}"
arch="${2:?usage: check-deb.sh FILE.deb ARCH}"
fail() { echo "check-deb: $deb: $*" >&2; exit 1; }
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "architecture is not $arch"
[ "$(dpkg-deb -f "$deb" Package)" = "edgefn" ] || fail "package is not edgefn"
contents="$(dpkg-deb -c "$deb")"
for path in ./usr/bin/edgefn ./etc/edgefn/gateway.toml ./lib/systemd/system/edgefn.service; do
  grep -q " $path\$" <<<"$contents" || fail "missing $path"
done
grep -q -- "-rwxr-xr-x root/root .* ./usr/bin/edgefn$" <<<"$contents" || fail "/usr/bin/edgefn is not an executable owned by root"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
dpkg-deb -e "$deb" "$tmp"
grep -qx "/etc/edgefn/gateway.toml" "$tmp/conffiles" || fail "/etc/edgefn/gateway.toml is not a conffile"
for s in postinst prerm postrm; do [ -x "$tmp/$s" ] || fail "no $s script"; done
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/edgefn.service | grep -q "^ExecStart=/usr/bin/edgefn run --config /etc/edgefn/gateway.toml$" \
  || fail "the unit does not run edgefn on /etc/edgefn/gateway.toml"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/edgefn.service | grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' \
  || fail "the unit has no ExecReload (systemctl reload edgefn)"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/edgefn.service | grep -q '^Type=notify$' \
  || fail "the unit is not Type=notify"
# Debian's own checks: no error and no warning.
if ! report="$(lintian --fail-on error,warning --tag-display-limit 0 "$deb" 2>&1)"; then
  printf '%s\n' "$report" | grep -v "root privileges" >&2
  fail "lintian reports errors or warnings (above)"
fi
for path in ./usr/share/doc/edgefn/copyright ./usr/share/doc/edgefn/changelog.gz ./usr/share/doc/edgefn/PI.md ./usr/share/man/man1/edgefn.1.gz \
  ./usr/share/bash-completion/completions/edgefn; do
  grep -q " $path\$" <<<"$contents" || fail "missing $path"
done
# The Rust SDK `edgefn new --lang rust` builds against, readable by everyone.
for path in ./usr/share/edgefn/sdk/Cargo.toml ./usr/share/edgefn/sdk/src/lib.rs; do
  grep -q -- "-rw-r--r-- root/root .* $path\$" <<<"$contents" || fail "missing $path (0644 root:root)"
done
sdk_manifest="$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/edgefn/sdk/Cargo.toml)"
grep -q '^name = "edgefn-sdk"$' <<<"$sdk_manifest" || fail "/usr/share/edgefn/sdk/Cargo.toml is not the edgefn-sdk crate"
if grep -q '\.workspace *= *true' <<<"$sdk_manifest"; then
  fail "/usr/share/edgefn/sdk/Cargo.toml inherits from a workspace, which the package does not install"
fi
grep -q "dpkg-statoverride --update --add root edgefn 0640 /etc/edgefn/gateway.toml" "$tmp/postinst" \
  || fail "postinst does not make the configuration 0640 root:edgefn"
echo "check-deb: $deb ok ($arch, $(dpkg-deb -f "$deb" Depends))"
