//! Which host a command talks to, and `cairnctl remote add|list|remove|switch`.
//!
//! The host comes from, first to last: `--url` (token from --token or CAIRN_TOKEN), `--remote
//! NAME`, `CAIRN_URL` (with CAIRN_TOKEN), the config file's default remote. A remote carries
//! its own token and the fingerprint of the certificate pinned when it was added (trust on
//! first use, as ssh); a URL is trusted through --accept-fingerprint (or CAIRN_FINGERPRINT),
//! --ca-cert, --insecure, or the pin of a remote with the same URL.
//!
//! No `REMOTE:NAME` prefix as incus has: `ct:web1` already names a guest's port and
//! `POOL/NAME@SNAP` a snapshot, so a colon in a name would be read two ways.

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use serde_json::json;

use crate::Global;
use crate::client::{Client, Endpoint};
use crate::config::{self, Config, Remote};
use crate::output::table;
use crate::prompt;
use crate::tls::{self, Pin, Trust};

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Adds a host: shows its certificate's fingerprint, asks (or takes --accept-fingerprint),
    /// checks the token, and pins the certificate for every later command.
    Add {
        /// The remote's name, for --remote NAME: letters, digits, '-', '_'.
        name: String,
        /// The host's API, https://HOST[:PORT].
        url: String,
        /// Make it the default remote (the first one added always is).
        #[arg(long)]
        default: bool,
    },
    /// The remotes, their URLs and pinned fingerprints; * marks the default.
    List,
    /// Forgets a remote (its token and pin).
    Remove {
        /// The remote's name.
        name: String,
    },
    /// Makes a remote the default, used when neither --url, --remote nor CAIRN_URL is given.
    Switch {
        /// The remote's name.
        name: String,
    },
}

fn valid_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        bail!("{name:?} is not a remote name: 1 to 64 letters, digits, '-' or '_'");
    }
    Ok(())
}

