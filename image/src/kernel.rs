//! The appliance kernel: Debian's signed kernel package, pinned here and only here, fetched with
//! apt into a cache keyed by package and version, and unpacked with dpkg-deb.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The one pin of the appliance kernel: bookworm's point-release kernel from the main archive
/// (`apt-cache madison linux-image-amd64`, the `debian bookworm/main` line). The security archive
/// carries newer builds but drops each superseded one within days — a pin there (6.1.192-2)
/// broke the guest kit when its linux-kbuild went away — while a point release stays on the
/// mirror until the next one. To move it: `apt-get update`, then `apt-cache show
/// linux-image-amd64=<version>` names the `linux-image-<abi>-amd64` package it pulls in.
pub const KERNEL_PACKAGE: &str = "linux-image-6.1.0-50-amd64";
pub const KERNEL_VERSION: &str = "6.1.176-1";

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. "6.1.0-50-amd64" (the directory under lib/modules).
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
        let deb = download(&cache, KERNEL_PACKAGE)?;
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

/// The pinned kernel's headers and kbuild tools (for the guest kit's one out-of-tree module),
/// from the same source package at the same version: `linux-headers-<release>` and what it
/// depends on (`…-common`, `linux-kbuild-…`), unpacked together so the packages' relative
/// symlinks resolve. Returns the directory to pass to `make -C`.
pub fn fetch_headers(kernel: &Kernel) -> Result<PathBuf> {
    let package = format!("linux-headers-{}", kernel.release);
    let cache = cache_root()?
        .join("kernel")
        .join(format!("{package}_{KERNEL_VERSION}"));
    let root = cache.join("root");
    let build_dir = root.join("usr/src").join(&package);
    // As for the kernel: `root` appears by rename only once complete.
    if !root.is_dir() {
        fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        let main = download(&cache, &package)?;
        let depends = String::from_utf8_lossy(&run(Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&main)
            .arg("Depends"))?)
        .into_owned();
        let mut debs = vec![main];
        for dep in header_deps(&depends) {
            debs.push(download(&cache, &dep)?);
        }
        let tmp = cache.join("root.tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        for deb in &debs {
            run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))
                .with_context(|| format!("unpacking {}", deb.display()))?;
        }
        // The flavour's Makefile includes the common one by its installed absolute path
        // (/usr/src/…); point it at the sibling directory of this unpacked tree instead.
        let makefile = tmp.join("usr/src").join(&package).join("Makefile");
        let text = fs::read_to_string(&makefile)
            .with_context(|| format!("reading {}", makefile.display()))?;
        let fixed = text.replace(
            "include /usr/src/",
            "include $(dir $(lastword $(MAKEFILE_LIST)))../",
        );
        if fixed == text {
            bail!(
                "{}: no `include /usr/src/…` line to redirect; the headers package changed",
                makefile.display()
            );
        }
        fs::write(&makefile, fixed).with_context(|| format!("writing {}", makefile.display()))?;
        fs::rename(&tmp, &root).with_context(|| format!("renaming {}", tmp.display()))?;
    }
    if !build_dir.join("Module.symvers").is_file() {
        bail!("{} has no Module.symvers", build_dir.display());
    }
    Ok(build_dir)
}

/// From a headers package's Depends, the packages that hold its files: the common headers and
/// kbuild (not the compiler metapackage: gcc comes from ci/deps).
fn header_deps(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .filter(|name| name.starts_with("linux-headers-") || name.starts_with("linux-kbuild-"))
        .map(str::to_string)
        .collect()
}

/// `apt-get download` of exactly `package` at the pinned version (every package we take is
/// built from the same kernel source package). Returns the .deb path.
fn download(cache: &Path, package: &str) -> Result<PathBuf> {
    // apt-get names the file <pkg>_<version with ':' as %3a>_<arch>.deb.
    let want_prefix = format!("{package}_{}_", KERNEL_VERSION.replace(':', "%3a"));
    if let Some(deb) = find_deb(cache, &want_prefix)? {
        return Ok(deb);
    }
    eprintln!("image: downloading {package}={KERNEL_VERSION} with apt-get");
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(cache).arg("download");
    // As root, apt drops to the _apt user, who cannot write into root's home; downloading as
    // root avoids a warning and a retry.
    if is_root() {
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg(format!("{package}={KERNEL_VERSION}"));
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            bail!(
                "cannot run apt-get ({e}): {package}={KERNEL_VERSION} \
                 comes from Debian's apt mirror"
            );
        }
    };
    if !out.status.success() {
        bail!(
            "apt-get download {package}={KERNEL_VERSION} failed:\n{}\n\
             The pin (KERNEL_PACKAGE/KERNEL_VERSION in image/src/kernel.rs) is not on the mirror. \
             What apt offers now:\n{}\nRun `apt-get update` if the lists are stale, otherwise \
             move the pin (see its comment).",
            String::from_utf8_lossy(&out.stderr).trim(),
            apt_offers()
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_deps_keep_headers_and_kbuild_only() {
        let d = "linux-headers-6.1.0-56-common (= 6.1.192-2), linux-kbuild-6.1 (>= 6.1.192-2), \
                 linux-compiler-gcc-12-x86";
        assert_eq!(
            header_deps(d),
            ["linux-headers-6.1.0-56-common", "linux-kbuild-6.1"]
        );
    }
}
