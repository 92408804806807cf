//! The guest kit: a real Linux guest for the nested-VM tests, made from the appliance's own
//! pinned Debian kernel package — the uncompressed vmlinux, a small busybox initramfs with the
//! virtio-mmio/blk/net and ext4 modules and an /init that reports on the console (guest/init.sh),
//! and a small ext4 disk — plus the VMM's own freestanding test guest (vmm/guest), all packed
//! into one ext4 image (`kit.img`) that `image run --guest-kit` attaches to the appliance as a
//! read-only virtio disk with serial [`KIT_SERIAL`].
//!
//! Debian builds virtio_mmio without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so the kernel ignores
//! `virtio_mmio.device=` entries and the module has no `device` parameter. The kit then carries
//! cairn_mmio (guest/cairn_mmio.c), built here against the same package's headers, which takes
//! the same `device=<size>@<base>:<irq>` parameters and registers the platform devices
//! virtio_mmio binds to.
//!
//! Cached in `~/.cache/cairn/guest-kit/<kernel package>_<version>-<recipe digest>/`; the
//! directory appears by rename only once everything is built, so a failed or missing step is
//! never cached.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
// The guest kit's static busybox is the host's, as the busybox template's is.
use testkit::template::BUSYBOX;

use crate::kernel::{self, Kernel, run};
use crate::modules;
use crate::rootfs::Tree;

/// The modules the guest loads (their dependencies and soft dependencies come along).
pub const GUEST_MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net", "ext4"];
/// The kit drive's virtio serial: how the appliance finds it among its disks.
pub const KIT_SERIAL: &str = "cairn-kit";
pub const KIT_IMAGE: &str = "kit.img";
/// What /hello.txt on the guest's disk holds (the test expects "disk says <this>").
pub const DISK_HELLO: &str = "hello from the virtio disk";
/// The VMM's test guest (vmm/guest/guest.rs): it boots in milliseconds where Linux takes
/// tens of seconds nested, so the appliance tests can start a VM many times in a row.
pub const TEST_GUEST: &str = "test-guest";

const INIT: &str = include_str!("guest/init.sh");
const MMIO_HELPER_C: &str = include_str!("guest/cairn_mmio.c");
const MMIO_HELPER: &str = "cairn_mmio";
const DISK_MIB: u64 = 16;

pub struct Kit {
    /// Holds vmlinux, initrd.img, disk.img, test-guest, MANIFEST (their sha256), KIT (what
    /// they were made from) and kit.img (all of them in one ext4 image).
    pub dir: PathBuf,
    /// The ext4 image of the other files, for the appliance's extra drive.
    pub image: PathBuf,
}

/// Returns the kit for the pinned kernel, building it on first use.
pub fn fetch(kernel: &Kernel) -> Result<Kit> {
    let digest = recipe_digest(kernel, Path::new(BUSYBOX))?;
    let dir = kernel::cache_root()?.join("guest-kit").join(format!(
        "{}_{}-{}",
        kernel.pin.package,
        kernel.pin.version,
        &digest[..16]
    ));
    if !dir.join(KIT_IMAGE).is_file() {
        let started = Instant::now();
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        build(kernel, &tmp)
            .with_context(|| format!("building the guest kit in {}", tmp.display()))?;
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::rename(&tmp, &dir).with_context(|| format!("renaming {}", tmp.display()))?;
        prune_other_kits(kernel, &dir);
        eprintln!(
            "image: guest kit built in {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    Ok(Kit {
        image: dir.join(KIT_IMAGE),
        dir,
    })
}

