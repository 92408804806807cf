//! Which host.toml the appliance runs with, and maintenance mode when there is none.
//!
//! Sources, first found wins: the config saved on the state partition (STATE/config/host.toml,
//! where an applied config will be kept), then the boot medium's (/etc/cairn/host.toml, baked
//! into the image by `image build`). A config that does not validate is printed with every
//! error at its `file:line:col` and nothing of it is applied. With no config, or a bad one, the
//! appliance starts in maintenance mode: DHCP on its first NIC and the API with a one-time token
//! printed on the console, waiting for a config — as Talos does. A `cairn.config=` URL on the
//! kernel command line comes first of all (`config_url`), and when neither file exists, a
//! `host.toml` on a filesystem labelled CAIRN-CONFIG (a USB stick: FAT keeps 11 characters of a
//! label, so `CAIRN-CONFI` counts too; ext4 and ISO 9660 as well), read once at boot.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use model::config::HostConfig;

/// What init runs with, for `host.info` (Init1.BootInfo) as much as for the daemons.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub config: HostConfig,
    /// The file the daemons read (`--config`).
    pub path: PathBuf,
    pub maintenance: bool,
    /// Where the config came from: `state`, `medium`, `label`, or `none` in maintenance.
    pub source: String,
    /// Why maintenance: the config found did not validate (its diagnostics), or none was found.
    pub problem: Option<String>,
    /// `cairn.config=` with this host's values in: init fetches and applies it once the
    /// maintenance network is up (`config_url`).
    pub url: Option<String>,
}

impl Chosen {
    pub fn mode(&self) -> &'static str {
        if self.maintenance {
            "maintenance"
        } else {
            "running"
        }
    }
}

/// The saved config below the state directory.
pub fn saved(state: &Path) -> PathBuf {
    state.join("config").join("host.toml")
}

/// Picks the config: a `cairn.config=` URL on `cmdline` (maintenance until it is fetched),
/// then the saved one, then `medium`. `run_dir` receives the maintenance config.
pub fn choose(
    cmdline: &str,
    state: &Path,
    medium: &Path,
    run_dir: &Path,
) -> anyhow::Result<Chosen> {
    if let Some(url) = crate::config_url::from_cmdline(cmdline) {
        let nic = first_nic();
        let mac = nic.as_ref().map(|(_, mac)| mac.as_str());
        let url = crate::config_url::Vars::of_this_host(mac).expand(&url);
        let why = format!("waiting for the config from {url} (cairn.config=)");
        let mut chosen = maintenance(run_dir, nic, why, None)?;
        chosen.url = Some(url);
        return Ok(chosen);
    }
    let mut problem = None;
    let mut sources = vec![("state", saved(state)), ("medium", medium.to_path_buf())];
    if sources.iter().all(|(_, p)| !p.exists())
        && let Some(path) = labelled(run_dir)
    {
        sources.push(("label", path));
    }
    for (source, path) in sources {
        if !path.exists() {
            continue;
        }
        match model::config::load(&path) {
            Ok(config) => {
                return Ok(Chosen {
                    config,
                    path,
                    maintenance: false,
                    source: source.into(),
                    problem: None,
                    url: None,
                });
            }
            Err(errors) => {
                eprintln!("{errors}");
                let text = format!(
                    "{}: {} error(s); nothing of it was applied",
                    path.display(),
                    errors.0.len()
                );
                eprintln!("cairn: {text}");
                problem = Some(format!("{text}:\n{errors}"));
                break;
            }
        }
    }
    let why = problem.clone().unwrap_or_else(|| {
        format!(
            "no config ({} nor {})",
            saved(state).display(),
            medium.display()
        )
    });
    maintenance(run_dir, first_nic(), why, problem)
}

/// Labels of a filesystem that carries a host.toml; FAT labels hold 11 characters.
const CONFIG_LABELS: &[&str] = &["CAIRN-CONFIG", "CAIRN-CONFI"];

/// The host.toml of a filesystem labelled CAIRN-CONFIG, copied into `run_dir` (the filesystem
/// is mounted read-only only for the copy), or None when there is none.
fn labelled(run_dir: &Path) -> Option<PathBuf> {
    use nix::mount::{MsFlags, mount, umount};
    let (dev, fstype) = crate::boot::find_labelled(CONFIG_LABELS)?;
    crate::modules::load_group(fstype);
    let at = run_dir.join("config-medium");
    let copy = run_dir.join("labelled-host.toml");
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let read = fs::create_dir_all(&at)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            mount(Some(dev.as_path()), &at, Some(fstype), flags, None::<&str>)
                .map_err(|e| format!("mount: {e}"))
        })
        .and_then(|()| {
            let text = fs::read(at.join("host.toml")).map_err(|e| format!("host.toml: {e}"));
            let _ = umount(&at);
            text
        });
    match read {
        Ok(text) => match fs::write(&copy, text) {
            Ok(()) => {
                println!(
                    "cairn: config from {} (CAIRN-CONFIG, {fstype})",
                    dev.display()
                );
                Some(copy)
            }
            Err(e) => {
                eprintln!("cairn: cannot copy the config of {}: {e}", dev.display());
                None
            }
        },
        Err(e) => {
            eprintln!(
                "cairn: {} is labelled CAIRN-CONFIG but gives no config: {e}",
                dev.display()
            );
            None
        }
    }
}

