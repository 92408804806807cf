//! A/B updates of an installed host (`host.update`, `host.rollback`): a bundle
//! (`model::update`) is fetched onto the state partition, checked whole — every digest, and the
//! signature when `[update] public_key` pins a key — then written to the slot that is not
//! running, read back, and only then is GRUB told to try it (`try_slot`, `tries`). The tried
//! slot becomes the one that boots when its init finds every service running and the API
//! ready; if it does not get there in its boots (a panic, init dying, a service that keeps
//! failing, no health within [`TRIAL_DEADLINE`]) GRUB boots the old slot again, which reports
//! the failed update. A power cut before GRUB is told leaves the host booting what it ran.

mod boot_env;
mod bundle;
mod download;
mod watchdog;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::install::{JobReport, UPDATE_TRIES};
use model::update::{Manifest, SlotsInfo};
use sha2::{Digest, Sha256};

pub use boot_env::{BootEnv, Disk};
use watchdog::Watchdog;

/// How long an updated slot has, from init's start, to get every service running and the API
/// ready before init gives up on it and reboots (a TCG boot of the debug image takes ~25 s).
pub const TRIAL_DEADLINE: Duration = Duration::from_secs(150);
/// The trial boot's watchdog: a hang longer than this resets the machine (a try spent).
const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(60);
/// How often init's main loop pets it.
pub const WATCHDOG_PET: Duration = Duration::from_secs(10);
/// Between a written update and the reboot asked for with it.
pub const REBOOT_AFTER: Duration = Duration::from_secs(2);
/// Where the ESP and a written slot are mounted for a moment.
const ESP_AT: &str = "/run/cairn/esp";
const SLOT_AT: &str = "/run/cairn/slot-check";

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The bundle is not one, or not one we may take; nothing was written to a slot.
    #[error("{0}")]
    Invalid(String),
    #[error("not running from an installed disk: {0}")]
    NotInstalled(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Io(String),
}

/// The slot this boot runs (`cairn.slot=` from the installed disk's boot menu).
pub fn slot_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cairn.slot="))
        .filter(|s| *s == "a" || *s == "b")
        .map(str::to_string)
}

fn other(slot: &str) -> &'static str {
    if slot == "a" { "b" } else { "a" }
}

/// Partition number of a slot (model::install's layout: A is 3, B is 4).
fn partition_of(slot: &str) -> u32 {
    if slot == "a" { 3 } else { 4 }
}

#[derive(Clone)]
pub struct Updater {
    state: PathBuf,
    config: Arc<Mutex<PathBuf>>,
    slot: Option<String>,
    os_version: String,
    report: Arc<Mutex<JobReport>>,
    info: Arc<Mutex<SlotsInfo>>,
    /// Set on a trial boot until it is confirmed.
    trial: Arc<Mutex<bool>>,
    /// Armed while on trial.
    watchdog: Arc<Mutex<Option<Watchdog>>>,
}