/// Removes the kits of other recipes for the same kernel (~180 MB each); best effort. A VM
/// still using one keeps its open files.
fn prune_other_kits(kernel: &Kernel, keep: &Path) {
    let (Some(parent), Some(name)) = (keep.parent(), keep.file_name()) else {
        return;
    };
    let prefix = format!("{}_{}-", kernel.pin.package, kernel.pin.version);
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let s = n.to_string_lossy();
        if n != name && s.starts_with(&prefix) && !s.ends_with(".tmp") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Everything the kit is made of, so a changed recipe makes a new kit: this file, the module
/// resolution, the guest's /init and helper module, the test guest's sources, and the busybox
/// binary.
fn recipe_digest(kernel: &Kernel, busybox: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for part in [
        "cairn guest kit 1",
        kernel.pin.package.as_str(),
        kernel.pin.version.as_str(),
        include_str!("guestkit.rs"),
        include_str!("modules.rs"),
        INIT,
        MMIO_HELPER_C,
        DISK_HELLO,
        include_str!("../../vmm/guest/guest.rs"),
        include_str!("../../vmm/guest/linker.ld"),
        include_str!("../../vmm/guest/build.sh"),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let bb = fs::read(busybox)
        .with_context(|| format!("reading {} (package busybox-static)", busybox.display()))?;
    h.update(&bb);
    Ok(model::hex(&h.finalize()))
}

fn build(kernel: &Kernel, out: &Path) -> Result<()> {
    let staging = out.join("staging");
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;

    let vmlinux = out.join("vmlinux");
    extract_vmlinux(&kernel.vmlinuz, &vmlinux, &staging).context("extracting vmlinux")?;

    // The guest's initramfs.
    let mut tree = Tree::default();
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/mnt",
        "/tmp",
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
    ] {
        tree.dir(d);
    }
    tree.char_dev("/dev/console", 0o600, 5, 1);
    tree.bytes("/init", 0o755, INIT);
    tree.host_file("/bin/busybox", 0o755, PathBuf::from(BUSYBOX));
    let mods = modules::collect_set(kernel, &staging, GUEST_MODULES)
        .context("collecting the guest's kernel modules")?;
    let mod_root = format!("/lib/modules/{}", kernel.release);
    let mut list = Vec::new();
    for m in &mods {
        tree.host_file(&format!("{mod_root}/{}", m.rel_path), 0o644, m.file.clone());
        list.push(m.rel_path.clone());
    }
    let mmio_module = if kernel_config(kernel)?
        .lines()
        .any(|l| l.trim() == "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y")
    {
        "virtio_mmio".to_string()
    } else {
        let ko = build_mmio_helper(kernel, &staging).context("building the cairn_mmio module")?;
        let rel = format!("extra/{MMIO_HELPER}.ko");
        tree.host_file(&format!("{mod_root}/{rel}"), 0o644, ko);
        // After virtio_mmio: its driver then binds each device as it is registered.
        let at = list
            .iter()
            .position(|p| modules::module_name(p) == "virtio_mmio")
            .map_or(list.len(), |i| i + 1);
        list.insert(at, rel);
        MMIO_HELPER.to_string()
    };
    tree.bytes("/etc/cairn-guest/modules", 0o644, list.join("\n") + "\n");
    tree.bytes(
        "/etc/cairn-guest/mmio-module",
        0o644,
        format!("{mmio_module}\n"),
    );
    let initrd = out.join("initrd.img");
    tree.write_cpio(&initrd)
        .context("writing the guest initramfs")?;

    // The guest's disk.
    let disk_root = staging.join("disk");
    fs::create_dir_all(&disk_root).with_context(|| format!("creating {}", disk_root.display()))?;
    fs::write(disk_root.join("hello.txt"), format!("{DISK_HELLO}\n"))
        .context("writing hello.txt")?;
    let disk = out.join("disk.img");
    mkfs_ext4(&disk_root, &disk, DISK_MIB, "cairn-disk", &[]).context("making disk.img")?;

    // Built as the VMM's and hostd's tests build it, so the appliance runs the same guest.
    let test_guest = testkit::guest::build_test_guest(&staging)
        .map_err(anyhow::Error::msg)
        .context("building the VMM's test guest (rustc and cc, see vmm/guest/README.md)")?;
    fs::copy(&test_guest, out.join(TEST_GUEST))
        .with_context(|| format!("copying {}", test_guest.display()))?;

    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;

    // Everything above into one image for the appliance's extra drive. Hard links: the files
    // stay in the cache directory for use on the host too.
    let names = ["vmlinux", "initrd.img", "disk.img", TEST_GUEST];
    crate::appliance::write_manifest(out, &names)?;
    fs::write(
        out.join("KIT"),
        format!(
            "kernel={}\nrelease={}\nmmio_module={mmio_module}\n",
            kernel.pin, kernel.release
        ),
    )
    .context("writing KIT")?;
    let kit_root = out.join("kit-root");
    fs::create_dir_all(&kit_root).with_context(|| format!("creating {}", kit_root.display()))?;
    let mut total = 0;
    for f in names.iter().chain(&["MANIFEST", "KIT"]) {
        fs::hard_link(out.join(f), kit_root.join(f))
            .with_context(|| format!("linking {f} into {}", kit_root.display()))?;
        total += fs::metadata(out.join(f))
            .with_context(|| format!("stat {f}"))?
            .len();
    }
    // Room for ext4's metadata (no journal: the drive is read-only).
    let mib = total.div_ceil(1 << 20) * 11 / 10 + 8;
    mkfs_ext4(
        &kit_root,
        &out.join(KIT_IMAGE),
        mib,
        KIT_SERIAL,
        &["-O", "^has_journal"],
    )
    .context("making kit.img")?;
    fs::remove_dir_all(&kit_root).with_context(|| format!("removing {}", kit_root.display()))?;
    Ok(())
}

fn kernel_config(kernel: &Kernel) -> Result<String> {
    let path = kernel
        .vmlinuz
        .with_file_name(format!("config-{}", kernel.release));
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Builds guest/cairn_mmio.c against the pinned kernel's headers (gcc-12, as Debian built the
/// kernel). Returns the .ko.
fn build_mmio_helper(kernel: &Kernel, staging: &Path) -> Result<PathBuf> {
    let headers = kernel::fetch_headers(kernel)?;
    let src = staging.join("cairn_mmio");
    fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    fs::write(src.join(format!("{MMIO_HELPER}.c")), MMIO_HELPER_C).context("writing the source")?;
    fs::write(src.join("Kbuild"), format!("obj-m := {MMIO_HELPER}.o\n"))
        .context("writing Kbuild")?;
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&headers)
        .arg(format!("M={}", src.display()))
        .arg("modules"))
    .context("make (packages make and gcc-12, see ci/deps)")?;
    let ko = src.join(format!("{MMIO_HELPER}.ko"));
    if !ko.is_file() {
        bail!("make succeeded but {} is missing", ko.display());
    }
    Ok(ko)
}