/// The host this command talks to (see the module's comment), ready to call.
pub fn connect(global: &Global) -> anyhow::Result<Client> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let load = || -> anyhow::Result<Config> { Ok(Config::load(&config::path()?)?) };
    // (url, token, pin from a remote, the remote's name)
    let (url, token, remote_pin, remote_name) = if let Some(url) = &global.url {
        (
            url.clone(),
            global.token.clone().or_else(|| env("CAIRN_TOKEN")),
            None,
            None,
        )
    } else if let Some(name) = &global.remote {
        let config = load()?;
        let r = config.remotes.get(name).ok_or_else(|| {
            anyhow!("no remote {name:?}: `cairnctl remote list` shows them, `remote add` adds one")
        })?;
        let token = global.token.clone().unwrap_or_else(|| r.token.clone());
        (
            r.url.clone(),
            Some(token),
            Some(r.fingerprint.clone()),
            Some(name.clone()),
        )
    } else if let Some(url) = env("CAIRN_URL") {
        (
            url,
            global.token.clone().or_else(|| env("CAIRN_TOKEN")),
            None,
            None,
        )
    } else {
        let config = load()?;
        match config
            .default_remote
            .as_ref()
            .and_then(|d| Some((d, config.remotes.get(d)?)))
        {
            Some((name, r)) => (
                r.url.clone(),
                Some(global.token.clone().unwrap_or_else(|| r.token.clone())),
                Some(r.fingerprint.clone()),
                Some(name.clone()),
            ),
            None => bail!(
                "which host? pass --url https://HOST:PORT (or set CAIRN_URL), or add one: \
                 cairnctl remote add NAME https://HOST:PORT --token TOKEN"
            ),
        }
    };
    let endpoint = Endpoint::parse(&url)?;
    let token = token.ok_or_else(|| anyhow!("no API token: pass --token or set CAIRN_TOKEN"))?;
    // A URL without a trust option may still be a remote's: its pin applies.
    let remote_pin = remote_pin.or_else(|| {
        let config = load().ok()?;
        let same = |r: &&Remote| Endpoint::parse(&r.url).ok().as_ref() == Some(&endpoint);
        config
            .remotes
            .values()
            .find(same)
            .map(|r| r.fingerprint.clone())
    });
    let given_fp = match global.accept_fingerprint.clone().or_else(|| {
        (global.ca_cert.is_none() && !global.insecure)
            .then(|| env("CAIRN_FINGERPRINT"))
            .flatten()
    }) {
        Some(fp) => Some(tls::normalize_fingerprint(&fp)?),
        None => None,
    };
    let hint = match &remote_name {
        Some(name) => format!(
            "cairnctl remote remove {name} && cairnctl remote add {name} {url} --token TOKEN \
             --accept-fingerprint {{presented}}"
        ),
        None => "--accept-fingerprint {presented}".to_string(),
    };
    let (trust, pin) = match (&global.ca_cert, global.insecure, given_fp.or(remote_pin)) {
        (Some(path), _, _) => (Trust::CaFile(path), None),
        (None, true, _) => (Trust::Insecure, None),
        (None, false, Some(fp)) => {
            let pin = Pin::new(fp);
            (Trust::Fingerprint(pin.clone()), Some(pin))
        }
        (None, false, None) => {
            let seen = runtime()?
                .block_on(tls::fetch_fingerprint(&endpoint.host, endpoint.port))
                .unwrap_or_else(|e| format!("(not read: {e})"));
            bail!(
                "Cairn hosts serve a self-signed certificate, and nothing says to trust this \
                 one. Its fingerprint is {seen}: if the host's console shows the same, pass \
                 --accept-fingerprint {seen} (or set CAIRN_FINGERPRINT), or pin it once for \
                 all: cairnctl remote add NAME {url}. Also possible: --ca-cert FILE (the host's \
                 STATE/tls/cert.pem, or the CA of the certificate in host.toml), --insecure"
            );
        }
    };
    let client = Client::new(endpoint, token, tls::client_config(trust)?);
    Ok(match pin {
        Some(pin) => client.with_pin(pin, hint),
        None => client,
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `cairnctl remote …`.
pub fn run(command: &RemoteCommand, global: &Global) -> anyhow::Result<()> {
    let path = config::path()?;
    let mut config = Config::load(&path)?;
    match command {
        RemoteCommand::List => {
            if global.json {
                let list: Vec<_> = config
                    .remotes
                    .iter()
                    .map(|(name, r)| {
                        json!({"name": name, "url": r.url, "fingerprint": r.fingerprint,
                               "default": config.default_remote.as_ref() == Some(name)})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = config
                    .remotes
                    .iter()
                    .map(|(name, r)| {
                        let default = config.default_remote.as_ref() == Some(name);
                        vec![
                            format!("{name}{}", if default { " *" } else { "" }),
                            r.url.clone(),
                            r.fingerprint.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["NAME", "URL", "FINGERPRINT"], &rows));
            }
            return Ok(());
        }
        RemoteCommand::Remove { name } => {
            if config.remotes.remove(name).is_none() {
                bail!("no remote {name:?}");
            }
            if config.default_remote.as_ref() == Some(name) {
                config.default_remote = None;
            }
        }
        RemoteCommand::Switch { name } => {
            if !config.remotes.contains_key(name) {
                bail!("no remote {name:?}: `cairnctl remote add {name} URL` first");
            }
            config.default_remote = Some(name.clone());
        }
        RemoteCommand::Add { name, url, default } => {
            valid_name(name)?;
            if config.remotes.contains_key(name) {
                bail!("remote {name:?} exists: `cairnctl remote remove {name}` first");
            }
            let remote = add(url, global)?;
            config.remotes.insert(name.clone(), remote);
            if *default || config.default_remote.is_none() {
                config.default_remote = Some(name.clone());
            }
        }
    }
    config.save(&path)?;
    if global.json {
        println!("true");
    } else {
        match command {
            RemoteCommand::Add { name, .. } => println!(
                "added remote {name}{}",
                if config.default_remote.as_ref() == Some(name) {
                    " (the default)"
                } else {
                    ""
                }
            ),
            RemoteCommand::Remove { name } => println!("removed remote {name}"),
            RemoteCommand::Switch { name } => println!("default remote: {name}"),
            RemoteCommand::List => {}
        }
    }
    Ok(())
}

/// The remote `url` is, once its certificate is accepted and the token works.
fn add(url: &str, global: &Global) -> anyhow::Result<Remote> {
    let endpoint = Endpoint::parse(url)?;
    let token = global
        .token
        .clone()
        .or_else(|| std::env::var("CAIRN_TOKEN").ok().filter(|t| !t.is_empty()))
        .ok_or_else(|| anyhow!("pass the host's API token: --token TOKEN (or CAIRN_TOKEN)"))?;
    let runtime = runtime()?;
    let seen = runtime
        .block_on(tls::fetch_fingerprint(&endpoint.host, endpoint.port))
        .map_err(|e| anyhow!("cannot reach {}:{}: {e}", endpoint.host, endpoint.port))?;
    match &global.accept_fingerprint {
        Some(given) => {
            let given = tls::normalize_fingerprint(given)?;
            if given != seen {
                bail!(
                    "the server's certificate is {seen}, not {given}: not added (someone may \
                     be in between, or it is another host)"
                );
            }
        }
        None => {
            eprintln!("The certificate of {url} has the fingerprint\n  {seen}");
            match prompt::confirm("Is it the one the host's console shows? Trust it?") {
                Some(true) => {}
                Some(false) => bail!("not added"),
                None => bail!(
                    "not added: nobody to ask on a terminal; if {seen} is the host's (its \
                     console prints it), pass --accept-fingerprint {seen}"
                ),
            }
        }
    }
    // The token is checked now rather than at the first command.
    let pin = Pin::new(seen.clone());
    let client = Client::new(
        endpoint,
        token.clone(),
        tls::client_config(Trust::Fingerprint(pin))?,
    );
    runtime
        .block_on(client.call("host.info", vec![]))
        .context("the host refused the token")?;
    Ok(Remote {
        url: url.to_string(),
        token,
        fingerprint: seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["lab", "prod-1", "a_b", "X9"] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a:b", "a b", "a/b", &"x".repeat(65)] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_normalize() {
        let hex = "0123456789abcdef".repeat(4);
        let want = format!("SHA256:{hex}");
        for given in [
            want.clone(),
            format!("sha256:{}", hex.to_uppercase()),
            hex.clone(),
            hex.as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(":"),
        ] {
            assert_eq!(tls::normalize_fingerprint(&given).unwrap(), want, "{given}");
        }
        for bad in [
            "",
            "SHA256:",
            "SHA256:abc",
            &format!("MD5:{hex}"),
            &format!("{hex}zz"),
        ] {
            assert!(tls::normalize_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_fingerprint_never_leaves_cairnctl() {
        let e = connect(&Global {
            url: Some("https://127.0.0.1:1".into()),
            token: Some("t".into()),
            accept_fingerprint: Some("bad".into()),
            ..Global::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("not a certificate fingerprint"), "{e}");
    }
}
