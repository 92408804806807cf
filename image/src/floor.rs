//! The floor of the boot benchmark: the appliance's kernel with an initramfs of static busybox
//! whose /init only prints the ready line, packed into the same media. Booted the same way in
//! the same run, it shows what firmware, boot loader, kernel and decompression cost on each
//! path, so the appliance's own share (init, daemons, API) is the difference.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::appliance::compress;
use crate::kernel;
use crate::media;
use crate::qemu::READY_LINE;
use crate::rootfs::Tree;

/// busybox-static's binary (ci/deps).
const BUSYBOX: &str = "/bin/busybox";

/// Writes vmlinuz, initrd.img, the ISO and the PXE directory of the floor into `out`.
pub fn build(out: &Path) -> Result<()> {
    let kernel = kernel::fetch()?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tree = Tree::default();
    for d in ["/bin", "/dev", "/proc", "/sys"] {
        tree.dir(d);
    }
    tree.char_dev("/dev/console", 0o600, 5, 1);
    tree.host_file("/bin/busybox", 0o755, PathBuf::from(BUSYBOX));
    tree.symlink("/bin/sh", "busybox");
    tree.bytes(
        "/init",
        0o755,
        format!("#!/bin/sh\necho '{READY_LINE}'\nexec /bin/busybox sleep 1000000\n"),
    );
    let cpio = out.join("initrd.cpio");
    tree.write_cpio(&cpio)
        .context("writing the floor's initramfs")?;
    compress(&cpio, &out.join("initrd.img"))?;
    fs::remove_file(&cpio).with_context(|| format!("removing {}", cpio.display()))?;
    fs::copy(&kernel.vmlinuz, out.join("vmlinuz"))
        .with_context(|| format!("copying {}", kernel.vmlinuz.display()))?;
    media::iso(out).context("making the floor's ISO")?;
    media::pxe(out).context("making the floor's PXE directory")?;
    println!(
        "image: boot floor in {} (kernel {})",
        out.display(),
        kernel.pin
    );
    Ok(())
}