/// `mke2fs -t ext4 -d root` into a new `mib` MiB image file.
fn mkfs_ext4(root: &Path, image: &Path, mib: u64, label: &str, extra: &[&str]) -> Result<()> {
    if image.exists() {
        fs::remove_file(image).with_context(|| format!("removing {}", image.display()))?;
    }
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", label])
        .args(["-E", "root_owner=0:0"])
        .args(extra)
        .arg("-d")
        .arg(root)
        .arg(image)
        .arg(format!("{mib}M")))
    .context("mke2fs (package e2fsprogs, see ci/deps)")?;
    Ok(())
}

/// How a bzImage's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Xz,
    Gzip,
    Zstd,
}

/// Where the compressed kernel sits in a bzImage (boot protocol ≥ 2.08: `payload_offset` and
/// `payload_length` at 0x248/0x24c, relative to the protected-mode code after the setup
/// sectors), and how it is compressed.
pub fn payload(img: &[u8]) -> Result<(std::ops::Range<usize>, Codec)> {
    if img.len() < 0x250 || &img[0x202..0x206] != b"HdrS" {
        bail!("not a bzImage (no HdrS setup header)");
    }
    let version = u16::from_le_bytes([img[0x206], img[0x207]]);
    if version < 0x208 {
        bail!("boot protocol {version:#x} has no payload fields (want 2.08 or later)");
    }
    let setup_sects = match img[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let u32_at = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
    let start = (setup_sects + 1) * 512 + u32_at(0x248) as usize;
    let end = start + u32_at(0x24c) as usize;
    if end > img.len() || end <= start {
        bail!(
            "payload {start}..{end} lies outside the {}-byte image",
            img.len()
        );
    }
    let head = &img[start..];
    let codec = if head.starts_with(b"\xfd7zXZ\0") {
        Codec::Xz
    } else if head.starts_with(b"\x1f\x8b") {
        Codec::Gzip
    } else if head.starts_with(b"\x28\xb5\x2f\xfd") {
        Codec::Zstd
    } else {
        bail!(
            "payload starts with {:02x?}: not xz, gzip or zstd",
            &head[..head.len().min(6)]
        );
    };
    Ok((start..end, codec))
}

/// An x86-64 ELF executable's first bytes.
pub fn is_x86_64_elf(head: &[u8]) -> bool {
    head.len() >= 20
        && head.starts_with(b"\x7fELF")
        && head[4] == 2 // 64-bit
        && head[5] == 1 // little-endian
        && u16::from_le_bytes([head[18], head[19]]) == 0x3e
}

/// The uncompressed ELF vmlinux from a bzImage (what extract-vmlinux does).
pub fn extract_vmlinux(bzimage: &Path, out: &Path, staging: &Path) -> Result<()> {
    let img = fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let (range, codec) = payload(&img).with_context(|| bzimage.display().to_string())?;
    let compressed = staging.join("payload");
    fs::write(&compressed, &img[range])
        .with_context(|| format!("writing {}", compressed.display()))?;
    // The kernel appends the uncompressed size after the stream: tell each tool to stop at the
    // end of the first stream (gzip cannot, and warns with exit status 2).
    let (tool, args): (&str, &[&str]) = match codec {
        Codec::Xz => ("xz", &["-dc", "--single-stream"]),
        Codec::Gzip => ("gzip", &["-dc"]),
        Codec::Zstd => ("zstd", &["-dcq"]),
    };
    let dst = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let child = Command::new(tool)
        .args(args)
        .arg(&compressed)
        .stdout(dst)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {tool} (see ci/deps)"))?;
    let res = child
        .wait_with_output()
        .with_context(|| format!("waiting for {tool}"))?;
    let warned_only = codec == Codec::Gzip && res.status.code() == Some(2);
    if !res.status.success() && !warned_only {
        bail!(
            "{tool} failed ({}): {}",
            res.status,
            String::from_utf8_lossy(&res.stderr).trim()
        );
    }
    fs::remove_file(&compressed).with_context(|| format!("removing {}", compressed.display()))?;
    let mut head = [0u8; 20];
    fs::File::open(out)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("reading {}", out.display()))?;
    if !is_x86_64_elf(&head) {
        bail!(
            "{} decompressed from {} is not an x86-64 ELF file",
            out.display(),
            bzimage.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(setup_sects: u8, version: u16, payload: &[u8]) -> Vec<u8> {
        let pm = (usize::from(setup_sects.max(1)) + 1) * 512;
        let off = 100usize;
        let mut img = vec![0u8; pm + off + payload.len() + 4];
        img[0x1f1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&(off as u32).to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        img[pm + off..pm + off + payload.len()].copy_from_slice(payload);
        img
    }

    #[test]
    fn payload_is_found_from_the_setup_header() {
        let img = bzimage(39, 0x20f, b"\xfd7zXZ\0rest");
        let (r, c) = payload(&img).unwrap();
        assert_eq!(c, Codec::Xz);
        assert_eq!(r.start, 40 * 512 + 100);
        assert_eq!(&img[r.start..r.start + 4], b"\xfd7zX");
        assert_eq!(r.len(), 14);
        let (_, c) = payload(&bzimage(4, 0x20f, b"\x1f\x8b\x08\0")).unwrap();
        assert_eq!(c, Codec::Gzip);
        let (_, c) = payload(&bzimage(4, 0x20f, b"\x28\xb5\x2f\xfd")).unwrap();
        assert_eq!(c, Codec::Zstd);
    }

    #[test]
    fn bad_images_are_refused() {
        assert!(payload(b"short").is_err());
        assert!(payload(&bzimage(4, 0x206, b"\xfd7zXZ\0")).is_err());
        assert!(payload(&bzimage(4, 0x20f, b"BZh91AY&SY")).is_err());
        let mut img = bzimage(4, 0x20f, b"\xfd7zXZ\0");
        img[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(payload(&img).is_err());
    }

    #[test]
    fn elf_check() {
        let mut h = [0u8; 20];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[18] = 0x3e;
        assert!(is_x86_64_elf(&h));
        h[18] = 0xb7; // aarch64
        assert!(!is_x86_64_elf(&h));
        assert!(!is_x86_64_elf(b"MZ"));
    }

    #[test]
    fn init_reports_what_the_tests_look_for() {
        for line in [
            "init reached (boot",
            "disk says",
            "ping ok",
            "ping failed",
            "done (boot",
            "staying up",
        ] {
            assert!(INIT.contains(line), "guest/init.sh lacks {line}");
        }
        assert!(INIT.contains("reboot -f"));
    }
}
