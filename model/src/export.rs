//! Volumes exported as iSCSI LUNs (`export.*`, served by stord through the kernel's LIO
//! target): what is asked for and what is answered, and the rules both sides check.
//!
//! An export is one iSCSI target per volume (its IQN made from the host's name and the
//! export's), one LUN (0), a portal, and the initiators allowed in, each by its IQN and, with
//! CHAP, a user and secret. Secrets go in and are never answered back.

use serde::{Deserialize, Serialize};

use crate::config::{NAME_MAX, is_name};

/// The naming authority of the targets Cairn makes: `iqn.2026-12.org.cairn:HOST:NAME`.
pub const TARGET_IQN_PREFIX: &str = "iqn.2026-12.org.cairn";
/// The iSCSI port when an export names none (RFC 7143's well-known port).
pub const DEFAULT_PORT: u16 = 3260;
/// LIO takes CHAP secrets of 12 to 16 characters (RFC 3720 asks for at least 12 bytes; LIO's
/// own limit is 16 for interoperability with initiators such as Windows').
pub const CHAP_SECRET_MIN: usize = 12;
pub const CHAP_SECRET_MAX: usize = 16;
/// LIO's `auth/userid` holds at most 255 bytes; a user name is printable ASCII, no spaces.
pub const CHAP_USER_MAX: usize = 255;
/// RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes.
pub const IQN_MAX: usize = 223;

/// One initiator an export lets in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitiatorSpec {
    /// The initiator's iSCSI name (`iqn.YYYY-MM.reversed.domain[:anything]`).
    pub iqn: String,
    /// CHAP: the user the initiator logs in as, and its secret (12 to 16 characters). Both or
    /// neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_secret: Option<String>,
}

/// An export to make (`export.create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// `POOL/NAME`.
    pub volume: String,
    /// The export's name (default: the volume's NAME); the last part of its target's IQN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub initiators: Vec<InitiatorSpec>,
    /// The TCP port of its portal on every address (default 3260).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// An initiator as answered: no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitiatorInfo {
    pub iqn: String,
    /// The CHAP user, when it logs in with CHAP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_user: Option<String>,
}

/// An export as stord serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportInfo {
    pub name: String,
    /// `POOL/NAME`.
    pub volume: String,
    /// The target's IQN initiators log in to.
    pub iqn: String,
    /// `ADDRESS:PORT` it listens on (`0.0.0.0:3260`: every address).
    pub portal: String,
    pub lun: u32,
    pub initiators: Vec<InitiatorInfo>,
    /// Thin provisioning advertised to initiators: UNMAP and WRITE SAME with UNMAP free
    /// blocks, READ CAPACITY(16) says so (LBPME).
    pub thin: bool,
    /// `fileio` (a file volume) or `iblock` (a block device): LIO's backstore.
    pub backstore: String,
    /// Whether the kernel serves it now (false: recorded, but it could not be made again
    /// after a restart; the log says why).
    pub active: bool,
}

/// Whether `s` is an iSCSI qualified name as RFC 3720 3.2.6.3.1 has it, in the lower case
/// RFC 3722 (stringprep) folds names to: `iqn.YYYY-MM.` then a reversed domain name, then
/// optionally `:` and anything of `[a-z0-9.:-]`. Cairn takes only `iqn.` names (no `eui.`,
/// `naa.`), as Proxmox and TrueNAS do.
pub fn check_iqn(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} is not an iSCSI name (iqn.YYYY-MM.domain[:id]): {why}"
        ))
    };
    if s.len() > IQN_MAX {
        return bad(&format!("longer than {IQN_MAX} bytes"));
    }
    let Some(rest) = s.strip_prefix("iqn.") else {
        return bad("it does not start with \"iqn.\"");
    };
    let date = rest.get(..7).unwrap_or("");
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let month_ok = date
        .get(5..7)
        .and_then(|m| m.parse::<u8>().ok())
        .is_some_and(|m| (1..=12).contains(&m));
    if date.len() != 7 || !digits(&date[..4]) || date.as_bytes()[4] != b'-' || !month_ok {
        return bad("no YYYY-MM date after \"iqn.\"");
    }
    let Some(after) = rest[7..].strip_prefix('.') else {
        return bad("no '.' and naming authority after the date");
    };
    let (authority, _) = after.split_once(':').unwrap_or((after, ""));
    if authority.is_empty()
        || authority.split('.').any(|label| {
            label.is_empty()
                || label.starts_with('-')
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    {
        return bad("the naming authority is not a reversed domain name in lower case");
    }
    if let Some(c) = after
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".:-".contains(*c)))
    {
        return bad(&format!("{c:?} is not one of a-z 0-9 . : -"));
    }
    Ok(())
}

