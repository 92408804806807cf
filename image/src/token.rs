//! The API token of a built image: the plain token stays on the build host
//! (target/appliance/token, mode 0600); only its sha256 goes into the image's host.toml.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A new token (`model::token::generate`: 32 random bytes, hex).
pub fn generate() -> Result<String> {
    model::token::generate().context("reading /dev/urandom")
}

/// The name of the token `image build` adds to a host.toml.
pub const BUILD_TOKEN_NAME: &str = "image";

/// A host.toml that opens with the build's token (`digest`) beside the tokens it names itself,
/// which are kept as they are: an operator's own tokens must keep working in the image they
/// build. The build's token is the `[[api.token]]` table named [`BUILD_TOKEN_NAME`]: a table of
/// that name (a former build's, say) gets the new digest, else one is appended.
pub fn with_build_token(config: &str, digest: &str) -> String {
    // Each table from its header line to the next; the lines before the first header first.
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in config.lines() {
        if header(line).is_some() {
            blocks.push(Vec::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push(line);
        }
    }
    let mut replaced = false;
    let mut out = String::with_capacity(config.len() + 128);
    for block in &blocks {
        let is_build_token = block.first().and_then(|l| header(l)).as_deref()
            == Some("[[api.token]]")
            && block
                .iter()
                .any(|l| value_of(l, "name") == Some(&format!("\"{BUILD_TOKEN_NAME}\"")));
        for line in block {
            match value_of(line, "sha256") {
                Some(_) if is_build_token => {
                    let key = line.split('=').next().unwrap_or("sha256 ");
                    out.push_str(&format!("{key}= \"{digest}\""));
                    replaced = true;
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&format!(
            "\n# Added by `image build`: the plain token is in the build's token file.\n\
             [[api.token]]\nname = \"{BUILD_TOKEN_NAME}\"\nsha256 = \"{digest}\"\n"
        ));
    }
    out
}

/// A table header (`[x]`, `[[x]]`) without blanks or comment, or `None` for any other line.
fn header(line: &str) -> Option<String> {
    let t = line.trim();
    if !t.starts_with('[') {
        return None;
    }
    Some(
        t.split('#')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    )
}

/// The value of `key = value` on this line (comment removed, trimmed), if the line sets `key`.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (k, v) = line.split_once('=')?;
    if k.trim() != key {
        return None;
    }
    Some(v.split('#').next().unwrap_or("").trim())
}

/// The token a build uses: the one in `file` when it exists (so runs can reuse one token), else
/// `given` or a new one, saved to `file` when one is named.
pub fn obtain(given: Option<&str>, file: Option<&Path>) -> Result<String> {
    if let Some(path) = file
        && path.exists()
    {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let tok = text.trim().to_string();
        check(&tok).with_context(|| format!("the token in {}", path.display()))?;
        if given.is_some_and(|g| g != tok) {
            bail!(
                "--token differs from the token in {}; give one of them",
                path.display()
            );
        }
        return Ok(tok);
    }
    let tok = match given {
        Some(t) => {
            check(t)?;
            t.to_string()
        }
        None => generate()?,
    };
    if let Some(path) = file {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        save(path, &tok)?;
    }
    Ok(tok)
}

/// Writes the plain token readable by its owner only.
pub fn save(path: &Path, token: &str) -> Result<()> {
    // Remove first: OpenOptions::mode only applies when the file is created.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A token given on the command line must survive a URL (`https://api:TOKEN@…`) and a header.
pub fn check(token: &str) -> Result<()> {
    if token.len() < 8 {
        bail!("--token must be at least 8 characters");
    }
    if !token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
    {
        bail!("--token may only contain A-Z a-z 0-9 - _ . ~ (it is used inside URLs)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn the_configs_own_tokens_are_kept_and_the_builds_is_added() {
        let cfg = "[host]\nhostname = \"h\"\n\n[[api.token]]\nname = \"dev\"\nsha256 = \"sha256:abc\"\n\n[[ api.token ]] # ops\nname = \"ops\"\nsha256 = \"sha256:def\"\n\n[[network]]\nname = \"lan\"\n";
        let out = with_build_token(cfg, D);
        assert!(
            out.starts_with(cfg),
            "the config comes through unchanged: {out}"
        );
        assert!(out.ends_with(&format!(
            "[[api.token]]\nname = \"image\"\nsha256 = \"{D}\"\n"
        )));
        assert_eq!(out.matches("[[api.token]]").count(), 2);
    }

    #[test]
    fn a_former_builds_token_gets_the_new_digest() {
        let cfg = "[api]\nport = 8443\n[[api.token]]\nname = \"admin\"\nsha256 = \"sha256:abc\"\n[[api.token]]\nname = \"image\" # the build's\nsha256 = \"sha256:old\"\n[[network]]\nname = \"lan\"\nsha256 = \"not a token\"\n";
        let out = with_build_token(cfg, D);
        assert!(
            out.contains("name = \"admin\"\nsha256 = \"sha256:abc\"\n"),
            "{out}"
        );
        assert!(
            out.contains(&format!("# the build's\nsha256 = \"{D}\"\n")),
            "{out}"
        );
        assert!(!out.contains("sha256:old"), "{out}");
        assert!(
            out.contains("sha256 = \"not a token\""),
            "only the token table: {out}"
        );
        assert_eq!(out.matches("[[api.token]]").count(), 2);
    }

    #[test]
    fn a_token_is_appended_when_there_is_none() {
        let out = with_build_token("[host]\nhostname = \"h\"\n", D);
        assert!(out.ends_with(&format!(
            "[[api.token]]\nname = \"image\"\nsha256 = \"{D}\"\n"
        )));
    }

    #[test]
    fn a_token_file_is_made_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("cairn-token-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = dir.join("sub/token");
        let first = obtain(None, Some(&file)).unwrap();
        assert_eq!(obtain(None, Some(&file)).unwrap(), first);
        assert_eq!(obtain(Some(&first), Some(&file)).unwrap(), first);
        assert!(obtain(Some("another-token"), Some(&file)).is_err());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&file, "bad token\n").unwrap();
        assert!(obtain(None, Some(&file)).is_err());
        assert_eq!(obtain(Some("given-token"), None).unwrap(), "given-token");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generated_tokens_are_hex_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        check(&a).unwrap();
        assert!(check("has space").is_err());
        assert!(check("short").is_err());
    }
}