impl Updater {
    pub fn new(state: &Path, config: &Path, cmdline: &str) -> Updater {
        let os_version = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("VERSION_ID=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| model::VERSION.to_string());
        let slot = slot_from_cmdline(cmdline);
        Updater {
            state: state.to_path_buf(),
            config: Arc::new(Mutex::new(config.to_path_buf())),
            info: Arc::new(Mutex::new(SlotsInfo {
                os_version: os_version.clone(),
                slot: slot.clone().unwrap_or_default(),
                ..Default::default()
            })),
            slot,
            os_version,
            report: Arc::new(Mutex::new(JobReport {
                state: "idle".into(),
                ..Default::default()
            })),
            trial: Arc::new(Mutex::new(false)),
            watchdog: Arc::new(Mutex::new(None)),
        }
    }

    /// The config whose `[update] public_key` applies (it changes with host.applyConfig).
    pub fn set_config(&self, path: &Path) {
        if let Ok(mut c) = self.config.lock() {
            *c = path.to_path_buf();
        }
    }

    pub fn report(&self) -> JobReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn info(&self) -> SlotsInfo {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    fn env(&self) -> Result<(String, BootEnv), UpdateError> {
        let slot = self.slot.clone().ok_or_else(|| {
            UpdateError::NotInstalled(
                "this boot is the live system (no cairn.slot=): install it first".into(),
            )
        })?;
        let disk = Disk::of_state(&self.state)?;
        Ok((slot, BootEnv::new(&disk, Path::new(ESP_AT))?))
    }

    fn refresh_info(&self, env: &BTreeMap<String, String>) {
        if let Ok(mut info) = self.info.lock() {
            info.versions = ["a", "b"]
                .iter()
                .filter_map(|s| {
                    env.get(&format!("version_{s}"))
                        .filter(|v| !v.is_empty())
                        .map(|v| (s.to_string(), v.clone()))
                })
                .collect();
            info.last_update = env.get("last_update").cloned().unwrap_or_default();
        }
    }

    /// At boot, on an installed host: says whether this is the trial boot of an update (then
    /// [`Updater::confirm`] must follow once healthy), or reports an update that did not come
    /// up. Returns true on a trial boot.
    pub fn on_boot(&self) -> bool {
        let Ok((slot, env)) = self.env() else {
            return false;
        };
        let vars = match env.read() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("cairn: cannot read the boot environment: {e}");
                return false;
            }
        };
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        let mut trial = false;
        if get("try_slot") == slot {
            // The bundle's version (its manifest's), which this system's own may not repeat.
            let version = Some(get("update_version"))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| self.os_version.clone());
            println!(
                "cairn: trying the update to {version} on slot {slot} ({} more boot(s) before \
                 going back)",
                get("tries")
            );
            trial = true;
            match Watchdog::arm(WATCHDOG_TIMEOUT) {
                Ok(dog) => {
                    println!(
                        "cairn: watchdog {} armed for the trial ({} s)",
                        dog.identity,
                        dog.timeout.as_secs()
                    );
                    if let Ok(mut w) = self.watchdog.lock() {
                        *w = Some(dog);
                    }
                }
                Err(e) => eprintln!("cairn: no watchdog for the trial boot: {e}"),
            }
        } else if !get("update_to").is_empty() && get("update_to") != slot {
            let what = format!(
                "failed: {} on slot {} did not come up healthy in {UPDATE_TRIES} boots; back on \
                 slot {slot} ({})",
                get("update_version"),
                get("update_to"),
                self.os_version
            );
            eprintln!("cairn: the update {what}");
            if let Err(e) = env.update(&[("update_to", ""), ("last_update", &what)]) {
                eprintln!("cairn: cannot record the failed update: {e}");
            }
        }
        match env.read() {
            Ok(vars) => self.refresh_info(&vars),
            Err(_) => self.refresh_info(&vars),
        }
        if let Ok(mut t) = self.trial.lock() {
            *t = trial;
        }
        trial
    }

    pub fn in_trial(&self) -> bool {
        self.trial.lock().map(|t| *t).unwrap_or(false)
    }

    /// Called from init's main loop every [`WATCHDOG_PET`]: while it turns, no reset.
    pub fn pet_watchdog(&self) {
        if let Ok(w) = self.watchdog.lock()
            && let Some(dog) = w.as_ref()
        {
            dog.pet();
        }
    }

    /// The trial boot is healthy: this slot boots from now on.
    pub fn confirm(&self) {
        if !self.in_trial() {
            return;
        }
        let Ok((slot, env)) = self.env() else { return };
        let what = format!("ok: {} on slot {slot}", self.os_version);
        match env.update(&[
            ("slot", &slot),
            ("try_slot", ""),
            ("tries", ""),
            ("update_to", ""),
            ("last_update", &what),
        ]) {
            Ok(()) => {
                println!(
                    "cairn: update to {} confirmed: slot {slot} boots from now on",
                    self.os_version
                );
                if let Some(dog) = self.watchdog.lock().ok().and_then(|mut w| w.take()) {
                    dog.disarm();
                    println!("cairn: watchdog disarmed");
                }
                if let Ok(mut t) = self.trial.lock() {
                    *t = false;
                }
                if let Ok(vars) = env.read() {
                    self.refresh_info(&vars);
                }
            }
            Err(e) => eprintln!("cairn: cannot confirm the update: {e}"),
        }
    }

    /// Makes the other slot the one that boots (it must hold a version). The caller reboots.
    pub fn rollback(&self) -> Result<String, UpdateError> {
        let (slot, env) = self.env()?;
        let to = other(&slot);
        let vars = env.read()?;
        let version = vars
            .get(&format!("version_{to}"))
            .cloned()
            .unwrap_or_default();
        if version.is_empty() {
            return Err(UpdateError::Busy(format!(
                "slot {to} holds no system to go back to"
            )));
        }
        let what = format!(
            "rolled back by hand from {} on slot {slot} to {version} on slot {to}",
            self.os_version
        );
        env.update(&[
            ("slot", to),
            ("try_slot", ""),
            ("tries", ""),
            ("update_to", ""),
            ("last_update", &what),
        ])?;
        println!("cairn: {what}");
        Ok(what)
    }

    /// Checks that an update can start, then runs it on a thread of its own; `done` runs after
    /// a successful one (the reboot, when asked for).
    pub fn start(
        &self,
        url: &str,
        done: impl FnOnce() + Send + 'static,
    ) -> Result<(), UpdateError> {
        let (slot, _) = self.env()?;
        let source = Source::parse(url, &self.state)?;
        {
            let mut r = self
                .report
                .lock()
                .map_err(|_| UpdateError::Io("update report poisoned".into()))?;
            if r.state == "running" {
                return Err(UpdateError::Busy("an update is running".into()));
            }
            *r = JobReport {
                state: "running".into(),
                disk: format!("slot {}", other(&slot)),
                step: "fetching the bundle".into(),
                ..Default::default()
            };
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("update".into())
            .spawn(move || {
                let result = me.run(&source, &slot);
                if let Ok(mut r) = me.report.lock() {
                    match &result {
                        Ok(v) => {
                            r.state = "done".into();
                            r.step = format!("{v} written to slot {}; it boots next", other(&slot));
                        }
                        Err(e) => {
                            r.state = "failed".into();
                            r.error = e.to_string();
                        }
                    }
                }
                match result {
                    Ok(v) => {
                        println!("cairn: update to {v} written to slot {}", other(&slot));
                        done();
                    }
                    Err(e) => eprintln!("cairn: update failed: {e}"),
                }
            })
            .map_err(|e| UpdateError::Io(format!("cannot start the update: {e}")))?;
        Ok(())
    }

    fn step(&self, step: &str) {
        tracing::info!(step, "update");
        if let Ok(mut r) = self.report.lock() {
            r.step = step.to_string();
        }
    }

    fn run(&self, source: &Source, slot: &str) -> Result<String, UpdateError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| UpdateError::Io(format!("{what}: {e}"))
        };
        let dir = self.state.join("updates");
        let _ = std::fs::remove_dir_all(&dir);
        let parts = dir.join("parts");
        std::fs::create_dir_all(&parts).map_err(io("creating the update directory"))?;
        let bundle = dir.join("bundle");
        let report = self.report.clone();
        let progress = |done, total| {
            if let Ok(mut r) = report.lock() {
                r.done_bytes = done;
                r.total_bytes = total;
            }
        };
        match source {
            Source::Http(url) => {
                download::get(url, &bundle, progress)?;
            }
            Source::File(path) => {
                // An upload apid stored on this filesystem: taken over, not copied.
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                std::fs::rename(path, &bundle).map_err(io("taking over the uploaded bundle"))?;
                progress(size, size);
            }
        }

        self.step("checking the bundle");
        let key = self
            .config
            .lock()
            .ok()
            .and_then(|c| model::config::load(&c).ok())
            .and_then(|c| c.update.public_key);
        let manifest = bundle::unpack(&bundle, &parts, key.as_deref())?;
        let _ = std::fs::remove_file(&bundle);

        let to = other(slot);
        self.step(&format!("writing slot {to}"));
        let disk = Disk::of_state(&self.state)?;
        let target = disk.partition(partition_of(to))?.to_path_buf();
        let bytes = partition_bytes(&target)?;
        let label = if to == "a" { "CAIRN-A" } else { "CAIRN-B" };
        crate::install::make_ext4(
            Path::new(crate::install::MKE2FS),
            &target,
            0,
            bytes,
            label,
            &parts,
        )
        .map_err(|e| UpdateError::Io(format!("slot {to}: {e}")))?;

        self.step(&format!("reading slot {to} back"));
        verify_slot(&target, &manifest)?;
        let _ = std::fs::remove_dir_all(&dir);

        self.step("telling GRUB to try it");
        let env = BootEnv::new(&disk, Path::new(ESP_AT))?;
        let tries = UPDATE_TRIES.to_string();
        env.update(&[
            (&format!("version_{to}"), &manifest.version),
            ("update_to", to),
            ("update_version", &manifest.version),
            ("try_slot", to),
            ("tries", &tries),
        ])?;
        if let Ok(vars) = env.read() {
            self.refresh_info(&vars);
        }
        Ok(manifest.version)
    }
}

