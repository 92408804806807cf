//! The appliance kernel: Debian's signed kernel package, chosen when the image is built from
//! what the apt mirror has (or what the cache already holds), fetched with apt into a cache
//! keyed by package and version, and unpacked with dpkg-deb.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The metapackage whose dependency names the current kernel package.
const META: &str = "linux-image-amd64";
/// Overrides the choice: `CAIRN_KERNEL=linux-image-6.1.0-50-amd64=6.1.176-1`.
const OVERRIDE_ENV: &str = "CAIRN_KERNEL";

/// A kernel package at one version, e.g. linux-image-6.1.0-50-amd64 6.1.176-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub package: String,
    pub version: String,
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.package, self.version)
    }
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub pin: Pin,
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

/// Chooses the kernel: `CAIRN_KERNEL` when set; else the one the cache already holds whole
/// (the newest unpacked), so a machine keeps building with the kernel it has; else what the
/// mirror offers for linux-image-amd64, preferring the point release of the main archive —
/// it stays on the mirror until the next point release, while the security archive drops
/// each superseded build within days (a pin there once broke the guest kit when its
/// linux-kbuild went away). No version is written into the source, so none can rot.
pub fn resolve() -> Result<Pin> {
    if let Ok(text) = std::env::var(OVERRIDE_ENV) {
        return parse_pin(&text)
            .with_context(|| format!("{OVERRIDE_ENV}={text:?}: want PACKAGE=VERSION"));
    }
    if let Some(pin) = newest_cached()? {
        return Ok(pin);
    }
    let madison = run(Command::new("apt-cache").args(["madison", META]))
        .with_context(|| format!("asking apt which {META} the mirror has (run apt-get update?)"))?;
    let madison = String::from_utf8_lossy(&madison).into_owned();
    let version = pick_version(&madison).with_context(|| {
        format!(
            "apt has no {META}: run `apt-get update`\n{}",
            apt_offers(None)
        )
    })?;
    let show = run(Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .arg(format!("{META}={version}")))
    .with_context(|| format!("apt-cache show {META}={version}"))?;
    let package = kernel_dependency(&String::from_utf8_lossy(&show))
        .with_context(|| format!("{META}={version} depends on no linux-image-*-amd64"))?;
    Ok(Pin { package, version })
}

fn parse_pin(text: &str) -> Option<Pin> {
    let (package, version) = text.trim().split_once('=')?;
    (package.starts_with("linux-image-") && !version.is_empty()).then(|| Pin {
        package: package.to_string(),
        version: version.to_string(),
    })
}

/// `apt-cache madison` lines are `pkg | version | source`: the first version from outside the
/// security archive, else the first.
fn pick_version(madison: &str) -> Option<String> {
    let rows: Vec<(String, String)> = madison
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('|').map(str::trim);
            let (_, version, source) = (cols.next()?, cols.next()?, cols.next()?);
            Some((version.to_string(), source.to_string()))
        })
        .filter(|(v, _)| !v.is_empty())
        .collect();
    rows.iter()
        .find(|(_, source)| !source.contains("-security"))
        .or(rows.first())
        .map(|(v, _)| v.clone())
}

/// The `linux-image-…-amd64` package a metapackage's stanza depends on.
fn kernel_dependency(stanza: &str) -> Option<String> {
    let depends = stanza.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .find(|name| name.starts_with("linux-image-") && name.ends_with("-amd64"))
        .map(str::to_string)
}

/// The newest wholly unpacked kernel in the cache (`kernel/<package>_<version>/root`).
fn newest_cached() -> Result<Option<Pin>> {
    let dir = cache_root()?.join("kernel");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut found: Vec<(std::time::SystemTime, Pin)> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((package, version)) = name.split_once('_') else {
            continue;
        };
        if !package.starts_with("linux-image-") {
            continue;
        }
        if let Ok(modified) = fs::metadata(e.path().join("root")).and_then(|m| m.modified()) {
            found.push((
                modified,
                Pin {
                    package: package.to_string(),
                    version: version.to_string(),
                },
            ));
        }
    }
    Ok(found.into_iter().max_by_key(|(t, _)| *t).map(|(_, p)| p))
}

/// Returns the chosen kernel, downloading and unpacking it on first use.
pub fn fetch() -> Result<Kernel> {
    let pin = resolve()?;
    fetch_pin(&pin).with_context(|| format!("getting the kernel {pin}"))
}

