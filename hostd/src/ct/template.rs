//! OS templates: a read-only rootfs directory under STATE/templates/NAME/rootfs plus meta.json.
//! Containers use the rootfs as their overlay's lower layer, so it is never written after
//! import. Import verifies the tarball's sha256 before unpacking anything.
//!
//! A template imported into a stord pool (dir or nfs) keeps its files in the pool's directory,
//! POOL/templates/NAME/ (the tarball, rootfs/ and meta.json), so hosts sharing the pool share
//! them; STATE/templates/NAME then holds meta.json and `rootfs`, a link to the pool's copy, so
//! listing never needs stord.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use model::ct::{POOL_TEMPLATES_DIR, TemplateInfo, is_ct_name};
use model::storage::PoolInfo;
use sha2::{Digest, Sha256};

use crate::error::{HostError, HostResult};

const META: &str = "meta.json";

pub struct Templates {
    dir: PathBuf,
}

/// A stord pool that holds files, as `Storage1.PoolInfo` names it.
#[derive(Debug, Clone)]
pub struct PoolDir {
    pub name: String,
    /// The pool's directory (a dir pool's path, an nfs pool's mount point).
    pub path: PathBuf,
}

impl PoolDir {
    /// Asks stord for pool `name`: one that holds files (dir, nfs), or a refusal saying why.
    pub async fn of(bus: Option<&zbus::Connection>, name: &str) -> HostResult<PoolDir> {
        if let Some(problem) =
            model::rules::problem("pool", format!("{name:?}"), model::rules::pool_name(name))
        {
            return Err(HostError::InvalidArgs(problem));
        }
        Self::from_info(&crate::stord::pool(bus, name).await?)
    }

    /// The pool stord describes, if it holds files; thin and iscsi pools are refused (105).
    pub fn from_info(info: &PoolInfo) -> HostResult<PoolDir> {
        if let Some(problem) = model::rules::problem(
            "pool",
            format!("{:?}", info.name),
            model::rules::template_pool_kind(info.kind),
        ) {
            return Err(HostError::Conflict(problem));
        }
        Ok(PoolDir {
            name: info.name.clone(),
            path: PathBuf::from(&info.path),
        })
    }

    fn templates(&self) -> PathBuf {
        self.path.join(POOL_TEMPLATES_DIR)
    }
}

impl Templates {
    pub fn new(dir: PathBuf) -> Templates {
        Templates { dir }
    }

