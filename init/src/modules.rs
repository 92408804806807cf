//! Loading the kernel modules the image lists, in the order the image builder resolved.

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

/// One module path per line, relative to /lib/modules/<release>/, dependencies first.
pub const LIST_PATH: &str = "/etc/cairn/modules";
/// Lists like [`LIST_PATH`] of modules loaded only when needed, one file per group (named after
/// the filesystem type they mount: `vfat`, `iso9660`).
pub const GROUPS_DIR: &str = "/etc/cairn/modules.d";

/// Loads a group of [`GROUPS_DIR`] (a second load of a module is a no-op); the modules that
/// failed, each with why.
pub fn load_group(name: &str) -> Vec<String> {
    load_listed(&Path::new(GROUPS_DIR).join(name))
}

/// Whether the image has module group `name`.
pub fn has_group(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && Path::new(GROUPS_DIR).join(name).is_file()
}

/// Loads every listed module. A module that fails is logged and skipped: the daemons report
/// the missing feature where it is used, which says more than a boot that stops here.
/// Returns the failures ("MODULE: why").
pub fn load_listed(list: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(list) else {
        tracing::info!(list = %list.display(), "no module list; loading none");
        return Vec::new();
    };
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = Path::new("/lib/modules").join(release);
    let (mut loaded, mut failed) = (0, Vec::new());
    let started = std::time::Instant::now();
    for rel in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let path = base.join(rel);
        // Loaded already (by an earlier group): reading and decompressing it again to hear
        // EEXIST costs ~0.2 s a module under TCG.
        if is_loaded(rel) {
            continue;
        }
        match load_one(&path) {
            Ok(()) => loaded += 1,
            // A driver for hardware this machine does not have (a watchdog of another
            // chipset): expected where lists name several.
            Err(LoadError::Kernel(Errno::ENODEV)) => {
                tracing::info!(module = %path.display(), "no such hardware here; module not loaded");
            }
            Err(e) => {
                tracing::warn!(module = %path.display(), error = %e, "module not loaded");
                failed.push(format!("{rel}: {e}"));
            }
        }
    }
    tracing::info!(
        loaded,
        failed = failed.len(),
        ms = started.elapsed().as_millis() as u64,
        "kernel modules"
    );
    failed
}

/// Whether the module at `rel` (`kernel/drivers/md/dm-mod.ko.xz`) is in the kernel: its name
/// (the file's, `-` read as `_`) is under /sys/module.
fn is_loaded(rel: &str) -> bool {
    module_name(rel).is_some_and(|n| Path::new("/sys/module").join(n).join("initstate").exists())
}

fn module_name(rel: &str) -> Option<String> {
    let file = Path::new(rel).file_name()?.to_str()?;
    let stem = file.split(".ko").next()?;
    Some(stem.replace('-', "_"))
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("{0}")]
    Open(std::io::Error),
    #[error("{}", .0.desc())]
    Kernel(Errno),
}

fn load_one(path: &Path) -> Result<(), LoadError> {
    let file = File::open(path).map_err(LoadError::Open)?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(LoadError::Kernel(e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn module_names_are_read_from_their_files() {
        assert_eq!(
            super::module_name("kernel/drivers/md/dm-thin-pool.ko.xz").as_deref(),
            Some("dm_thin_pool")
        );
        assert_eq!(
            super::module_name("kernel/fs/nfs/nfsv4.ko").as_deref(),
            Some("nfsv4")
        );
    }
}
