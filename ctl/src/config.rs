//! cairnctl's own config file: the remotes (`cairnctl remote …`) and the default one, at
//! `$XDG_CONFIG_HOME/cairn/config.toml` (else `~/.config/cairn/config.toml`). Tokens live in
//! it, so it is written 0600 in a 0700 directory, whole or not at all.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("neither XDG_CONFIG_HOME nor HOME is set: there is no place for cairnctl's config")]
    NoHome,
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

/// One host cairnctl knows: where, with which token, and which certificate it trusts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    pub url: String,
    pub token: String,
    /// `SHA256:<hex>` of the certificate pinned when it was added.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The remote used when neither --url, --remote nor CAIRN_URL says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_remote: Option<String>,
    #[serde(default, rename = "remote")]
    pub remotes: BTreeMap<String, Remote>,
}

/// Where the config file is.
pub fn path() -> Result<PathBuf, ConfigError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = match var("XDG_CONFIG_HOME") {
        Some(dir) => dir,
        None => var("HOME").ok_or(ConfigError::NoHome)?.join(".config"),
    };
    Ok(base.join("cairn").join("config.toml"))
}

impl Config {
    /// The file at `path`; none there is an empty config.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => {
                return Err(ConfigError::Io {
                    path: name,
                    message: e.to_string(),
                });
            }
        };
        // As ssh does with keys: a token others can read is worth a word, not a refusal.
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!("warning: {name} holds API tokens and others may read it: chmod 600 it");
        }
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: name.clone(),
            message: e.to_string(),
        })?;
        if let Some(d) = &config.default_remote
            && !config.remotes.contains_key(d)
        {
            return Err(ConfigError::Parse {
                path: name,
                message: format!("default_remote = {d:?} names no [remote.{d}]"),
            });
        }
        Ok(config)
    }

    /// Writes the config to `path`: a new file beside it renamed over it, 0600 from the start.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |p: &Path, e: std::io::Error| ConfigError::Io {
            path: p.display().to_string(),
            message: e.to_string(),
        };
        let text = toml::to_string(self).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io(dir, e))?;
        }
        let text = format!(
            "# cairnctl's remotes (cairnctl remote add|list|remove|switch). Holds tokens.\n{text}"
        );
        model::files::write_atomic_mode(path, text.as_bytes(), 0o600).map_err(|e| io(path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(n: u8) -> Remote {
        Remote {
            url: format!("https://192.0.2.{n}:8443"),
            token: format!("tok\"en\\{n}"),
            fingerprint: format!("SHA256:{}", "ab".repeat(32)),
        }
    }

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("cairnctl-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("cairn").join("config.toml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        let mut config = Config::default();
        config.remotes.insert("lab".into(), remote(1));
        config.remotes.insert("prod-1".into(), remote(2));
        config.default_remote = Some("lab".into());
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // Saved again over itself: still whole, nothing left beside it.
        config.remotes.remove("prod-1");
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        let files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["config.toml"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_say_where() {
        let dir = std::env::temp_dir().join(format!("cairnctl-badcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, "default_remote = \"x\"\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("names no [remote.x]"), "{e}");
        std::fs::write(&path, "[remote.a]\nurl = 1\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