    /// The directory containers overlay: a pool's template is its pool's copy itself, never
    /// the link to it (an overlay's lowerdir and the idmapped mount take the real directory).
    pub fn rootfs(&self, name: &str) -> PathBuf {
        let entry = self.dir.join(name).join("rootfs");
        std::fs::read_link(&entry).unwrap_or(entry)
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

    /// Checks an import's arguments on their own, before anything is looked up or made.
    /// `bundled:NAME` (a template the image carries) stands for its tarball, and its digest
    /// for an empty `sha256`.
    pub fn check(name: &str, tarball: &Path, sha256: &str) -> HostResult<String> {
        if !is_ct_name(name) {
            return Err(HostError::InvalidArgs(format!(
                "name {name:?} is not a valid template name; expected lowercase letters, digits \
                 and hyphens"
            )));
        }
        let bundled = Self::bundled(tarball, sha256)?;
        let (tarball, sha256) = match &bundled {
            Some((t, d)) => (t.as_path(), d.as_str()),
            None => (tarball, sha256),
        };
        if sha256.is_empty() {
            return Err(HostError::InvalidArgs(format!(
                "sha256 is required to import {}; only a bundled:NAME path may leave it out",
                tarball.display()
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
        Ok(want)
    }

    /// The image's own tarball and digest when `tarball` reads `bundled:NAME`.
    fn bundled(tarball: &Path, sha256: &str) -> HostResult<Option<(PathBuf, String)>> {
        match tarball.to_str() {
            Some(source) => {
                super::bundled::resolve(Path::new(model::ct::BUNDLED_TEMPLATES_DIR), source, sha256)
            }
            None => Ok(None),
        }
    }

    /// Imports `tarball` (plain or gzip tar of a rootfs) as template `name` into hostd's
    /// state. The digest is checked first; a mismatch or a broken archive leaves nothing
    /// behind.
    pub fn import(&self, name: &str, tarball: &Path, sha256: &str) -> HostResult<TemplateInfo> {
        self.import_into(name, tarball, sha256, None)
    }

    /// As [`Templates::import`], into `pool`'s directory when given: the tarball is copied
    /// there (its copy checked against the digest again, then unpacked), so the pool holds
    /// everything the template is.
    pub fn import_into(
        &self,
        name: &str,
        tarball: &Path,
        sha256: &str,
        pool: Option<&PoolDir>,
    ) -> HostResult<TemplateInfo> {
        let want = Self::check(name, tarball, sha256)?;
        let bundled = Self::bundled(tarball, sha256)?;
        let tarball = bundled.as_ref().map_or(tarball, |(t, _)| t.as_path());
        if self.dir.join(name).exists() {
            return Err(HostError::Conflict(format!(
                "template {name:?} exists already"
            )));
        }
        if let Some(pool) = pool
            && !pool.path.is_dir()
        {
            return Err(HostError::Failed(format!(
                "pool {:?}'s directory {} is not there",
                pool.name,
                pool.path.display()
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
        let info = match pool {
            None => self.unpack_into(&self.dir, name, file, tarball, &got, None)?,
            Some(pool) => self.import_to_pool(name, file, tarball, &got, pool)?,
        };
        tracing::info!(
            template = name,
            sha256 = %info.sha256,
            pool = info.pool.as_deref().unwrap_or("-"),
            "template imported"
        );
        Ok(info)
    }

    /// Copies the tarball into the pool, unpacks that copy beside it, then records the
    /// template in the state with a link to the pool's rootfs. A failed step takes the pool's
    /// copy away again.
    fn import_to_pool(
        &self,
        name: &str,
        file: File,
        tarball: &Path,
        digest: &str,
        pool: &PoolDir,
    ) -> HostResult<TemplateInfo> {
        let pool_templates = pool.templates();
        let copy_dir = pool_templates.join(name);
        if copy_dir.exists() {
            return Err(HostError::Conflict(format!(
                "pool {:?} holds a template {name:?} already ({}); delete it there first",
                pool.name,
                copy_dir.display()
            )));
        }
        let tmp = pool_templates.join(format!(".{name}.importing"));
        let _ = std::fs::remove_dir_all(&tmp);
        let in_pool = |e: io::Error| {
            HostError::Failed(format!(
                "pool {:?} ({}): {e}",
                pool.name,
                pool.path.display()
            ))
        };
        std::fs::create_dir_all(&tmp).map_err(in_pool)?;
        let file_name = tarball
            .file_name()
            .map_or_else(|| "rootfs.tar".into(), |n| n.to_os_string());
        // The pool keeps the tarball itself; what is unpacked is that copy, hashed as it is
        // written, so a tarball changed after its check never gets in.
        let copied = copy_hashed(file, &tmp.join(&file_name)).and_then(|copied_digest| {
            if copied_digest == digest {
                File::open(tmp.join(&file_name))
            } else {
                Err(io::Error::other(format!(
                    "tarball {} changed while it was copied (sha256:{copied_digest})",
                    tarball.display()
                )))
            }
        });
        let copy = match copied {
            Ok(copy) => copy,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                remove_if_empty(&pool_templates);
                return Err(in_pool(e));
            }
        };
        let mut info =
            self.unpack_into(&pool_templates, name, copy, tarball, digest, Some(pool))?;
        let entry_tmp = self.dir.join(format!(".{name}.importing"));
        let _ = std::fs::remove_dir_all(&entry_tmp);
        let recorded = (|| {
            std::fs::create_dir_all(&entry_tmp)?;
            std::os::unix::fs::symlink(copy_dir.join("rootfs"), entry_tmp.join("rootfs"))?;
            let json = serde_json::to_vec_pretty(&info).map_err(io::Error::other)?;
            std::fs::write(entry_tmp.join(META), json)?;
            std::fs::rename(&entry_tmp, self.dir.join(name))
        })();
        if let Err(e) = recorded {
            let _ = std::fs::remove_dir_all(&entry_tmp);
            let _ = std::fs::remove_dir_all(&copy_dir);
            remove_if_empty(&pool_templates);
            return Err(HostError::io(self.dir.display(), e));
        }
        info.pool = Some(pool.name.clone());
        Ok(info)
    }

    /// Unpacks `file` as `dir/name` (rootfs and meta.json) through a temporary directory
    /// beside it: a crash or a broken archive never leaves a half template under its real
    /// name.
    fn unpack_into(
        &self,
        dir: &Path,
        name: &str,
        file: File,
        tarball: &Path,
        digest: &str,
        pool: Option<&PoolDir>,
    ) -> HostResult<TemplateInfo> {
        let tmp = dir.join(format!(".{name}.importing"));
        if pool.is_none() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        let result = unpack(file, &tmp.join("rootfs")).and_then(|()| {
            let info = TemplateInfo {
                name: name.to_string(),
                version: read_version(&tmp.join("rootfs")),
                sha256: format!("sha256:{digest}"),
                size_bytes: du(&tmp.join("rootfs")),
                pool: pool.map(|p| p.name.clone()),
            };
            let json = serde_json::to_vec_pretty(&info).map_err(io::Error::other)?;
            std::fs::write(tmp.join(META), json)?;
            std::fs::rename(&tmp, dir.join(name))?;
            Ok(info)
        });
        result.map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            if pool.is_some() {
                remove_if_empty(dir);
            }
            let place = match pool {
                Some(p) => format!("pool {:?}", p.name),
                None => "the state filesystem".to_string(),
            };
            // A full disk is the host's trouble, not the tarball's: say so.
            if matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ) {
                return HostError::Failed(format!(
                    "no space left on {place} while unpacking {}: {e}",
                    tarball.display()
                ));
            }
            HostError::InvalidArgs(format!(
                "tarball {} cannot be unpacked into {place}: {e}",
                tarball.display()
            ))
        })
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

    /// Deletes a template, and its files in the pool that keeps it; the caller checks that
    /// no container uses it.
    pub fn delete(&self, name: &str) -> HostResult<()> {
        let info = self.get(name)?;
        let dir = self.dir.join(name);
        // The pool's copy is where the entry's rootfs link points: found without stord, so a
        // template goes even when its pool is gone from stord.
        let copy = info
            .pool
            .as_ref()
            .and_then(|_| std::fs::read_link(dir.join("rootfs")).ok())
            .and_then(|rootfs| rootfs.parent().map(Path::to_path_buf));
        // Rename first so that a half-deleted template is never listed.
        let tmp = self.dir.join(format!(".{name}.deleting"));
        std::fs::rename(&dir, &tmp).map_err(|e| HostError::io(dir.display(), e))?;
        if let Some(copy) = copy
            && let Some(pool_templates) = copy.parent()
        {
            let doomed = pool_templates.join(format!(".{name}.deleting"));
            match std::fs::rename(&copy, &doomed) {
                Ok(()) => {
                    std::fs::remove_dir_all(&doomed)
                        .map_err(|e| HostError::io(doomed.display(), e))?;
                    remove_if_empty(pool_templates);
                }
                // An nfs pool not mounted now: its copy is out of reach and stays there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => tracing::warn!(
                    template = name,
                    copy = %copy.display(),
                    "the pool's copy of the template is not there; nothing removed in the pool"
                ),
                Err(e) => {
                    let _ = std::fs::rename(&tmp, &dir);
                    return Err(HostError::io(copy.display(), e));
                }
            }
        }
        std::fs::remove_dir_all(&tmp).map_err(|e| HostError::io(tmp.display(), e))
    }
}

/// Removes a pool's `templates/` once it holds nothing, so the pool's directory is left as
/// stord made it.
fn remove_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// Copies `from` to a new file `to`, flushed to disk; the copy's sha256 (hex).
fn copy_hashed(mut from: File, to: &Path) -> io::Result<String> {
    let mut out = File::options().write(true).create_new(true).open(to)?;
    let digest = hash_through(&mut from, &mut out)?;
    out.sync_all()?;
    Ok(digest)
}

/// Reads `r` to its end, writing what it reads to `out`; the sha256 (hex) of it all.
fn hash_through(r: &mut impl Read, out: &mut impl io::Write) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    hash_through(r, &mut io::sink())
}

/// `sha256:<hex>` of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    Ok(format!("sha256:{}", sha256_reader(&mut f)?))
}

#[cfg(test)]
mod tests {
    use model::storage::PoolKind;

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
    fn a_pool_keeps_the_tarball_and_rootfs_and_loses_them_with_the_template() {
        let base = std::env::temp_dir().join(format!("cairn-tpl-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = base.join("src");
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("hello"), "hi").unwrap();
        let tarball = base.join("t.tar");
        let digest = testkit::template::tar_dir(&src, &tarball).unwrap();
        let pool_path = base.join("pool");
        std::fs::create_dir_all(&pool_path).unwrap();
        let info = |kind| PoolInfo {
            name: "p".into(),
            kind,
            path: pool_path.display().to_string(),
            declared: false,
            capacity_bytes: 0,
            used_bytes: 0,
            free_bytes: 0,
            provisioned_bytes: 0,
            allocated_bytes: 0,
            volumes: 0,
            overcommit_ratio: 0.0,
            overcommit_limit: None,
            warnings: vec![],
        };
        for kind in [PoolKind::Thin, PoolKind::Iscsi] {
            let e = PoolDir::from_info(&info(kind)).unwrap_err();
            assert!(
                matches!(e, HostError::Conflict(ref m) if m.contains("not files")),
                "{e}"
            );
        }
        let pool = PoolDir::from_info(&info(PoolKind::Dir)).unwrap();
        let t = Templates::new(base.join("templates"));
        let zero = format!("sha256:{}", "0".repeat(64));
        assert!(t.import_into("deb", &tarball, &zero, Some(&pool)).is_err());
        assert!(
            !pool_path.join("templates").exists(),
            "a refused import made files"
        );
        let got = t
            .import_into("deb", &tarball, &digest, Some(&pool))
            .unwrap();
        assert_eq!(got.pool.as_deref(), Some("p"));
        let copy = pool_path.join("templates/deb");
        assert_eq!(t.rootfs("deb"), copy.join("rootfs"));
        assert_eq!(
            std::fs::read_to_string(copy.join("rootfs/hello")).unwrap(),
            "hi"
        );
        assert_eq!(sha256_file(&copy.join("t.tar")).unwrap(), digest);
        assert_eq!(t.list(), vec![got]);
        t.delete("deb").unwrap();
        assert!(t.list().is_empty());
        assert!(!pool_path.join("templates").exists());
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
