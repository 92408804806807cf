//! `bundled:NAME` template sources: a tarball the appliance image carries in
//! [`model::ct::BUNDLED_TEMPLATES_DIR`], with its digest in the file beside it. One resolution
//! serves host.toml's `[[template]]` and `template.import`, so both take the name alone.

use std::path::{Path, PathBuf};

use crate::error::{HostError, HostResult};

/// What an import of `source` reads: `Some((tarball, "sha256:<hex>"))` for `bundled:NAME`
/// (looked up under `dir`), `None` for any other source, which is imported as given. A digest
/// the caller gave (`expected`, empty when none) must be the bundled one.
pub fn resolve(dir: &Path, source: &str, expected: &str) -> HostResult<Option<(PathBuf, String)>> {
    let Some(name) = model::ct::bundled_name(source) else {
        return Ok(None);
    };
    if !model::ct::is_bundled_name(name) {
        return Err(HostError::InvalidArgs(format!(
            "{source:?} does not name a bundled template; expected bundled:NAME with lowercase \
             letters, digits and hyphens"
        )));
    }
    let (tarball, sum_file) = model::ct::bundled_files(dir, name);
    let text = match std::fs::read_to_string(&sum_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HostError::NotFound(format!(
                "this image bundles no template {name:?} ({} is not there; images built with \
                 --debug-shell bundle \"busybox\")",
                tarball.display()
            )));
        }
        Err(e) => {
            return Err(HostError::Failed(format!("{}: {e}", sum_file.display())));
        }
    };
    let digest = text.split_whitespace().next().unwrap_or("");
    let digest = format!(
        "sha256:{}",
        digest.strip_prefix("sha256:").unwrap_or(digest)
    );
    if model::token::parse_digest(&digest).is_none() {
        return Err(HostError::Failed(format!(
            "{} holds no sha256 digest",
            sum_file.display()
        )));
    }
    if !expected.is_empty() && !expected.eq_ignore_ascii_case(&digest) {
        return Err(HostError::InvalidArgs(format!(
            "sha256 {expected:?} is not the bundled template {name:?}'s {digest}"
        )));
    }
    Ok(Some((tarball, digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_names_resolve_to_the_tarball_and_the_digest_beside_it() {
        let dir = std::env::temp_dir().join(format!("cairn-bundled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let hex = "ab".repeat(32);
        std::fs::write(dir.join("busybox.tar.sha256"), format!("{hex}\n")).unwrap();

        assert_eq!(
            resolve(&dir, "/srv/t.tar", "").unwrap(),
            None,
            "not bundled"
        );
        let (tar, digest) = resolve(&dir, "bundled:busybox", "").unwrap().unwrap();
        assert_eq!(tar, dir.join("busybox.tar"));
        assert_eq!(digest, format!("sha256:{hex}"));
        let upper = format!("sha256:{}", hex.to_uppercase());
        assert!(resolve(&dir, "bundled:busybox", &upper).unwrap().is_some());
        let other = format!("sha256:{}", "cd".repeat(32));
        assert!(matches!(
            resolve(&dir, "bundled:busybox", &other),
            Err(HostError::InvalidArgs(_))
        ));
        assert!(matches!(
            resolve(&dir, "bundled:debian", ""),
            Err(HostError::NotFound(_))
        ));
        assert!(matches!(
            resolve(&dir, "bundled:../x", ""),
            Err(HostError::InvalidArgs(_))
        ));
        std::fs::write(dir.join("bad.tar.sha256"), "nothing\n").unwrap();
        assert!(matches!(
            resolve(&dir, "bundled:bad", ""),
            Err(HostError::Failed(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
