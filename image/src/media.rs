//! Boot media from one build: a hybrid ISO (BIOS and UEFI, from CD or written to a USB stick)
//! and a PXE directory (kernel, initramfs, an iPXE script, a pxelinux config and pxelinux
//! itself), all booting the same kernel and initramfs with the same command line.
//!
//! The ISO is grub-mkrescue's: one El Torito image with GRUB for BIOS (i386-pc) and an EFI
//! system partition image (x86_64-efi), made hybrid by xorriso's MBR/GPT so `dd` to a stick
//! boots too. GRUB is Debian's, so the tools come from apt (ci/deps), not from us.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The kernel command line of every live medium: the console on VGA and on the first serial
/// port, which comes last so /dev/console (init's own output) is the serial one; reboot on
/// panic; and keep the initramfs in memory, which `host.install` copies to the disk (see
/// init/src/install/payload.rs). The installed disk boots the same line without the last.
pub const CMDLINE: &str = "console=tty0 console=ttyS0,115200n8 panic=-1 quiet retain_initrd";

/// The PXE directory's name in the output directory, and its iPXE script.
pub const PXE_DIR: &str = "pxe";
pub const IPXE_SCRIPT: &str = "boot.ipxe";

/// pxelinux and the one module it needs, from Debian's pxelinux and syslinux-common.
const PXELINUX: &[(&str, &str)] = &[
    ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux.0"),
    ("/usr/lib/syslinux/modules/bios/ldlinux.c32", "ldlinux.c32"),
];

/// `cairn-<version>.iso`.
pub fn iso_name() -> String {
    format!("cairn-{}.iso", model::VERSION)
}

/// Writes `out/cairn-<version>.iso` from `out/vmlinuz` and `out/initrd.img`.
pub fn iso(out: &Path) -> Result<PathBuf> {
    let tree = out.join(".iso");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    let boot = tree.join("boot");
    fs::create_dir_all(boot.join("grub"))
        .with_context(|| format!("creating {}", boot.display()))?;
    for f in ["vmlinuz", "initrd.img"] {
        link_or_copy(&out.join(f), &boot.join(f))?;
    }
    fs::write(boot.join("grub/grub.cfg"), grub_cfg())
        .with_context(|| format!("writing {}", boot.join("grub/grub.cfg").display()))?;
    let iso = out.join(iso_name());
    let tmp = out.join(format!("{}.tmp", iso_name()));
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&tmp)
        .arg(&tree)
        .output()
        .context(
            "running grub-mkrescue (grub-pc-bin, grub-efi-amd64-bin, xorriso, mtools: see ci/deps)",
        )?;
    if !output.status.success() {
        bail!(
            "grub-mkrescue failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::rename(&tmp, &iso).with_context(|| format!("renaming {}", tmp.display()))?;
    fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    Ok(iso)
}

/// GRUB on the serial port and the screen, one entry, booted after a second.
fn grub_cfg() -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=1\n\
         menuentry \"Cairn {version}\" {{\n  \
           linux /boot/vmlinuz {CMDLINE}\n  \
           initrd /boot/initrd.img\n\
         }}\n",
        version = model::VERSION
    )
}

/// Fills `out/pxe/`: vmlinuz, initrd.img, boot.ipxe for iPXE (QEMU's own ROMs, or chained),
/// and pxelinux.0 with pxelinux.cfg/default for plain PXE ROMs. Returns the directory.
pub fn pxe(out: &Path) -> Result<PathBuf> {
    let dir = ipxe_dir(out, &out.join(PXE_DIR), CMDLINE)?;
    fs::create_dir_all(dir.join("pxelinux.cfg"))
        .with_context(|| format!("creating {}", dir.display()))?;
    fs::write(
        dir.join("pxelinux.cfg/default"),
        format!(
            "DEFAULT cairn\nSERIAL 0 115200\nLABEL cairn\n  KERNEL vmlinuz\n  \
             INITRD initrd.img\n  APPEND {CMDLINE}\n"
        ),
    )
    .with_context(|| format!("writing {}/pxelinux.cfg/default", dir.display()))?;
    for (src, name) in PXELINUX {
        fs::copy(src, dir.join(name))
            .with_context(|| format!("copying {src} (pxelinux, syslinux-common: see ci/deps)"))?;
    }
    Ok(dir)
}

/// A copy of the PXE directory `pxe` in `to` whose iPXE script boots the kernel with
/// `append` added (per-run parameters such as `cairn.config=`); returns `to`.
pub fn pxe_with(pxe: &Path, to: &Path, append: &str) -> Result<PathBuf> {
    ipxe_dir(pxe, to, &format!("{CMDLINE} {append}"))
}

/// `to`, made afresh: the kernel and initramfs of `from` and an iPXE script booting them with
/// `cmdline`.
fn ipxe_dir(from: &Path, to: &Path, cmdline: &str) -> Result<PathBuf> {
    if to.exists() {
        fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for f in ["vmlinuz", "initrd.img"] {
        link_or_copy(&from.join(f), &to.join(f))?;
    }
    fs::write(
        to.join(IPXE_SCRIPT),
        format!("#!ipxe\nkernel vmlinuz {cmdline}\ninitrd initrd.img\nboot\n"),
    )
    .with_context(|| format!("writing {}", to.join(IPXE_SCRIPT).display()))?;
    Ok(to.to_path_buf())
}

/// A hard link when the filesystem allows (the initramfs is tens of MiB), else a copy.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Bytes in every file under `path` (or of `path` itself).
pub fn size(path: &Path) -> Result<u64> {
    let meta = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let entry = entry.with_context(|| format!("listing {}", path.display()))?;
        total += size(&entry.path())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_medium_boots_one_command_line() {
        let cfg = grub_cfg();
        assert!(
            cfg.contains(&format!("linux /boot/vmlinuz {CMDLINE}\n")),
            "{cfg}"
        );
        assert!(cfg.contains("initrd /boot/initrd.img\n"), "{cfg}");
        // The serial console last: it becomes /dev/console.
        let consoles: Vec<&str> = CMDLINE
            .split(' ')
            .filter(|w| w.starts_with("console="))
            .collect();
        assert_eq!(consoles.last(), Some(&"console=ttyS0,115200n8"));
        assert!(iso_name().starts_with("cairn-") && iso_name().ends_with(".iso"));
    }
}
