//! The kernel's LIO target, driven by writing its configfs tree directly (what targetcli's
//! rtslib does, without it): a backstore for the volume, an iSCSI target with one TPG, LUN 0,
//! a portal and an ACL per initiator.
//!
//! Every step is checked and the first failure stops the sequence — on Debian's 6.1 a failed
//! backstore `control` write followed by `attrib/emulate_tpu` oopsed the kernel — and what was
//! made so far is taken down again in reverse order, so a failed export leaves nothing.
//!
//! The root can be any directory (`Configfs::simulated`): unit tests run the same sequence and
//! rollback on a temporary directory, where a made directory carries a marker so that its
//! removal fails, as configfs's does, while it still holds what was made inside it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where the kernel's LIO target shows up once configfs is mounted and target_core_mod loaded.
pub const KERNEL_ROOT: &str = "/sys/kernel/config/target";
/// The HBA number of Cairn's backstores (`core/fileio_3260`, `core/iblock_3260`): other
/// tools (targetcli) number theirs from 0, so a reconcile never takes theirs for ours.
pub const HBA_INDEX: u32 = 3260;
/// The one TPG of each target, LUN 0 in it.
pub const TPG: &str = "tpgt_1";
pub const LUN: &str = "lun_0";
/// In a simulated tree: marks a directory `mkdir` made (configfs refuses to remove those while
/// they hold made directories or links; its own default groups and attributes go with them).
const MADE: &str = ".made";
/// In a simulated tree: marks a default group (configfs makes and removes those itself).
const DEFAULT: &str = ".default";

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct ConfigfsError {
    /// "mkdir", "writing 1 to", …
    pub what: String,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// How LIO reaches the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backstore {
    /// A file: LIO's fileio, UNMAP punches holes in it.
    Fileio { path: PathBuf, size: u64 },
    /// A block device (a dm-thin volume): LIO's iblock, UNMAP becomes a discard.
    Iblock { path: PathBuf },
}

impl Backstore {
    pub fn kind(&self) -> &'static str {
        match self {
            Backstore::Fileio { .. } => "fileio",
            Backstore::Iblock { .. } => "iblock",
        }
    }

    pub fn hba(kind: &str) -> String {
        format!("core/{kind}_{HBA_INDEX}")
    }
}

/// An initiator's ACL: its IQN and CHAP credentials, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub iqn: String,
    pub chap: Option<(String, String)>,
}

/// Everything the kernel is told about one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The storage object's name under the HBA (the export's name).
    pub name: String,
    pub backstore: Backstore,
    /// VPD page 0x80's unit serial: stable across restarts, so multipath and udev keep
    /// naming the disk the same.
    pub serial: String,
    pub iqn: String,
    pub port: u16,
    pub acls: Vec<Acl>,
}

impl Plan {
    fn object(&self) -> String {
        format!("{}/{}", Backstore::hba(self.backstore.kind()), self.name)
    }

    fn tpg(&self) -> String {
        format!("iscsi/{}/{TPG}", self.iqn)
    }
}

/// What `make` did that a rollback undoes.
#[derive(Debug)]
enum Undo {
    Rmdir(PathBuf),
    Unlink(PathBuf),
}

pub struct Configfs {
    root: PathBuf,
    simulated: bool,
    /// Tests: the operation with this number (0 first) fails.
    fail_at: Option<usize>,
}

/// One run of steps against the tree, with what to undo.
struct Steps<'a> {
    fs: &'a Configfs,
    undo: Vec<Undo>,
    count: usize,
    /// What was done, in order, for the tests (secrets masked).
    journal: Vec<String>,
}

impl Configfs {
    /// The kernel's tree.
    pub fn kernel() -> Configfs {
        Configfs {
            root: PathBuf::from(KERNEL_ROOT),
            simulated: false,
            fail_at: None,
        }
    }

    /// A tree in an ordinary directory, for tests.
    pub fn simulated(root: &Path) -> Configfs {
        Configfs {
            root: root.to_path_buf(),
            simulated: true,
            fail_at: None,
        }
    }

