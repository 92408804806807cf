#!/bin/sh
# Buildroot's post-image step: the same artifacts `cargo run -p image -- build` writes from
# Debian's kernel (image/src/media.rs, image/src/bundle.rs) — a hybrid ISO for BIOS and UEFI, a
# PXE directory and an update bundle — from Buildroot's bzImage and rootfs.cpio.zst.
set -eu
images="$1"
version="${CAIRN_VERSION:-0.1.0}"
cmdline="console=tty0 console=ttyS0,115200n8 panic=-1 quiet"
cd "$images"
cp bzImage vmlinuz
cp rootfs.cpio.zst initrd.img

# ISO: GRUB for both firmwares, the live system keeping its initramfs for host.install.
rm -rf iso && mkdir -p iso/boot/grub
cp vmlinuz initrd.img iso/boot/
cat > iso/boot/grub/grub.cfg <<CFG
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
menuentry "Cairn $version" {
  linux /boot/vmlinuz $cmdline retain_initrd
  initrd /boot/initrd.img
}
CFG
"$HOST_DIR/bin/grub-mkrescue" -o "cairn-$version.iso" iso

# PXE: an iPXE script beside the kernel and initramfs.
rm -rf pxe && mkdir pxe
cp vmlinuz initrd.img pxe/
printf '#!ipxe\nkernel vmlinuz %s retain_initrd\ninitrd initrd.img\nboot\n' "$cmdline" > pxe/boot.ipxe

# The update bundle (model::update): MANIFEST first, then the OS slot's files.
rm -rf update && mkdir update
cp vmlinuz initrd.img update/
{
  echo "cairn-update 1"
  echo "version $version"
  for f in vmlinuz initrd.img; do
    echo "part $f $(stat -c %s update/$f) $(sha256sum update/$f | cut -d' ' -f1)"
  done
} > update/MANIFEST
tar --format=ustar -C update -cf "cairn-$version.update" MANIFEST vmlinuz initrd.img
