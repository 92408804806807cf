//! OS templates: a read-only rootfs directory under STATE/templates/NAME/rootfs plus meta.json.
//! Containers use the rootfs as their overlay's lower layer, so it is never written after
//! import. Import verifies the tarball's sha256 before unpacking anything.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use model::ct::{TemplateInfo, is_ct_name};
use sha2::{Digest, Sha256};

use crate::error::{HostError, HostResult};

const META: &str = "meta.json";

pub struct Templates {
    dir: PathBuf,
}

impl Templates {
    pub fn new(dir: PathBuf) -> Templates {
        Templates { dir }
    }

    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("rootfs")
    }

    pub fn get(&self, name: &str) -> HostResult<TemplateInfo> {
        // A name is a path component: never let "../x" reach the filesystem.
        if !is_ct_name(name) {
            return Err(HostError::InvalidArgs(format!(
                "template {name:?} is not a valid name; expected lowercase letters, digits and \
                 hyphens, starting with a letter or digit"
            )));
        }
        let meta = self.dir.join(name).join(META);
        let text = std::fs::read_to_string(&meta)
            .map_err(|_| HostError::NotFound(format!("template {name:?} does not exist")))?;
        serde_json::from_str(&text).map_err(|e| HostError::io(meta.display(), e))
    }

    pub fn list(&self) -> Vec<TemplateInfo> {
        let mut out: Vec<TemplateInfo> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| self.get(&n).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Imports `tarball` (plain or gzip tar of a rootfs) as template `name`. The digest is
    /// checked first; a mismatch or a broken archive leaves nothing behind.
    pub fn import(&self, name: &str, tarball: &Path, sha256: &str) -> HostResult<TemplateInfo> {
        if !is_ct_name(name) {
            return Err(HostError::InvalidArgs(format!(
                "name {name:?} is not a valid template name; expected lowercase letters, digits \
                 and hyphens"
            )));
        }
        let want = sha256
            .strip_prefix("sha256:")
            .unwrap_or(sha256)
            .to_ascii_lowercase();
        if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HostError::InvalidArgs(format!(
                "sha256 {sha256:?} is not a digest; expected \"sha256:\" and 64 hex digits"
            )));
        }
        if !tarball.is_absolute() {
            return Err(HostError::InvalidArgs(format!(
                "path {:?} must be an absolute path on the host",
                tarball.display()
            )));
        }
        if self.dir.join(name).exists() {
            return Err(HostError::Conflict(format!(
                "template {name:?} exists already"
            )));
        }
        let mut file = File::open(tarball)
            .map_err(|e| HostError::InvalidArgs(format!("tarball {}: {e}", tarball.display())))?;
        let got = sha256_reader(&mut file)
            .map_err(|e| HostError::InvalidArgs(format!("tarball {}: {e}", tarball.display())))?;
        if got != want {
            return Err(HostError::InvalidArgs(format!(
                "sha256 of tarball {} is sha256:{got}, not the expected sha256:{want}",
                tarball.display()
            )));
        }
        file.rewind()
            .map_err(|e| HostError::io(tarball.display(), e))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| HostError::io(self.dir.display(), e))?;
        // One import of a name at a time: the others are refused at once (105) instead of
        // unpacking into the same temporary directory. The lock is a flock, so a hostd that dies
        // mid-import leaves no lock behind.
        let _lock = self.lock(name)?;
        if self.dir.join(name).exists() {
            return Err(HostError::Conflict(format!(
                "template {name:?} exists already"
            )));
        }
        // Unpack beside the final place and rename: a crash or a broken archive never leaves a
        // half template under its real name.
        let tmp = self.dir.join(format!(".{name}.importing"));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = unpack(file, &tmp.join("rootfs")).and_then(|()| {
            let info = TemplateInfo {
                name: name.to_string(),
                version: read_version(&tmp.join("rootfs")),
                sha256: format!("sha256:{got}"),
                size_bytes: du(&tmp.join("rootfs")),
            };
            let json = serde_json::to_vec_pretty(&info).map_err(io::Error::other)?;
            std::fs::write(tmp.join(META), json)?;
            std::fs::rename(&tmp, self.dir.join(name))?;
            Ok(info)
        });
        match result {
            Ok(info) => {
                tracing::info!(template = name, sha256 = %info.sha256, "template imported");
                Ok(info)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                // A full disk is the host's trouble, not the tarball's: say so.
                if matches!(
                    e.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) {
                    return Err(HostError::Failed(format!(
                        "no space left on the state filesystem while unpacking {}: {e}",
                        tarball.display()
                    )));
                }
                Err(HostError::InvalidArgs(format!(
                    "tarball {} cannot be unpacked: {e}",
                    tarball.display()
                )))
            }
        }
    }

    /// The import lock of template `name`; another holder makes it a conflict.
    fn lock(&self, name: &str) -> HostResult<nix::fcntl::Flock<File>> {
        let path = self.dir.join(format!(".{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HostError::io(path.display(), e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
            |(_, errno)| match errno {
                nix::errno::Errno::EWOULDBLOCK => HostError::Conflict(format!(
                    "template {name:?} is being imported by another request"
                )),
                e => HostError::io(path.display(), io::Error::from(e)),
            },
        )
    }

    /// Deletes a template; the caller checks that no container uses it.
    pub fn delete(&self, name: &str) -> HostResult<()> {
        self.get(name)?;
        let dir = self.dir.join(name);
        // Rename first so that a half-deleted template is never listed.
        let tmp = self.dir.join(format!(".{name}.deleting"));
        std::fs::rename(&dir, &tmp).map_err(|e| HostError::io(dir.display(), e))?;
        std::fs::remove_dir_all(&tmp).map_err(|e| HostError::io(tmp.display(), e))
    }
}