fn fetch_pin(pin: &Pin) -> Result<Kernel> {
    let cache = cache_root()?
        .join("kernel")
        .join(format!("{}_{}", pin.package, pin.version));
    let root = cache.join("root");
    // `root` only appears by an atomic rename after a complete unpack, so its presence means
    // the tree is whole; a crash mid-way leaves `root.tmp`, which is redone.
    if !root.is_dir() {
        fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        let deb = download(&cache, &pin.package, &pin.version)?;
        let tmp = cache.join("root.tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))
            .with_context(|| format!("unpacking {}", deb.display()))?;
        fs::rename(&tmp, &root).with_context(|| format!("renaming {}", tmp.display()))?;
    }
    locate(pin, &root, cache)
}

fn locate(pin: &Pin, root: &Path, cache: PathBuf) -> Result<Kernel> {
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
        bail!("{} has no {}", pin.package, vmlinuz.display());
    }
    Ok(Kernel {
        pin: pin.clone(),
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
        .join(format!("{package}_{}", kernel.pin.version));
    let root = cache.join("root");
    let build_dir = root.join("usr/src").join(&package);
    // As for the kernel: `root` appears by rename only once complete.
    if !root.is_dir() {
        fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        let main = download(&cache, &package, &kernel.pin.version)?;
        let depends = String::from_utf8_lossy(&run(Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&main)
            .arg("Depends"))?)
        .into_owned();
        let mut debs = vec![main];
        for dep in header_deps(&depends) {
            debs.push(download(&cache, &dep, &kernel.pin.version)?);
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

/// `apt-get download` of exactly `package` at `version` (every package we take is built from
/// the same kernel source package at one version). Returns the .deb path.
fn download(cache: &Path, package: &str, version: &str) -> Result<PathBuf> {
    // apt-get names the file <pkg>_<version with ':' as %3a>_<arch>.deb.
    let want_prefix = format!("{package}_{}_", version.replace(':', "%3a"));
    if let Some(deb) = find_deb(cache, &want_prefix)? {
        return Ok(deb);
    }
    eprintln!("image: downloading {package}={version} with apt-get");
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(cache).arg("download");
    // As root, apt drops to the _apt user, who cannot write into root's home; downloading as
    // root avoids a warning and a retry.
    if is_root() {
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg(format!("{package}={version}"));
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            bail!("cannot run apt-get ({e}): {package}={version} comes from Debian's apt mirror");
        }
    };
    if !out.status.success() {
        bail!(
            "apt-get download {package}={version} failed:\n{}\nWhat apt offers now:\n{}\n\
             Run `apt-get update` if the lists are stale; a kernel chosen from the cache whose \
             companion packages left the mirror is replaced by removing its cache directory \
             ({}), or chosen by hand with {OVERRIDE_ENV}=PACKAGE=VERSION.",
            String::from_utf8_lossy(&out.stderr).trim(),
            apt_offers(Some(package)),
            cache.display()
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

/// A few lines for an error message: versions of `package` and of the metapackage.
fn apt_offers(package: Option<&str>) -> String {
    let mut s = String::new();
    let mut asks = vec![vec!["policy", META], vec!["depends", META]];
    if let Some(p) = package {
        asks.insert(0, vec!["madison", p]);
    }
    for args in asks {
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

#[cfg(test)]
mod choice_tests {
    use super::*;

    #[test]
    fn the_main_archive_point_release_is_preferred() {
        let madison = "linux-image-amd64 | 6.1.192-3 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-amd64 | 6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
";
        assert_eq!(pick_version(madison).as_deref(), Some("6.1.176-1"));
        let only_security = madison.lines().next().unwrap();
        assert_eq!(pick_version(only_security).as_deref(), Some("6.1.192-3"));
        assert_eq!(pick_version(""), None);
    }

    #[test]
    fn the_metapackage_names_the_kernel_package() {
        let stanza = "Package: linux-image-amd64
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-amd64 (= 6.1.176-1)
Description-en: Linux for 64-bit PCs (meta-package)
";
        assert_eq!(
            kernel_dependency(stanza).as_deref(),
            Some("linux-image-6.1.0-50-amd64")
        );
        assert_eq!(
            parse_pin("linux-image-6.1.0-50-amd64=6.1.176-1"),
            Some(Pin {
                package: "linux-image-6.1.0-50-amd64".into(),
                version: "6.1.176-1".into()
            })
        );
        assert_eq!(parse_pin("6.1.176-1"), None);
    }
}
