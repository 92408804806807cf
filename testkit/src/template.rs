//! The busybox container template: a tiny rootfs made from the host's static busybox, and the
//! tar (with its digest) that `template.import` takes. hostd's container tests import it, and
//! the image builder puts it into debug images for the appliance tests — one recipe for both.

use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes `dir` as a plain tar to `out` (symlinks kept as links); returns its `sha256:<hex>`,
/// the digest `template.import` checks before it unpacks anything.
pub fn tar_dir(dir: &Path, out: &Path) -> io::Result<String> {
    let file = std::fs::File::create(out)?;
    let mut b = tar::Builder::new(file);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir)?;
    b.into_inner()?.sync_all()?;
    // A template tar is a few MiB: read whole rather than streamed.
    let digest = Sha256::digest(std::fs::read(out)?);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// Makes a tiny busybox rootfs in `dir`: /bin/busybox (copied from the host's static busybox),
/// a symlink per applet, `/sbin/init` → busybox with a minimal inittab (no getty: a container
/// has no terminal; init just reaps), /etc/passwd, /etc/group and the empty mount points.
pub fn busybox_rootfs(dir: &Path) -> io::Result<()> {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
        "var/log", "run",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list-full")
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other("busybox --list-full failed"));
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = dir.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink("/bin/busybox", &link)?;
        }
    }
    if dir.join("sbin/init").symlink_metadata().is_err() {
        std::os::unix::fs::symlink("/bin/busybox", dir.join("sbin/init"))?;
    }
    std::fs::write(
        dir.join("etc/inittab"),
        "::sysinit:/bin/mount -t tmpfs -o mode=1777 tmpfs /tmp\n\
         ::sysinit:/bin/echo cairn: container init up\n\
         ::shutdown:/bin/echo cairn: container shutting down\n",
    )?;
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    std::fs::write(dir.join("etc/os-release"), "ID=busybox\nVERSION_ID=1\n")?;
    std::fs::set_permissions(
        dir.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
}