/// Checks a CHAP user and secret: printable ASCII without spaces (what LIO's configfs and the
/// iSCSI text keys carry), the secret 12 to 16 characters.
pub fn check_chap(user: &str, secret: &str) -> Result<(), String> {
    let printable = |t: &str| t.bytes().all(|b| b.is_ascii_graphic());
    if user.is_empty() || user.len() > CHAP_USER_MAX || !printable(user) {
        return Err(format!(
            "CHAP user {user:?} is not 1 to {CHAP_USER_MAX} printable characters without spaces"
        ));
    }
    let n = secret.chars().count();
    if !(CHAP_SECRET_MIN..=CHAP_SECRET_MAX).contains(&n) || !printable(secret) {
        // The secret itself is never echoed back, not even in an error.
        return Err(format!(
            "the CHAP secret of {user:?} is {n} characters: LIO takes {CHAP_SECRET_MIN} to \
             {CHAP_SECRET_MAX} printable ones without spaces"
        ));
    }
    Ok(())
}

/// Checks an export's name: a Cairn name (`[a-z0-9][a-z0-9-]*`, at most 63).
pub fn check_name(name: &str) -> Result<(), String> {
    if is_name(name, NAME_MAX) {
        Ok(())
    } else {
        Err(format!(
            "export name {name:?} is not [a-z0-9][a-z0-9-]* of at most {NAME_MAX}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iqns_are_checked_as_rfc_3720_has_them() {
        for good in [
            "iqn.1993-08.org.debian:01:2b5f3a7c9d1e",
            "iqn.2026-12.org.cairn:h1:db",
            "iqn.2004-10.com.ubuntu",
            "iqn.1991-05.com.microsoft:win-box.example.local",
        ] {
            assert_eq!(check_iqn(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("eui.02004567A425678D", "does not start with \"iqn.\""),
            ("iqn.93-08.org.debian", "no YYYY-MM date"),
            ("iqn.1993-13.org.debian", "no YYYY-MM date"),
            ("iqn.1993-08", "no '.' and naming authority"),
            (
                "iqn.1993-08.Org.Debian:x",
                "not a reversed domain name in lower case",
            ),
            ("iqn.1993-08..x", "not a reversed domain name"),
            ("iqn.1993-08.org.debian:a b", "' ' is not one of"),
            ("iqn.1993-08.org.debian:a/b", "'/' is not one of"),
        ] {
            let e = check_iqn(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("iqn.1993-08.org.debian:{}", "a".repeat(IQN_MAX));
        assert!(check_iqn(&long).unwrap_err().contains("longer than 223"));
    }

    #[test]
    fn chap_secrets_are_12_to_16_characters_and_never_echoed() {
        assert_eq!(check_chap("alice", "twelve-chars"), Ok(()));
        assert_eq!(check_chap("alice", "sixteen-chars-ok"), Ok(()));
        for secret in ["short-11chr", "seventeen-chars-x", "has a space!"] {
            let e = check_chap("alice", secret).unwrap_err();
            assert!(e.contains("12 to 16"), "{e}");
            assert!(!e.contains(secret), "the secret leaked: {e}");
        }
        assert!(
            check_chap("", "twelve-chars")
                .unwrap_err()
                .contains("CHAP user")
        );
        assert!(
            check_chap("a b", "twelve-chars")
                .unwrap_err()
                .contains("CHAP user")
        );
    }

    #[test]
    fn specs_take_only_known_members() {
        let spec: ExportSpec = serde_json::from_str(
            r#"{"volume":"p/v","initiators":[{"iqn":"iqn.1993-08.org.debian:01:x",
                "chap_user":"u","chap_secret":"twelve-chars"}]}"#,
        )
        .unwrap();
        assert_eq!((spec.name, spec.port), (None, None));
        assert!(
            serde_json::from_str::<ExportSpec>(r#"{"volume":"p/v","initiators":[],"lun":1}"#)
                .is_err()
        );
    }
}
