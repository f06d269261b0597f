#!/usr/bin/env bash
# CI: the amd64 package, as a user gets it (see PI.md). As root, on a Debian machine:
#
#   runtime/packaging/test-apt-install.sh target/deb/edgefn_VERSION_amd64.deb
#
# Signs a repository built from the .deb with a throwaway test key, installs edgefn
# from it with apt-get (no running systemd is needed: the maintainer scripts must
# succeed without one), checks the installed binary, configuration and user, starts
# a Rust function with the installed `edgefn new` and builds and tests it against
# the installed SDK, then purges the package and checks that nothing of it is left.
# Only the repository's apt source is read (no network). Prints FAIL lines and exits
# non-zero on a failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deb="$(realpath "${1:?usage: test-apt-install.sh DEB_AMD64}")"
[ "$(id -u)" = 0 ] || { echo "FAIL: run as root (it installs and purges a package)"; exit 1; }
[ "$(dpkg-deb -f "$deb" Architecture)" = "$(dpkg --print-architecture)" ] \
  || { echo "FAIL: $deb is not for this machine ($(dpkg --print-architecture))"; exit 1; }
status() { dpkg-query -W -f '${Status}' edgefn 2>/dev/null || true; }
case "$(status)" in
  "" | "unknown ok not-installed") ;;
  *) echo "FAIL: edgefn is on this machine already ($(status)): this test installs and purges it"; exit 1 ;;
esac
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
step() { echo "-- $*"; }

