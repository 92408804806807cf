//! API tokens: host.toml stores only `sha256:<hex>` of each token.

use std::io::Read;

use sha2::{Digest, Sha256};

/// A new token: 32 random bytes from the kernel, hex-encoded (64 characters).
pub fn generate() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(crate::hex(&buf))
}

/// The `sha256:<64 hex>` form of a token, as host.toml stores it.
pub fn digest(token: &str) -> String {
    let sum = Sha256::digest(token.as_bytes());
    format!("sha256:{}", crate::hex(&sum))
}

/// Parses `sha256:<64 hex>` into the 32 raw bytes, or `None` when it is not that form.
pub fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// True when `token` hashes to `expected`. The comparison takes the same time wherever the
/// digests differ, so a network client learns nothing from timing.
pub fn matches(token: &str, expected: &[u8; 32]) -> bool {
    let sum = Sha256::digest(token.as_bytes());
    sum.iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_matches() {
        let d = digest("secret");
        assert_eq!(
            d,
            "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        let raw = parse_digest(&d).expect("valid digest");
        assert!(matches("secret", &raw));
        assert!(!matches("Secret", &raw));
    }

    #[test]
    fn bad_digests_are_rejected() {
        assert_eq!(parse_digest("md5:abcd"), None);
        assert_eq!(parse_digest("sha256:abcd"), None);
        assert_eq!(parse_digest(&format!("sha256:{}", "zz".repeat(32))), None);
    }
}
