//! The host's resolver configuration. In the image /etc/resolv.conf is a symlink to
//! `/run/cairn/resolv.conf`, so the root filesystem can stay read-only.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "resolv.conf";

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source} (is the run directory writable?)")]
pub struct ResolvError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The file's text for these servers, in the order given.
pub fn render(servers: &[IpAddr]) -> String {
    let mut text = String::from("# Written by Cairn's netd from host.toml or the DHCP lease.\n");
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    text
}

/// Writes `dir/resolv.conf`, atomically so a resolver never reads half a file. Returns whether
/// the contents changed.
pub fn write(dir: &Path, servers: &[IpAddr]) -> Result<bool, ResolvError> {
    let path = dir.join(FILE_NAME);
    let text = render(servers);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let err = |source| ResolvError {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_servers_in_order() {
        let servers: Vec<IpAddr> = vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ];
        let text = render(&servers);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["nameserver 192.0.2.53", "nameserver 2001:db8::53"]);
    }

    #[test]
    fn write_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("netd-resolv-{}", std::process::id()));
        let servers: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        assert!(write(&dir, &servers).unwrap());
        assert!(!write(&dir, &servers).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join(FILE_NAME)).unwrap(),
            render(&servers)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
