//! host.applyConfig: a new host.toml, validated whole, saved where the next boot finds it first,
//! and applied without a reboot by restarting the daemons with it — each reconciles its own
//! section at start, and what runs (containers, VMs, ports) is re-adopted, as after a crash.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::{Request, RequestError, Supervisor};

impl Supervisor {
    /// The changes `text` makes to the running config; unless `dry_run`, also saves and
    /// applies it. A config with errors changes nothing and answers every error.
    pub(super) fn apply_config(
        &mut self,
        text: &str,
        dry_run: bool,
        source: &str,
    ) -> Result<Vec<String>, RequestError> {
        let new = model::config::parse("host.toml", text)
            .map_err(|errors| RequestError::InvalidConfig(errors.to_string()))?;
        let mut changes = match model::config::load(&self.plan.config) {
            Ok(old) => model::config::diff(&old, &new),
            Err(e) => vec![format!(
                "the running config ({}) cannot be read, so every item is applied: {e}",
                self.plan.config.display()
            )],
        };
        let maintenance = self
            .boot
            .lock()
            .map(|b| b.mode == "maintenance")
            .unwrap_or(false);
        if maintenance {
            changes.insert(0, "mode: maintenance -> running".into());
        }
        if dry_run {
            return Ok(changes);
        }
        let saved = crate::config_source::saved(&self.plan.state);
        save(&saved, text).map_err(|e| {
            RequestError::Failed(format!(
                "cannot save {}: {e}; nothing changed",
                saved.display()
            ))
        })?;
        tracing::warn!(path = %saved.display(), changes = changes.len(), "config applied; restarting the services with it");
        super::events::emit(
            "config",
            "applied",
            "",
            format!("{} changes; the services restart with it", changes.len()),
        );
        self.plan.config = saved;
        if let Some(u) = &self.updater {
            u.set_config(&self.plan.config);
        }
        if let Ok(mut boot) = self.boot.lock() {
            boot.mode = "running".into();
            boot.source = source.into();
            boot.problem.clear();
        }
        if let Err(e) = nix::unistd::sethostname(&new.host.hostname) {
            tracing::error!(hostname = %new.host.hostname, error = %e, "cannot set the hostname");
        }
        let requests = self.requests.clone();
        tokio::spawn(async move {
            tokio::time::sleep(super::ANSWER_GRACE).await;
            let _ = requests.send(Request::RestartAll);
        });
        Ok(changes)
    }
}

/// Between tries of a `cairn.config=` URL that did not answer.
const FETCH_RETRY: Duration = Duration::from_secs(2);

/// Fetches `url` until it answers (the maintenance network's DHCP may take a while), then
/// applies what it got; `host.info`'s config_problem says what is being waited for. A config
/// with errors is not retried: the problem then shows its diagnostics, and the host stays in
/// maintenance mode for one given over the API.
pub(super) async fn fetch_and_apply(
    url: String,
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
    boot: super::SharedBoot,
) {
    let say = |problem: String| {
        if let Ok(mut b) = boot.lock() {
            b.problem = problem;
        }
    };
    let mut tries = 0u32;
    let text = loop {
        match crate::config_url::fetch(&url).await {
            Ok(text) => break text,
            Err(e) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(30) {
                    tracing::warn!(%url, error = %e, tries, "cannot fetch the config yet; retrying");
                }
                say(format!(
                    "waiting for the config from {url} (cairn.config=): {e}"
                ));
                tokio::time::sleep(FETCH_RETRY).await;
            }
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let sent = requests.send(Request::ApplyConfig {
        text,
        dry_run: false,
        source: "url",
        reply,
    });
    match (sent, answer.await) {
        (Ok(()), Ok(Ok(changes))) => {
            println!(
                "cairn: config from {url} applied ({} changes)",
                changes.len()
            );
        }
        (Ok(()), Ok(Err(e))) => {
            eprintln!("cairn: the config from {url} was not applied:\n{e}");
            say(format!("the config from {url} was not applied: {e}"));
        }
        _ => tracing::warn!("init stopped before the fetched config was applied"),
    }
}

/// Either the old file or the whole new one, even across a power cut: a temporary file beside
/// it, synced, renamed over it, and the directory synced.
fn save(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".host.toml.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
