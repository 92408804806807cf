//! The watchdog of a trial boot: a hang after init has started — the kernel stuck, or init's
//! own loop no longer turning — would otherwise leave the updated host hanging with nobody to
//! power-cycle it. While the updated system is on trial, init arms the first watchdog device
//! (`/dev/watchdog`: a hardware one where the machine has it, loaded from the `watchdog` module
//! group, else the kernel's softdog, which catches only user-space hangs) and pets it from its
//! main loop; a reset then counts as one of GRUB's tries. Confirming the update disarms it (the
//! magic close), so a healthy host runs without one, as before.
//!
//! Not covered: a hang before init runs (the kernel's own boot), which only a watchdog the
//! firmware starts could catch; a kernel panic reboots by itself (`panic=-1`).

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

const DEVICE: &str = "/dev/watchdog";
const SYSFS: &str = "/sys/class/watchdog/watchdog0";

nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);

pub struct Watchdog {
    file: Option<File>,
    pub identity: String,
    pub timeout: Duration,
}

impl Watchdog {
    /// Loads the watchdog drivers and arms the first device with `timeout` (the device may
    /// round it; [`Watchdog::timeout`] is what it took).
    pub fn arm(timeout: Duration) -> Result<Watchdog, String> {
        crate::modules::load_group("watchdog");
        if !std::path::Path::new(SYSFS).exists() {
            // No hardware watchdog: the software one still catches a hung init.
            crate::modules::load_group("softdog");
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(DEVICE)
            .map_err(|e| format!("{DEVICE}: {e}"))?;
        let mut secs = libc::c_int::try_from(timeout.as_secs()).unwrap_or(60);
        // SAFETY: an open watchdog device and a c_int the ioctl reads and writes back.
        if let Err(e) = unsafe { wdioc_settimeout(file.as_raw_fd(), &mut secs) } {
            tracing::warn!(error = %e, "the watchdog keeps its own timeout");
        }
        let identity = std::fs::read_to_string(format!("{SYSFS}/identity"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "watchdog".into());
        let timeout = std::fs::read_to_string(format!("{SYSFS}/timeout"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map_or(timeout, Duration::from_secs);
        let dog = Watchdog {
            file: Some(file),
            identity,
            timeout,
        };
        dog.pet();
        Ok(dog)
    }

    pub fn pet(&self) {
        let Some(file) = &self.file else { return };
        let mut unused: libc::c_int = 0;
        // SAFETY: an open watchdog device; the argument is not used by the ioctl.
        if let Err(e) = unsafe { wdioc_keepalive(file.as_raw_fd(), &mut unused) } {
            tracing::warn!(error = %e, "cannot pet the watchdog");
        }
    }

    /// Stops the watchdog: the magic close ('V', then close).
    pub fn disarm(mut self) {
        if let Some(mut file) = self.file.take()
            && let Err(e) = file.write_all(b"V")
        {
            tracing::warn!(error = %e, "cannot disarm the watchdog; it stays armed");
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropped without disarm (init stopping for a reboot): the file closes without the
        // magic character, and the watchdog stays armed until the reboot resets it anyway.
        if self.file.is_some() {
            tracing::info!("the watchdog stays armed through the reboot");
        }
    }
}
