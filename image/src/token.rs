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

/// Rewrites the `[[api.token]]` tables of a host.toml so the image knows one token, "admin",
/// with `digest`. The first token table keeps its layout (whatever key names the schema uses)
/// with the name set to "admin" and every `sha256:` digest replaced; further token tables are
/// dropped so a developer's token from the example cannot open a built image. With no token
/// table at all, one is appended.
pub fn with_single_token(config: &str, digest: &str) -> String {
    let mut out = String::with_capacity(config.len() + 128);
    let mut in_token = false;
    let mut seen_token = false;
    let mut dropping = false;
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            let header: String = t
                .split('#')
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            in_token = header == "[[api.token]]";
            dropping = in_token && seen_token;
            if in_token && !seen_token {
                // Comments in the source (e.g. naming the dev token) no longer apply.
                out.push_str(line);
                out.push_str(
                    "\n# Set by `image build`: the plain token is in the build's token file.\n",
                );
                seen_token = true;
                continue;
            }
        }
        if dropping {
            continue;
        }
        if in_token
            && !t.starts_with('[')
            && let Some(rewritten) = rewrite_token_line(line, digest)
        {
            out.push_str(&rewritten);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !seen_token {
        out.push_str(&format!(
            "\n[[api.token]]\nname = \"admin\"\nsha256 = \"{digest}\"\n"
        ));
    }
    out
}

/// `name = "…"` → `name = "admin"`; any `"sha256:…"` value → `digest`.
fn rewrite_token_line(line: &str, digest: &str) -> Option<String> {
    let (key, value) = line.split_once('=')?;
    let value = value.trim();
    if key.trim() == "name" {
        return Some(format!("{key}= \"admin\""));
    }
    if value.starts_with("\"sha256:") {
        return Some(format!("{key}= \"{digest}\""));
    }
    None
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
    fn first_token_is_rewritten_and_others_dropped() {
        let cfg = "[host]\nhostname = \"h\"\n\n[[api.token]]\nname = \"dev\"\nsha256 = \"sha256:abc\"\n\n[[ api.token ]] # ops\nname = \"ops\"\nsha256 = \"sha256:def\"\n\n[[network]]\nname = \"lan\"\n";
        let out = with_single_token(cfg, D);
        assert!(out.contains(&format!("sha256 = \"{D}\"")), "{out}");
        assert!(out.contains("name = \"admin\""), "{out}");
        assert!(!out.contains("ops") && !out.contains("dev\""), "{out}");
        assert!(out.contains("[[network]]\nname = \"lan\""), "{out}");
        assert_eq!(out.matches("[[api.token]]").count(), 1);
    }

    #[test]
    fn a_token_is_appended_when_there_is_none() {
        let out = with_single_token("[host]\nhostname = \"h\"\n", D);
        assert!(out.ends_with(&format!(
            "[[api.token]]\nname = \"admin\"\nsha256 = \"{D}\"\n"
        )));
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
