//! `cairnctl export …`: volumes exported as iSCSI LUNs (stord, the kernel's LIO target).

use clap::Subcommand;
use model::api::storage::{ExportCreate, ExportDelete, ExportInfoOf, ExportList};
use model::export::{ExportSpec, InitiatorSpec};
use model::xmlrpc::{EncodeError, Value};

use crate::call::{Call, call};
use crate::output::{member, table, text};

#[derive(Subcommand)]
pub enum ExportCommand {
    /// Every export: its target, portal, initiators.
    List,
    /// One export.
    Info {
        /// The export's name.
        name: String,
    },
    /// Exports the volume POOL/NAME as LUN 0 of its own iSCSI target.
    Create {
        /// The volume, POOL/NAME.
        volume: String,
        /// The export's name, the end of its target's IQN (default: the volume's NAME).
        name: Option<String>,
        /// An initiator let in: IQN, or IQN,USER,SECRET with CHAP (the secret 12 to 16
        /// characters). Commas, not colons: an IQN holds colons itself. Repeat for more.
        #[arg(long = "initiator", required = true, value_parser = parse_initiator)]
        initiators: Vec<InitiatorSpec>,
        /// The portal's TCP port (default 3260).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Stops exporting: sessions end, the volume is free again.
    Delete {
        /// The export's name.
        name: String,
    },
}

/// `IQN` or `IQN,USER,SECRET` (the secret may hold commas itself).
pub fn parse_initiator(s: &str) -> Result<InitiatorSpec, String> {
    let mut parts = s.splitn(3, ',');
    let iqn = parts.next().unwrap_or_default().to_string();
    match (parts.next(), parts.next()) {
        (None, _) => Ok(InitiatorSpec {
            iqn,
            chap_user: None,
            chap_secret: None,
        }),
        (Some(user), Some(secret)) if !user.is_empty() && !secret.is_empty() => Ok(InitiatorSpec {
            iqn,
            chap_user: Some(user.to_string()),
            chap_secret: Some(secret.to_string()),
        }),
        _ => Err("give IQN, or IQN,USER,SECRET for CHAP".into()),
    }
}

pub fn export_call(command: &ExportCommand) -> Result<Call, EncodeError> {
    match command {
        ExportCommand::List => call(ExportList {}),
        ExportCommand::Info { name } => call(ExportInfoOf { name: name.clone() }),
        ExportCommand::Create {
            volume,
            name,
            initiators,
            port,
        } => call(ExportCreate {
            spec: ExportSpec {
                volume: volume.clone(),
                name: name.clone(),
                initiators: initiators.clone(),
                port: *port,
            },
        }),
        ExportCommand::Delete { name } => call(ExportDelete { name: name.clone() }),
    }
}

/// `export.list`: one row per export, its initiators as IQN (CHAP user).
pub fn exports_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let e = e.as_struct();
            let initiators = member(e, "initiators")
                .and_then(Value::as_array)
                .unwrap_or_default()
                .iter()
                .map(|i| {
                    let i = i.as_struct();
                    match member(i, "chap_user") {
                        Some(user) => format!("{} ({})", text(member(i, "iqn")), text(Some(user))),
                        None => text(member(i, "iqn")),
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            let flag = |key: &str, yes: &str| {
                if member(e, key).and_then(Value::as_bool) == Some(true) {
                    yes.to_string()
                } else {
                    "-".to_string()
                }
            };
            vec![
                text(member(e, "name")),
                text(member(e, "volume")),
                text(member(e, "iqn")),
                text(member(e, "portal")),
                flag("thin", "thin"),
                flag("active", "yes"),
                initiators,
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "VOLUME",
            "TARGET",
            "PORTAL",
            "PROVISIONING",
            "ACTIVE",
            "INITIATORS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiators_take_chap_after_commas_as_iqns_hold_colons() {
        let plain = parse_initiator("iqn.1993-08.org.debian:01:abc").unwrap();
        assert_eq!(plain.iqn, "iqn.1993-08.org.debian:01:abc");
        assert_eq!((plain.chap_user, plain.chap_secret), (None, None));
        let chap =
            parse_initiator("iqn.1993-08.org.debian:01:abc,alice,secret,with,commas").unwrap();
        assert_eq!(chap.iqn, "iqn.1993-08.org.debian:01:abc");
        assert_eq!(chap.chap_user.as_deref(), Some("alice"));
        assert_eq!(chap.chap_secret.as_deref(), Some("secret,with,commas"));
        for bad in ["iqn.x,alice", "iqn.x,,secret", "iqn.x,alice,"] {
            assert!(parse_initiator(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn calls_and_the_table() {
        let (m, p) = export_call(&ExportCommand::Create {
            volume: "p/db".into(),
            name: None,
            initiators: vec![
                parse_initiator("iqn.1993-08.org.debian:01:a,alice,twelve-chars").unwrap(),
            ],
            port: Some(3261),
        })
        .unwrap();
        assert_eq!(m, "export.create");
        let spec = p[0].as_struct().unwrap();
        assert_eq!(spec.get("port"), Some(&Value::Int(3261)));
        assert!(spec.get("name").is_none(), "{spec:?}");
        let s = |t: &str| Value::from(t);
        let list = Value::Array(vec![Value::structure([
            ("name", s("db")),
            ("volume", s("p/db")),
            ("iqn", s("iqn.2026-12.org.cairn:h:db")),
            ("portal", s("0.0.0.0:3260")),
            ("lun", Value::Int(0)),
            ("thin", Value::from(true)),
            ("backstore", s("fileio")),
            ("active", Value::from(true)),
            (
                "initiators",
                Value::Array(vec![Value::structure([
                    ("iqn", s("iqn.1993-08.org.debian:01:a")),
                    ("chap_user", s("alice")),
                ])]),
            ),
        ])]);
        assert_eq!(
            exports_table(&list),
            "NAME  VOLUME  TARGET                      PORTAL        PROVISIONING  ACTIVE  INITIATORS\n\
             db    p/db    iqn.2026-12.org.cairn:h:db  0.0.0.0:3260  thin          yes     iqn.1993-08.org.debian:01:a (alice)\n"
        );
    }
}
