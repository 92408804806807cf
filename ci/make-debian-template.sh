#!/usr/bin/env bash
# Builds a Debian container template: a minbase rootfs made by debootstrap from Debian's
# packages, tarred (gzip) for `template.import` / Host1.ImportTemplate, with its sha256.
#   ci/make-debian-template.sh [OUT.tar.gz] [SUITE] [MIRROR]
# Defaults: /tmp/cairn-debian-SUITE.tar.gz, bookworm, and the Debian mirror this machine's apt
# already uses (the first deb URI in /etc/apt/sources.list{,.d/*}).
# Needs root (debootstrap chroots) and network access to the mirror; installs debootstrap
# with apt-get when it is missing. Prints "sha256:<hex>  OUT" last.
set -euo pipefail
suite="${2:-bookworm}"
out="${1:-/tmp/cairn-debian-$suite.tar.gz}"
apt_mirror() {
  # deb822 (.sources: "URIs: X") first, then one-line "deb X suite ..." entries.
  # grep's status is 2 for a sources file that does not exist: only the URIs matter here.
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true
  } | awk '$1 == "URIs:" {print $2} $1 == "deb" {print $2}' | { grep -v -- '-security' || true; } |
    head -n1
}
mirror="${3:-$(apt_mirror)}"
if [ -z "$mirror" ]; then
  echo "make-debian-template: no Debian mirror in apt's sources; pass one as the 3rd argument" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get install -y debootstrap >/dev/null
fi
root="$(mktemp -d /tmp/cairn-debootstrap.XXXXXX)"
trap 'rm -rf "$root"' EXIT
# minbase: essential + apt only; init (systemd-sysv) added so the container boots its own init;
# iproute2 and iputils-ping so exec and network checks work in it.
debootstrap --variant=minbase --include=systemd-sysv,iproute2,iputils-ping,procps \
  "$suite" "$root" "$mirror"
# A container's hostname, addresses and /dev come from Cairn at start: leave none baked in.
rm -f "$root/etc/hostname" "$root/etc/machine-id"
: > "$root/etc/machine-id"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
# /dev nodes from debootstrap are not needed (Cairn mounts a minimal /dev) and cannot be made
# in a user namespace anyway.
find "$root/dev" -mindepth 1 -delete
tar --numeric-owner --xattrs -C "$root" -czf "$out" .
echo "sha256:$(sha256sum "$out" | cut -d' ' -f1)  $out"
