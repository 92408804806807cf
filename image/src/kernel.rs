//! The appliance kernel: Debian's signed kernel package, pinned here and only here, fetched with
//! apt into a cache keyed by package and version, and unpacked with dpkg-deb.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The one pin of the appliance kernel. To move it: `apt-get update`, then
/// `apt-cache policy linux-image-amd64` shows the current metapackage version, and
/// `apt-cache depends linux-image-amd64` the `linux-image-<abi>-amd64` package it pulls in.
pub const KERNEL_PACKAGE: &str = "linux-image-6.1.0-56-amd64";
pub const KERNEL_VERSION: &str = "6.1.192-2";

/// Debian's kernel cannot be fetched: the pin is gone from the mirror or apt is missing. A
/// distinct error so `main` can exit with the "skipped" status the CI treats as environmental.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KernelUnavailable(pub String);

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. "6.1.0-56-amd64" (the directory under lib/modules).
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `<root>/lib/modules/<release>`.
    pub modules_dir: PathBuf,
    /// The cache directory of this package version (also holds the depmod tree).
    pub cache: PathBuf,
}

/// `$XDG_CACHE_HOME/cairn` or `~/.cache/cairn`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("cairn"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/cairn"))
}

/// Returns the pinned kernel, downloading and unpacking it on first use.
pub fn fetch() -> Result<Kernel> {
    let cache = cache_root()?
        .join("kernel")
        .join(format!("{KERNEL_PACKAGE}_{KERNEL_VERSION}"));
    let root = cache.join("root");
    // `root` only appears by an atomic rename after a complete unpack, so its presence means
    // the tree is whole; a crash mid-way leaves `root.tmp`, which is redone.
    if !root.is_dir() {
        fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        let deb = download(&cache)?;
        let tmp = cache.join("root.tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))
            .with_context(|| format!("unpacking {}", deb.display()))?;
        fs::rename(&tmp, &root).with_context(|| format!("renaming {}", tmp.display()))?;
    }
    locate(&root, cache)
}

fn locate(root: &Path, cache: PathBuf) -> Result<Kernel> {
    let mods = root.join("lib/modules");
    let mut releases = Vec::new();
    for e in fs::read_dir(&mods).with_context(|| format!("reading {}", mods.display()))? {
        let e = e.with_context(|| format!("reading {}", mods.display()))?;
        releases.push(e.file_name().to_string_lossy().into_owned());
    }
    let [release] = releases.as_slice() else {
        bail!(
            "{} should hold exactly one kernel release, found {releases:?}",
            mods.display()
        );
    };
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{KERNEL_PACKAGE} has no {}", vmlinuz.display());
    }
    Ok(Kernel {
        release: release.clone(),
        vmlinuz,
        modules_dir: mods.join(release),
        cache,
    })
}

/// `apt-get download` of exactly the pin. Returns the .deb path.
fn download(cache: &Path) -> Result<PathBuf> {
    // apt-get names the file <pkg>_<version with ':' as %3a>_<arch>.deb.
    let want_prefix = format!("{KERNEL_PACKAGE}_{}_", KERNEL_VERSION.replace(':', "%3a"));
    if let Some(deb) = find_deb(cache, &want_prefix)? {
        return Ok(deb);
    }
    eprintln!("image: downloading {KERNEL_PACKAGE}={KERNEL_VERSION} with apt-get");
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(cache).arg("download");
    // As root, apt drops to the _apt user, who cannot write into root's home; downloading as
    // root avoids a warning and a retry.
    if is_root() {
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg(format!("{KERNEL_PACKAGE}={KERNEL_VERSION}"));
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            return Err(KernelUnavailable(format!(
                "cannot run apt-get ({e}): the appliance kernel {KERNEL_PACKAGE}={KERNEL_VERSION} \
                 comes from Debian's apt mirror"
            ))
            .into());
        }
    };
    if !out.status.success() {
        return Err(KernelUnavailable(format!(
            "apt-get download {KERNEL_PACKAGE}={KERNEL_VERSION} failed:\n{}\n\
             The pin (KERNEL_PACKAGE/KERNEL_VERSION in image/src/kernel.rs) is not on the mirror. \
             What apt offers now:\n{}\nRun `apt-get update` if the lists are stale, otherwise \
             move the pin to what linux-image-amd64 points to.",
            String::from_utf8_lossy(&out.stderr).trim(),
            apt_offers()
        ))
        .into());
    }
    find_deb(cache, &want_prefix)?.with_context(|| {
        format!(
            "apt-get download succeeded but no {want_prefix}*.deb appeared in {}",
            cache.display()
        )
    })
}

fn find_deb(dir: &Path, prefix: &str) -> Result<Option<PathBuf>> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".deb") {
            return Ok(Some(e.path()));
        }
    }
    Ok(None)
}

/// A few lines for the error message: versions of the pinned package and of the metapackage.
fn apt_offers() -> String {
    let mut s = String::new();
    for args in [
        vec!["madison", KERNEL_PACKAGE],
        vec!["policy", "linux-image-amd64"],
        vec!["depends", "linux-image-amd64"],
    ] {
        match Command::new("apt-cache").args(&args).output() {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                let text = text.trim();
                s.push_str(&format!(
                    "  apt-cache {}: {}\n",
                    args.join(" "),
                    if text.is_empty() { "(nothing)" } else { text }
                ));
            }
            Err(e) => s.push_str(&format!("  apt-cache {}: {e}\n", args.join(" "))),
        }
    }
    s
}

fn is_root() -> bool {
    // /proc/self/status "Uid:" real effective ...; avoids a libc dependency for one getuid().
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {prog} (is it installed? see ci/deps)"))?;
    if !out.status.success() {
        bail!(
            "{prog} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}
