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

/// A server certificate's fingerprint as Cairn prints and pins it: `SHA256:` and the lowercase
/// hex of the sha256 of the DER certificate (what the console, `ci/appliance` and cairnctl's
/// pinning show alike).
pub fn cert_fingerprint(der: &[u8]) -> String {
    format!("SHA256:{}", crate::hex(&Sha256::digest(der)))
}

/// [`cert_fingerprint`] of the first `CERTIFICATE` block of a PEM file's text (the leaf, as a
/// chain file lists it first), or `None` when it holds none.
pub fn pem_cert_fingerprint(pem: &str) -> Option<String> {
    use base64::Engine as _;
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let len = pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(cert_fingerprint(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_of_der_and_pem_agree() {
        // Any bytes stand for a DER certificate here: the fingerprint is their digest.
        let der = b"\x30\x03\x02\x01\x05";
        let fp = cert_fingerprint(der);
        assert_eq!(fp, format!("SHA256:{}", crate::hex(&Sha256::digest(der))));
        assert_eq!(fp.len(), 7 + 64);
        assert!(
            fp[7..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_cert_fingerprint(pem).as_deref(), Some(fp.as_str()));
        assert_eq!(
            pem_cert_fingerprint("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
        assert_eq!(pem_cert_fingerprint("no pem"), None);
    }

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