/// Where a bundle comes from.
#[derive(Debug, PartialEq)]
enum Source {
    Http(String),
    /// A file on the state partition (`file:///…`; apid's uploads are there).
    File(PathBuf),
}

impl Source {
    fn parse(url: &str, state: &Path) -> Result<Source, UpdateError> {
        if url.starts_with("http://") {
            return Ok(Source::Http(url.to_string()));
        }
        let Some(path) = url.strip_prefix("file://") else {
            return Err(UpdateError::Invalid(format!(
                "{url}: bundles are fetched over http:// or uploaded (PUT /uploads/NAME, then \
                 upload:NAME)"
            )));
        };
        // Only the state partition's files: they are the ones taken over by a rename, and
        // nothing else on the host is a bundle.
        let inside = Path::new(path)
            .canonicalize()
            .ok()
            .zip(state.canonicalize().ok())
            .filter(|(p, s)| p.starts_with(s) && p.is_file());
        match inside {
            Some((p, _)) => Ok(Source::File(p)),
            None => Err(UpdateError::Invalid(format!(
                "{url}: not a file on the state partition ({})",
                state.display()
            ))),
        }
    }
}

fn partition_bytes(dev: &Path) -> Result<u64, UpdateError> {
    let name = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|sectors| sectors * 512)
        .ok_or_else(|| UpdateError::Io(format!("cannot read the size of {}", dev.display())))
}

/// Mounts the written slot read-only and holds every file to the manifest.
fn verify_slot(dev: &Path, manifest: &Manifest) -> Result<(), UpdateError> {
    use nix::mount::{MsFlags, mount, umount};
    let at = Path::new(SLOT_AT);
    let fail = |m: String| UpdateError::Io(format!("slot {} read back: {m}", dev.display()));
    std::fs::create_dir_all(at).map_err(|e| fail(e.to_string()))?;
    mount(
        Some(dev),
        at,
        Some("ext4"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| fail(format!("mount: {e}")))?;
    let result = manifest.parts.iter().try_for_each(|(name, _, sha)| {
        let data = std::fs::read(at.join(name)).map_err(|e| fail(format!("{name}: {e}")))?;
        let got = model::hex(&Sha256::digest(&data));
        if &got != sha {
            return Err(fail(format!("{name} differs from the bundle's")));
        }
        Ok(())
    });
    let _ = umount(at);
    result
}

#[cfg(test)]
mod tests;
