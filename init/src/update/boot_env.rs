//! The installed disk as the updater sees it: which disk the running state partition is on,
//! its partitions' device nodes, and GRUB's environment block on the ESP, which says which
//! slot boots and what an update is trying.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use model::install::{GRUBENV_PATH, grubenv};
use nix::mount::{MsFlags, mount, umount};

use super::UpdateError;

/// The installed disk: its name (`vda`) and its partitions' nodes by number.
#[derive(Debug, Clone)]
pub struct Disk {
    pub name: String,
    partitions: BTreeMap<u32, PathBuf>,
}

impl Disk {
    /// The disk holding the filesystem mounted at `state` (the state partition).
    pub fn of_state(state: &Path) -> Result<Disk, UpdateError> {
        let not = |why: String| UpdateError::NotInstalled(why);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| not(format!("reading mountinfo: {e}")))?;
        let target = state.to_string_lossy();
        let dev = mountinfo
            .lines()
            .rev()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.get(4) == Some(&target.as_ref()))
            .and_then(|f| f.get(2).map(|s| s.to_string()))
            .ok_or_else(|| not(format!("nothing is mounted on {target}")))?;
        let sys = std::fs::canonicalize(format!("/sys/dev/block/{dev}"))
            .map_err(|e| not(format!("{dev}: {e}")))?;
        if !sys.join("partition").exists() {
            return Err(not(format!("{} is not a partition", sys.display())));
        }
        let disk_dir = sys.parent().ok_or_else(|| not("no parent disk".into()))?;
        let name = disk_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| not("no parent disk".into()))?;
        let mut partitions = BTreeMap::new();
        for e in std::fs::read_dir(disk_dir)
            .map_err(|e| not(e.to_string()))?
            .flatten()
        {
            if let Ok(n) = std::fs::read_to_string(e.path().join("partition"))
                && let Ok(n) = n.trim().parse::<u32>()
            {
                partitions.insert(n, Path::new("/dev").join(e.file_name()));
            }
        }
        Ok(Disk { name, partitions })
    }

    pub fn partition(&self, n: u32) -> Result<&Path, UpdateError> {
        self.partitions
            .get(&n)
            .map(PathBuf::as_path)
            .ok_or_else(|| UpdateError::NotInstalled(format!("{} has no partition {n}", self.name)))
    }
}

/// GRUB's environment on the ESP (partition 2), mounted only while it is read or written.
/// Written in place, never truncated: GRUB's save_env writes into the file's own sectors.
pub struct BootEnv {
    esp: PathBuf,
    at: PathBuf,
}

impl BootEnv {
    pub fn new(disk: &Disk, at: &Path) -> Result<BootEnv, UpdateError> {
        Ok(BootEnv {
            esp: disk.partition(2)?.to_path_buf(),
            at: at.to_path_buf(),
        })
    }

    pub fn read(&self) -> Result<BTreeMap<String, String>, UpdateError> {
        self.with_esp(|file| {
            let mut block = Vec::new();
            std::fs::File::open(file)?.read_to_end(&mut block)?;
            grubenv::parse(&block)
                .ok_or_else(|| std::io::Error::other("not a GRUB environment block"))
        })
    }

    /// Sets (or, with an empty value, clears) `changes`, keeping every other variable.
    pub fn update(&self, changes: &[(&str, &str)]) -> Result<(), UpdateError> {
        self.with_esp(|file| {
            let mut block = Vec::new();
            std::fs::File::open(file)?.read_to_end(&mut block)?;
            let mut vars = grubenv::parse(&block)
                .ok_or_else(|| std::io::Error::other("not a GRUB environment block"))?;
            for (k, v) in changes {
                vars.insert(k.to_string(), v.to_string());
            }
            let new = grubenv::render(&vars)
                .ok_or_else(|| std::io::Error::other("the variables do not fit in 1024 bytes"))?;
            let f = OpenOptions::new().write(true).open(file)?;
            f.write_all_at(&new, 0)?;
            f.sync_all()
        })
    }

    fn with_esp<T>(
        &self,
        work: impl FnOnce(&Path) -> std::io::Result<T>,
    ) -> Result<T, UpdateError> {
        let io = |what: &str, e: String| {
            UpdateError::Io(format!("{what} the ESP ({}): {e}", self.esp.display()))
        };
        crate::modules::load_group("vfat");
        std::fs::create_dir_all(&self.at).map_err(|e| io("mounting", e.to_string()))?;
        mount(
            Some(self.esp.as_path()),
            &self.at,
            Some("vfat"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| io("mounting", e.to_string()))?;
        let result = work(&self.at.join(GRUBENV_PATH));
        let _ = std::io::stdout().flush();
        if let Err(e) = umount(&self.at) {
            tracing::warn!(error = %e, "cannot unmount the ESP");
        }
        result.map_err(|e| io("using", e.to_string()))
    }
}
