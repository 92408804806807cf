//! The update bundle (`cairn-<version>.update`), which `image build` writes and init applies:
//! a ustar archive of, in this order, `MANIFEST`, optionally `MANIFEST.minisig` (minisign's
//! signature of it, made with the stock `minisign -S`), and the OS slot's files. The manifest
//! names the version and every part's size and sha256, so a signature over it covers the whole
//! bundle.
//!
//! ```text
//! cairn-update 1
//! version 0.1.1
//! part vmlinuz 8222656 0c6f…
//! part initrd.img 34253708 9a1e…
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The OS and its slots, as `host.info` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotsInfo {
    pub os_version: String,
    /// `a` or `b`; empty on a live system (ISO, PXE).
    pub slot: String,
    /// The version each slot holds.
    pub versions: BTreeMap<String, String>,
    /// The last update's outcome (`ok: …`, `failed: …`, `rolled back by hand …`).
    pub last_update: String,
}

pub const MANIFEST: &str = "MANIFEST";
pub const SIGNATURE: &str = "MANIFEST.minisig";
/// The files of an OS slot, as the boot menu loads them.
pub const PARTS: [&str; 2] = ["vmlinuz", "initrd.img"];
/// A manifest is a few lines; anything larger is not one.
pub const MANIFEST_MAX: u64 = 64 << 10;
const MAGIC: &str = "cairn-update 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: String,
    /// (name, size, sha256 hex) in the order the bundle carries them.
    pub parts: Vec<(String, u64, String)>,
}

impl Manifest {
    pub fn render(&self) -> String {
        let mut out = format!("{MAGIC}\nversion {}\n", self.version);
        for (name, size, sha) in &self.parts {
            let _ = writeln!(out, "part {name} {size} {sha}");
        }
        out
    }

    /// A manifest naming exactly [`PARTS`], each once, with a well-formed digest; errors say
    /// which line.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, MAGIC)) => {}
            _ => return Err(format!("MANIFEST:1: not {MAGIC:?}")),
        }
        let mut version = None;
        let mut parts: Vec<(String, u64, String)> = Vec::new();
        for (i, line) in lines {
            let at = i + 1;
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["version", v] if version.is_none() && is_version(v) => {
                    version = Some(v.to_string())
                }
                ["part", name, size, sha] => {
                    if !PARTS.contains(name) || parts.iter().any(|p| p.0 == *name) {
                        return Err(format!("MANIFEST:{at}: unexpected part {name:?}"));
                    }
                    let size = size
                        .parse()
                        .map_err(|_| format!("MANIFEST:{at}: bad size {size:?}"))?;
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!("MANIFEST:{at}: bad sha256 {sha:?}"));
                    }
                    parts.push((name.to_string(), size, sha.to_ascii_lowercase()));
                }
                [] => {}
                _ => return Err(format!("MANIFEST:{at}: cannot read {line:?}")),
            }
        }
        let version = version.ok_or("MANIFEST: no version line")?;
        if let Some(missing) = PARTS.iter().find(|p| !parts.iter().any(|q| q.0 == **p)) {
            return Err(format!("MANIFEST: no part {missing:?}"));
        }
        Ok(Manifest { version, parts })
    }
}

/// Versions go into GRUB's environment and the console: printable, short, no spaces.
pub fn is_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips() {
        let m = Manifest {
            version: "0.1.1".into(),
            parts: vec![
                ("vmlinuz".into(), 10, "a".repeat(64)),
                ("initrd.img".into(), 20, "b".repeat(64)),
            ],
        };
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
    }

    #[test]
    fn bad_manifests_say_where() {
        let ok = format!(
            "cairn-update 1\nversion 1\npart vmlinuz 1 {0}\npart initrd.img 1 {0}\n",
            "a".repeat(64)
        );
        assert!(Manifest::parse(&ok).is_ok());
        for (text, want) in [
            ("garbage".to_string(), "MANIFEST:1"),
            (ok.replace("version 1", "version a b"), "MANIFEST:2"),
            (
                ok.replace("part vmlinuz", "part ../etc/passwd"),
                "MANIFEST:3: unexpected part",
            ),
            (
                ok.replace("initrd.img 1 ", "initrd.img x "),
                "MANIFEST:4: bad size",
            ),
            (
                ok.replace(&format!("1 {}\n", "a".repeat(64)), "1 zz\n"),
                "bad sha256",
            ),
            (
                ok.replace("part initrd.img", "#"),
                "MANIFEST:4: cannot read",
            ),
            (
                ok.lines().take(3).collect::<Vec<_>>().join("\n"),
                "no part \"initrd.img\"",
            ),
        ] {
            let e = Manifest::parse(&text).unwrap_err();
            assert!(e.contains(want), "{e} (want {want})");
        }
        assert!(!is_version("1 2") && !is_version("") && is_version("0.1.1-next"));
    }
}