work="$(mktemp -d /tmp/edgefn-apt-test.XXXXXX)"
chmod 0755 "$work" # apt's download sandbox (user _apt) reads the repository
list=/etc/apt/sources.list.d/edgefn-test.list
export GNUPGHOME="$work/gnupg"
# Only this source, and the package lists of the others left where they are.
apt_opts=(-o "Dir::Etc::sourcelist=$list" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0)
cleanup() {
  rm -f "$list"
  # apt keeps a copy of the repository's indexes under its lists: they go with the source.
  rm -f /var/lib/apt/lists/*"$(basename "$work")"*
  gpgconf --kill gpg-agent 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# What is on the machine before, to compare with after the purge: everything but
# apt's and dpkg's own records, caches, logs and what runs.
snapshot() {
  find /etc /usr /var /opt /srv -xdev \
    \( -path /var/lib/apt -o -path /var/lib/dpkg -o -path /var/cache -o -path /var/log -o -path /var/tmp \
       -o -path /var/run -o -path /var/lock -o -path /var/spool -o -path /var/mail \) -prune -o -print 2>/dev/null | sort
}
snapshot > "$work/before"

step "a test signing key and the repository"
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'edgefn test archive <test@edgefn.invalid>' ed25519 sign never
key="$(gpg --batch --quiet --with-colons --list-secret-keys | awk -F: '/^fpr:/ { print $10; exit }')"
bash "$here/build-apt-repo.sh" --key "$key" "$work/repo" "$deb"
install -m 0644 "$work/repo/edgefn-archive-keyring.gpg" "$work/edgefn-archive-keyring.gpg"
echo "deb [signed-by=$work/edgefn-archive-keyring.gpg] file:$work/repo stable main" > "$list"

step "apt-get update and install"
apt-get "${apt_opts[@]}" update -q
# No Recommends (mosquitto): only what this package brings is installed, and purged after.
DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -q --no-install-recommends edgefn
dpkg-query -W -f '${Status} ${Version}\n' edgefn | grep -q '^install ok installed ' || fail "edgefn is not installed"
dpkg -L edgefn | sort > "$work/files"
want="$(dpkg-deb -f "$deb" Version)"
got="$(/usr/bin/edgefn --version)" || fail "edgefn --version exited $?"
[ "$got" = "edgefn $want" ] || fail "edgefn --version says \"$got\", not \"edgefn $want\""
[ -f /etc/edgefn/gateway.toml ] || fail "no /etc/edgefn/gateway.toml"
[ "$(stat -c '%a %U:%G' /etc/edgefn/gateway.toml)" = "640 root:edgefn" ] \
  || fail "/etc/edgefn/gateway.toml is $(stat -c '%a %U:%G' /etc/edgefn/gateway.toml), not 640 root:edgefn"
/usr/bin/edgefn check /etc/edgefn/gateway.toml >/dev/null || fail "edgefn check /etc/edgefn/gateway.toml failed"
getent passwd edgefn >/dev/null || fail "no edgefn user"
[ "$(id -gn edgefn 2>/dev/null)" = edgefn ] || fail "the edgefn user's group is not edgefn"
[ -f /usr/share/edgefn/sdk/Cargo.toml ] || fail "no SDK at /usr/share/edgefn/sdk"

step "a Rust function with the installed edgefn and SDK"
mkdir -m 0755 "$work/project"
# Found by itself, beside the installed binary: no --sdk, no EDGEFN_SDK.
if (cd "$work/project" && env -u EDGEFN_SDK /usr/bin/edgefn new hello --lang rust); then
  grep -q '^edgefn-sdk = { path = "/usr/share/edgefn/sdk" }$' "$work/project/hello/Cargo.toml" \
    || fail "the new project does not build against /usr/share/edgefn/sdk: $(grep '^edgefn-sdk' "$work/project/hello/Cargo.toml")"
  # Its test bundles the module and runs the bundle through the installed binary's `edgefn invoke`.
  (cd "$work/project/hello" && ./build.sh && EDGEFN=/usr/bin/edgefn ./test.sh) || fail "hello's build.sh or test.sh failed"
  [ -s "$work/project/hello/hello.wasm" ] || fail "build.sh made no hello.wasm"
  [ -s "$work/project/hello/hello-0.1.0.edgefn" ] || fail "test.sh made no hello-0.1.0.edgefn"
else
  fail "/usr/bin/edgefn new hello --lang rust failed"
fi

step "apt-get install --reinstall (the upgrade path of the maintainer scripts)"
echo "# edited by test-apt-install" >> /etc/edgefn/gateway.toml
DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -q --reinstall -o Dpkg::Options::=--force-confold edgefn
grep -q '^# edited by test-apt-install$' /etc/edgefn/gateway.toml || fail "the reinstall did not keep the edited configuration"
[ "$(stat -c '%a %U:%G' /etc/edgefn/gateway.toml)" = "640 root:edgefn" ] || fail "after the reinstall the configuration is not 640 root:edgefn"

step "apt-get remove: the configuration, the state and the user stay"
mkdir -p /var/lib/edgefn/functions # as the service would have made it
DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" remove -y -q edgefn
[ ! -e /usr/bin/edgefn ] || fail "/usr/bin/edgefn is still there after apt-get remove"
[ -f /etc/edgefn/gateway.toml ] || fail "apt-get remove took /etc/edgefn/gateway.toml"
[ -d /var/lib/edgefn ] || fail "apt-get remove took /var/lib/edgefn"
getent passwd edgefn >/dev/null || fail "apt-get remove took the edgefn user"

step "apt-get purge: nothing left"
DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" purge -y -q edgefn
case "$(status)" in
  "" | "unknown ok not-installed") ;;
  *) fail "dpkg still has edgefn: $(status)" ;;
esac
# Every file dpkg listed is gone; a directory may stay only if another package owns
# it too, or the system made it a link (/lib -> usr/lib on a merged /usr).
while read -r path; do
  [ -e "$path" ] || [ -L "$path" ] || continue
  if [ -d "$path" ]; then
    { [ "$path" = /. ] || [ -L "$path" ] || dpkg-query -S "$path" >/dev/null 2>&1; } && continue
  fi
  fail "left behind: $path"
done < "$work/files"
for path in /etc/edgefn /var/lib/edgefn /usr/share/edgefn /usr/share/doc/edgefn; do
  [ ! -e "$path" ] || fail "left behind: $path"
done
getent passwd edgefn >/dev/null && fail "the edgefn user is still there"
getent group edgefn >/dev/null && fail "the edgefn group is still there"
dpkg-statoverride --list /etc/edgefn/gateway.toml >/dev/null && fail "the statoverride of /etc/edgefn/gateway.toml is still there"
rm -f "$list" /var/lib/apt/lists/*"$(basename "$work")"*
# Anything else new on the machine. adduser and deluser keep the previous passwd, group
# and shadow files as /etc/passwd- and so on (the shadow suite's backups, not the package's).
snapshot | grep -Ev '^/etc/(passwd|group|shadow|gshadow)-$' > "$work/after"
grep -Ev '^/etc/(passwd|group|shadow|gshadow)-$' "$work/before" > "$work/before.cmp"
if ! diff "$work/before.cmp" "$work/after" > "$work/diff"; then
  while read -r line; do fail "changed by install and purge: $line"; done < <(grep '^[<>]' "$work/diff")
fi

if [ "$failures" -gt 0 ]; then echo "test-apt-install: $failures failures"; exit 1; fi
echo "test-apt-install: ok: installed from a signed apt repository, built and tested a function against the installed SDK, purged without a trace"
