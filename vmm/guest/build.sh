#!/bin/sh
# Builds cairn-test-guest (guest.rs + linker.ld) into OUT_PATH: a static, freestanding x86_64
# ELF loaded at 1 MiB. Uses only rustc and the system linker driver (cc); no cargo, no crates.
#
# SSE is switched off (-sse,-sse2): on this machine's PVM KVM every ring-0 instruction goes
# through KVM's instruction emulator, which has no SSE arithmetic (a `pxor` ends the VM with
# KVM_EXIT_INTERNAL_ERROR). rustc warns that the x86_64 float ABI wants sse2 (the guest has no
# floating point, so nothing is affected), so the code is first checked with the default
# features and -D warnings, and that one known warning is silenced in the real build.
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_PATH" >&2
    exit 2
fi
dir=$(cd "$(dirname "$0")" && pwd)
out=$1
common="--edition 2021 --crate-type bin --crate-name cairn_test_guest --target x86_64-unknown-linux-gnu -C panic=abort"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086
rustc $common -D warnings --emit=metadata -o "$tmp/check.rmeta" "$dir/guest.rs"
# shellcheck disable=SC2086
rustc $common -A warnings \
    -C opt-level=2 -C debuginfo=0 -C strip=debuginfo \
    -C target-feature=-sse,-sse2 \
    -C relocation-model=static -C code-model=small -C no-redzone=yes \
    -C force-unwind-tables=no \
    -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static -C link-arg=-no-pie \
    -C link-arg=-Wl,-T,"$dir/linker.ld" -C link-arg=-Wl,--build-id=none \
    -o "$out" "$dir/guest.rs"