    #[cfg(test)]
    pub fn failing_at(mut self, n: usize) -> Configfs {
        self.fail_at = Some(n);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether LIO is there (configfs mounted, target_core_mod loaded).
    pub fn present(&self) -> bool {
        self.root.is_dir()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// An attribute's value, trimmed; None when it is missing.
    pub fn read_attr(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Names in `rel` (none when it is missing), without a simulated tree's markers.
    fn entries(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn rmdir(&self, path: &Path) -> std::io::Result<()> {
        if self.simulated {
            // configfs refuses to remove a default group (EPERM) and a group holding made ones.
            if path.join(DEFAULT).exists() {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            if holds_made(path)? {
                return Err(std::io::Error::from_raw_os_error(libc::ENOTEMPTY));
            }
            return std::fs::remove_dir_all(path);
        }
        std::fs::remove_dir(path)
    }

    fn write_raw(&self, path: &Path, value: &str) -> std::io::Result<()> {
        let mut f = if self.simulated {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(path)?
        } else {
            // configfs attributes exist once their directory does: never create one.
            std::fs::OpenOptions::new().write(true).open(path)?
        };
        // One write(2): configfs hands each write to the attribute's store whole.
        f.write_all(value.as_bytes())
    }

    /// Makes an export in the kernel. On the first failure everything made so far is taken
    /// down again (last made, first removed) and the failure returned. Returns whether thin
    /// provisioning is advertised: always for a file; for a block device when it discards.
    pub fn make(&self, plan: &Plan) -> Result<bool, ConfigfsError> {
        self.make_journaled(plan).0
    }

    /// `make`, with what it did in order (`mkdir P`, `write P=V`, `link P -> Q`, `FAILED …`,
    /// `undo rmdir P`; secrets masked).
    pub fn make_journaled(&self, plan: &Plan) -> (Result<bool, ConfigfsError>, Vec<String>) {
        let mut steps = Steps::new(self);
        let made = steps.make(plan);
        if made.is_err() {
            steps.rollback();
        }
        tracing::debug!(export = %plan.name, steps = ?steps.journal, "configfs");
        (made, steps.journal)
    }

    /// Takes an export down, every part that is there: TPG disabled first, then ACLs, LUNs,
    /// portals, the target, the storage object. Goes on past a failure to remove the rest;
    /// returns the first failure.
    pub fn remove(&self, iqn: Option<&str>, object: Option<&str>) -> Result<(), ConfigfsError> {
        let mut first = None;
        let mut note = |r: Result<(), ConfigfsError>| {
            if let Err(e) = r
                && first.is_none()
            {
                first = Some(e);
            }
        };
        if let Some(target) = iqn.map(|iqn| format!("iscsi/{iqn}"))
            && self.path(&target).is_dir()
        {
            // Only the TPGs: the target's default groups (fabric_statistics) go with it.
            for tpg in self.entries(&target) {
                if !tpg.starts_with("tpgt_") {
                    continue;
                }
                let tpg = format!("{target}/{tpg}");
                if self.read_attr(&format!("{tpg}/enable")).as_deref() == Some("1") {
                    note(self.write_checked(&format!("{tpg}/enable"), "0"));
                }
                for acl in self.entries(&format!("{tpg}/acls")) {
                    let acl = format!("{tpg}/acls/{acl}");
                    for lun in self.entries(&acl) {
                        if lun.starts_with("lun_") {
                            note(self.remove_lun(&format!("{acl}/{lun}")));
                        }
                    }
                    note(self.rmdir_checked(&acl));
                }
                for lun in self.entries(&format!("{tpg}/lun")) {
                    note(self.remove_lun(&format!("{tpg}/lun/{lun}")));
                }
                for portal in self.entries(&format!("{tpg}/np")) {
                    note(self.rmdir_checked(&format!("{tpg}/np/{portal}")));
                }
                note(self.rmdir_checked(&tpg));
            }
            note(self.rmdir_checked(&target));
        }
        if let Some(object) = object
            && self.path(object).is_dir()
        {
            note(self.rmdir_checked(object));
        }
        first.map_or(Ok(()), Err)
    }

    /// A LUN directory (a TPG's or an ACL's mapped one): its links, then itself.
    fn remove_lun(&self, lun: &str) -> Result<(), ConfigfsError> {
        let links = std::fs::read_dir(self.path(lun))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for link in links {
            std::fs::remove_file(&link).map_err(|source| ConfigfsError {
                what: "unlink".into(),
                path: link.clone(),
                source,
            })?;
        }
        self.rmdir_checked(lun)
    }

    fn write_checked(&self, rel: &str, value: &str) -> Result<(), ConfigfsError> {
        let path = self.path(rel);
        self.write_raw(&path, value)
            .map_err(|source| ConfigfsError {
                what: format!("writing {value:?} to"),
                path,
                source,
            })
    }

    fn rmdir_checked(&self, rel: &str) -> Result<(), ConfigfsError> {
        let path = self.path(rel);
        self.rmdir(&path).map_err(|source| ConfigfsError {
            what: "rmdir".into(),
            path,
            source,
        })
    }

    /// Cairn's targets the kernel has (by their IQN prefix) and the storage objects in
    /// Cairn's HBAs (`core/KIND_3260/NAME`).
    pub fn ours(&self, iqn_prefix: &str) -> (Vec<String>, Vec<String>) {
        let targets = self
            .entries("iscsi")
            .into_iter()
            .filter(|t| t.starts_with(iqn_prefix))
            .collect();
        let objects = ["fileio", "iblock"]
            .iter()
            .flat_map(|kind| {
                let hba = Backstore::hba(kind);
                self.entries(&hba)
                    .into_iter()
                    .filter(|n| !matches!(n.as_str(), "hba_info" | "hba_mode"))
                    .map(move |n| format!("{hba}/{n}"))
            })
            .collect();
        (targets, objects)
    }

    /// Whether the kernel serves `plan` whole: the storage object enabled, the TPG enabled
    /// with LUN 0, the portal and every ACL.
    pub fn is_whole(&self, plan: &Plan) -> bool {
        let tpg = plan.tpg();
        self.read_attr(&format!("{}/enable", plan.object()))
            .as_deref()
            == Some("1")
            && self.read_attr(&format!("{tpg}/enable")).as_deref() == Some("1")
            && self.path(&format!("{tpg}/lun/{LUN}")).is_dir()
            && self
                .path(&format!("{tpg}/np/0.0.0.0:{}", plan.port))
                .is_dir()
            && self.entries(&format!("{tpg}/acls"))
                == sorted(plan.acls.iter().map(|a| a.iqn.clone()))
    }

    /// The storage object's path of an export, for `remove`.
    pub fn object_of(&self, name: &str, kind: &str) -> String {
        format!("{}/{name}", Backstore::hba(kind))
    }
}

fn sorted(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = it.collect();
    v.sort();
    v
}

/// Whether a simulated directory holds a directory `mkdir` made or a link, below it.
fn holds_made(dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let t = entry.file_type()?;
        if t.is_symlink() {
            return Ok(true);
        }
        if t.is_dir() && (entry.path().join(MADE).exists() || holds_made(&entry.path())?) {
            return Ok(true);
        }
    }
    Ok(false)
}

impl<'a> Steps<'a> {
    fn new(fs: &'a Configfs) -> Steps<'a> {
        Steps {
            fs,
            undo: Vec::new(),
            count: 0,
            journal: Vec::new(),
        }
    }

    /// Counts an operation; fails it when a test asked for that one to fail.
    fn check(&mut self, what: &str, path: &Path) -> Result<(), ConfigfsError> {
        let n = self.count;
        self.count += 1;
        if self.fs.fail_at == Some(n) {
            self.journal.push(format!("FAILED {what}"));
            return Err(ConfigfsError {
                what: what.to_string(),
                path: path.to_path_buf(),
                source: std::io::Error::other("failure injected by the test"),
            });
        }
        Ok(())
    }

    fn err(what: &str, path: PathBuf, source: std::io::Error) -> ConfigfsError {
        ConfigfsError {
            what: what.to_string(),
            path,
            source,
        }
    }

    fn mkdir(&mut self, rel: &str) -> Result<(), ConfigfsError> {
        let path = self.fs.path(rel);
        let what = format!("mkdir {rel}");
        self.check(&what, &path)?;
        std::fs::create_dir(&path).map_err(|e| Self::err("mkdir", path.clone(), e))?;
        self.undo.push(Undo::Rmdir(path.clone()));
        if self.fs.simulated {
            // Default groups configfs gives a target and a TPG (they go with them).
            let name = rel.rsplit('/').next().unwrap_or_default();
            let groups: &[&str] = if name.starts_with("tpgt_") {
                &["lun", "np", "acls", "attrib"]
            } else if rel.starts_with("iscsi/") && rel.matches('/').count() == 1 {
                &["fabric_statistics"]
            } else {
                &[]
            };
            std::fs::write(path.join(MADE), b"")
                .and_then(|()| {
                    groups.iter().try_for_each(|g| {
                        std::fs::create_dir(path.join(g))
                            .and_then(|()| std::fs::write(path.join(g).join(DEFAULT), b""))
                    })
                })
                .map_err(|e| Self::err("mkdir", path, e))?;
        }
        self.journal.push(what);
        Ok(())
    }

    /// A directory others may share (an HBA, the iSCSI fabric): made when missing, and then
    /// removed on rollback only if it is empty again.
    fn mkdir_shared(&mut self, rel: &str) -> Result<(), ConfigfsError> {
        if self.fs.path(rel).is_dir() {
            return Ok(());
        }
        self.mkdir(rel)
    }

    fn write(&mut self, rel: &str, value: &str) -> Result<(), ConfigfsError> {
        let path = self.fs.path(rel);
        let shown = if rel.ends_with("/password") {
            "(secret)"
        } else {
            value
        };
        let what = format!("write {rel}={shown}");
        self.check(&what, &path)?;
        self.fs
            .write_raw(&path, value)
            .map_err(|e| Self::err(&format!("writing {shown:?} to"), path, e))?;
        self.journal.push(what);
        Ok(())
    }

    fn link(&mut self, rel: &str, to: &str) -> Result<(), ConfigfsError> {
        let path = self.fs.path(rel);
        let what = format!("link {rel} -> {to}");
        self.check(&what, &path)?;
        std::os::unix::fs::symlink(self.fs.path(to), &path)
            .map_err(|e| Self::err(&format!("linking to {to}:"), path.clone(), e))?;
        self.undo.push(Undo::Unlink(path));
        self.journal.push(what);
        Ok(())
    }

    fn make(&mut self, plan: &Plan) -> Result<bool, ConfigfsError> {
        let kind = plan.backstore.kind();
        let object = plan.object();
        self.mkdir_shared(&Backstore::hba(kind))?;
        self.mkdir(&object)?;
        let control = match &plan.backstore {
            // Buffered (write-back, advertised as a volatile write cache): initiators flush
            // with SYNCHRONIZE CACHE, as they do on any disk; O_DSYNC on every write would
            // cost a sync per write on the pool's filesystem.
            Backstore::Fileio { path, size } => format!(
                "fd_dev_name={},fd_dev_size={size},fd_buffered_io=1",
                path.display()
            ),
            Backstore::Iblock { path } => format!("udev_path={}", path.display()),
        };
        self.write(&format!("{object}/control"), &control)?;
        self.write(&format!("{object}/enable"), "1")?;
        self.write(&format!("{object}/wwn/vpd_unit_serial"), &plan.serial)?;
        let thin = match &plan.backstore {
            Backstore::Fileio { .. } => {
                self.write(&format!("{object}/attrib/emulate_tpu"), "1")?;
                true
            }
            // A device that does not discard refuses UNMAP emulation (ENOSYS): it is exported
            // as a plain disk. Harmless here: the device is configured (enable succeeded).
            Backstore::Iblock { .. } => {
                match self.write(&format!("{object}/attrib/emulate_tpu"), "1") {
                    Ok(()) => true,
                    Err(e) if e.source.raw_os_error() == Some(libc::ENOSYS) => {
                        tracing::info!(export = %plan.name, "the device does not discard: no thin provisioning advertised");
                        false
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if thin {
            self.write(&format!("{object}/attrib/emulate_tpws"), "1")?;
            if let Backstore::Fileio { .. } = plan.backstore {
                // A punched hole reads as zeros (LBPRZ): initiators need not zero it first.
                self.write(&format!("{object}/attrib/unmap_zeroes_data"), "1")?;
            }
        }
        self.mkdir_shared("iscsi")?;
        self.mkdir(&format!("iscsi/{}", plan.iqn))?;
        let tpg = plan.tpg();
        self.mkdir(&tpg)?;
        self.mkdir(&format!("{tpg}/lun/{LUN}"))?;
        self.link(&format!("{tpg}/lun/{LUN}/{}", plan.name), &object)?;
        self.mkdir(&format!("{tpg}/np/0.0.0.0:{}", plan.port))?;
        self.write(&format!("{tpg}/attrib/generate_node_acls"), "0")?;
        let chap = plan.acls.iter().any(|a| a.chap.is_some());
        self.write(
            &format!("{tpg}/attrib/authentication"),
            if chap { "1" } else { "0" },
        )?;
        for acl in &plan.acls {
            let dir = format!("{tpg}/acls/{}", acl.iqn);
            self.mkdir(&dir)?;
            if let Some((user, secret)) = &acl.chap {
                self.write(&format!("{dir}/auth/userid"), user)?;
                self.write(&format!("{dir}/auth/password"), secret)?;
            }
            self.mkdir(&format!("{dir}/{LUN}"))?;
            self.link(&format!("{dir}/{LUN}/{LUN}"), &format!("{tpg}/lun/{LUN}"))?;
        }
        // Last: initiators get in only once the target is whole.
        self.write(&format!("{tpg}/enable"), "1")?;
        Ok(thin)
    }

    /// Undoes what was made, last first. A step that fails to undo is logged; the rest go on.
    fn rollback(&mut self) {
        while let Some(step) = self.undo.pop() {
            let (what, path, done) = match &step {
                Undo::Rmdir(p) => ("rmdir", p, self.fs.rmdir(p)),
                Undo::Unlink(p) => ("unlink", p, std::fs::remove_file(p)),
            };
            let rel = path
                .strip_prefix(&self.fs.root)
                .unwrap_or(path)
                .display()
                .to_string();
            match done {
                Ok(()) => self.journal.push(format!("undo {what} {rel}")),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot undo {what}");
                    self.journal.push(format!("undo {what} {rel} FAILED"));
                }
            }
        }
    }
}