fn unpack(file: File, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 2];
    let n = reader.read(&mut magic)?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(reader);
    let input: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else {
        Box::new(head)
    };
    let mut archive = tar::Archive::new(input);
    // A rootfs needs its owners and modes as they are (setuid bits, root-owned /etc).
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    // tar's unpack refuses entries that escape `dest` (.. and absolute paths).
    archive.unpack(dest)
}

/// `VERSION_ID` from the rootfs's os-release, if it has one. The file is usually a symlink
/// (`/etc/os-release` → `../usr/lib/os-release`), and a template's absolute links must be read
/// inside the rootfs, never on the host.
fn read_version(rootfs: &Path) -> Option<String> {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| {
            resolve_in(rootfs, Path::new(p)).and_then(|f| std::fs::read_to_string(f).ok())
        })?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim_matches('"').to_string())
}

/// `path` inside `root` as a chroot would see it: every symlink on the way is followed within
/// `root` (an absolute target starts again at `root`, `..` stops at it). `None` for a loop or
/// a path that does not exist.
fn resolve_in(root: &Path, path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            at.pop();
            continue;
        }
        let here: PathBuf = std::iter::once(root.as_os_str())
            .chain(at.iter().map(|p| p.as_os_str()))
            .chain(std::iter::once(part.as_os_str()))
            .collect();
        let meta = std::fs::symlink_metadata(&here).ok()?;
        if !meta.file_type().is_symlink() {
            at.push(part);
            continue;
        }
        hops += 1;
        if hops > 40 {
            return None;
        }
        let target = std::fs::read_link(&here).ok()?;
        if target.is_absolute() {
            at.clear();
        }
        pending.extend(target.components().rev().filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        }));
    }
    Some(
        std::iter::once(root.as_os_str())
            .chain(at.iter().map(|p| p.as_os_str()))
            .collect(),
    )
}

/// Bytes of regular-file data under `dir` (symlinks not followed).
pub fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

fn sha256_reader(r: &mut impl Read) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// `sha256:<hex>` of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    Ok(format!("sha256:{}", sha256_reader(&mut f)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_checks_the_digest_first_and_leaves_nothing_on_mismatch() {
        let base = std::env::temp_dir().join(format!("cairn-tpl-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = base.join("src");
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/os-release"), "VERSION_ID=\"12\"\n").unwrap();
        std::fs::write(src.join("hello"), "hi").unwrap();
        let tarball = base.join("t.tar");
        let digest = testkit::template::tar_dir(&src, &tarball).unwrap();
        let t = Templates::new(base.join("templates"));
        let zero = format!("sha256:{}", "0".repeat(64));
        let e = t.import("deb", &tarball, &zero).unwrap_err();
        assert!(
            matches!(e, HostError::InvalidArgs(ref m) if m.contains("sha256")),
            "{e}"
        );
        assert!(t.list().is_empty());
        assert_eq!(
            std::fs::read_dir(base.join("templates"))
                .map(|d| d.count())
                .unwrap_or(0),
            0
        );
        let info = t.import("deb", &tarball, &digest).unwrap();
        assert_eq!(info.version.as_deref(), Some("12"));
        assert_eq!(info.sha256, digest);
        assert_eq!(
            std::fs::read_to_string(t.rootfs("deb").join("hello")).unwrap(),
            "hi"
        );
        assert!(matches!(
            t.import("deb", &tarball, &digest),
            Err(HostError::Conflict(_))
        ));
        // A name is a path component: "../x" is refused as invalid and reaches no file.
        assert!(matches!(
            t.delete("../templates/deb"),
            Err(HostError::InvalidArgs(_))
        ));
        t.delete("deb").unwrap();
        assert!(t.list().is_empty());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn os_release_links_are_read_inside_the_rootfs() {
        let base = std::env::temp_dir().join(format!("cairn-tpl-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/os-release"), "VERSION_ID=\"7\"\n").unwrap();
        // The host's own /etc/os-release must never be what a template reports.
        std::os::unix::fs::symlink("/etc/os-release", root.join("etc/os-release")).unwrap();
        // etc/os-release → /etc/os-release read inside the rootfs is itself: a loop, so the
        // usr/lib file is read, never the host's.
        assert_eq!(read_version(&root).as_deref(), Some("7"));
        std::fs::remove_file(root.join("etc/os-release")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../usr/lib/os-release",
            root.join("etc/os-release"),
        )
        .unwrap();
        assert_eq!(read_version(&root).as_deref(), Some("7"));
        std::fs::remove_file(root.join("etc/os-release")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/os-release", root.join("etc/os-release")).unwrap();
        assert_eq!(read_version(&root).as_deref(), Some("7"));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn one_import_of_a_name_at_a_time() {
        let base = std::env::temp_dir().join(format!("cairn-tpl-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let t = Templates::new(base.join("templates"));
        std::fs::create_dir_all(base.join("templates")).unwrap();
        let held = t.lock("deb").unwrap();
        assert!(matches!(t.lock("deb"), Err(HostError::Conflict(_))));
        assert!(t.lock("other").is_ok());
        drop(held);
        assert!(t.lock("deb").is_ok());
        let _ = std::fs::remove_dir_all(&base);
    }
}