/// Writes and loads the maintenance config: a hostname from the first NIC's MAC, DHCP on that
/// NIC, the API on every address with a generated certificate and one fresh token, printed.
fn maintenance(
    run_dir: &Path,
    nic: Option<(String, String)>,
    why: String,
    problem: Option<String>,
) -> anyhow::Result<Chosen> {
    // Valid until the next boot, known only to who reads the console.
    let token = model::token::generate().context("reading /dev/urandom")?;
    let text = maintenance_toml(nic.as_ref(), &model::token::digest(&token));
    fs::create_dir_all(run_dir).with_context(|| format!("mkdir {}", run_dir.display()))?;
    let path = run_dir.join("maintenance.toml");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    let config = model::config::load(&path)
        .map_err(|e| anyhow::anyhow!("the maintenance config does not validate:\n{e}"))?;
    eprintln!("cairn: MAINTENANCE MODE: {why}");
    match &nic {
        Some((name, _)) => eprintln!("cairn: DHCP on {name}; the API listens on port 8443"),
        None => eprintln!("cairn: no network interface found; the API has no address"),
    }
    eprintln!("cairn: one-time API token: {token}");
    Ok(Chosen {
        config,
        path,
        maintenance: true,
        source: "none".into(),
        problem: Some(problem.unwrap_or(why)),
        url: None,
    })
}

fn maintenance_toml(nic: Option<&(String, String)>, digest: &str) -> String {
    let (interface, hostname) = match nic {
        Some((name, mac)) => {
            let tail: String = mac.chars().filter(char::is_ascii_hexdigit).collect();
            let tail = &tail[tail.len().saturating_sub(6)..];
            (name.as_str(), format!("cairn-{tail}"))
        }
        None => ("eth0", "cairn".to_string()),
    };
    format!(
        "# Written by init: no valid host.toml was found (maintenance mode).\n\
         [host]\nhostname = \"{hostname}\"\n\n\
         [host.management]\ninterface = \"{interface}\"\ndhcp = true\n\n\
         [api]\nlisten = \"0.0.0.0\"\nport = 8443\ntls = \"generate\"\n\n\
         [[api.token]]\nname = \"maintenance\"\nsha256 = \"{digest}\"\n"
    )
}

/// The first physical NIC by name (one with a `device` link in sysfs: no bridge, veth or lo),
/// and its MAC.
fn first_nic() -> Option<(String, String)> {
    let mut nics: Vec<(String, String)> = fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mac = fs::read_to_string(e.path().join("address")).ok()?;
            Some((name, mac.trim().to_string()))
        })
        .collect();
    nics.sort();
    nics.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maintenance_config_validates_and_names_its_nic() {
        let nic = ("ens3".to_string(), "52:54:00:12:34:56".to_string());
        let text = maintenance_toml(Some(&nic), &model::token::digest("t"));
        let config = model::config::parse("maintenance.toml", &text).unwrap();
        assert_eq!(config.host.hostname, "cairn-123456");
        assert_eq!(config.host.management.interface, "ens3");
        let text = maintenance_toml(None, &model::token::digest("t"));
        assert!(model::config::parse("maintenance.toml", &text).is_ok());
    }

    #[test]
    fn a_bad_config_means_maintenance_with_its_errors() {
        let dir = std::env::temp_dir().join(format!("cairn-cfgsrc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let medium = dir.join("host.toml");
        fs::write(&medium, "[host]\nhostname = 5\n").unwrap();
        let chosen = choose("", &dir.join("state"), &medium, &dir.join("run")).unwrap();
        assert!(chosen.maintenance);
        assert_eq!(chosen.source, "none");
        let problem = chosen.problem.unwrap();
        assert!(problem.contains("host.toml:2:"), "{problem}");
        assert!(chosen.path.ends_with("run/maintenance.toml"));

        // A good saved config wins over the medium's bad one.
        let saved = saved(&dir.join("state"));
        fs::create_dir_all(saved.parent().unwrap()).unwrap();
        fs::write(&saved, maintenance_toml(None, &model::token::digest("t"))).unwrap();
        let chosen = choose("", &dir.join("state"), &medium, &dir.join("run")).unwrap();
        assert!(!chosen.maintenance);
        assert_eq!((chosen.source.as_str(), chosen.path), ("state", saved));
        // A URL on the command line wins: maintenance until it is fetched.
        let chosen = choose(
            "quiet cairn.config=http://10.0.2.2/h.toml",
            &dir.join("state"),
            &medium,
            &dir.join("run"),
        )
        .unwrap();
        assert!(chosen.maintenance);
        assert_eq!(chosen.url.as_deref(), Some("http://10.0.2.2/h.toml"));
        let _ = fs::remove_dir_all(&dir);
    }
}
