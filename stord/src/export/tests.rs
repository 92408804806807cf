//! Exports against a simulated configfs tree (a temporary directory: the same steps, the same
//! rollback) and real dir pools; the kernel's LIO is exercised by ci/e2e/test_export.py.

use std::path::Path;

use model::config::HostConfig;
use model::storage::{PoolSpec, VolumeSpec};
use testkit::TempDir;

use super::configfs::{Acl, Backstore, Configfs, Plan};
use super::*;

const INITIATOR: &str = "iqn.1993-08.org.debian:01:abc";
const OTHER: &str = "iqn.1993-08.org.debian:01:def";

fn config() -> HostConfig {
    model::config::parse(
        "host.toml",
        "[host]\nhostname = \"h\"\n[host.management]\ninterface = \"lo\"\ndhcp = true\n",
    )
    .unwrap()
}

/// Every path under `root`, relative, with what links point at (markers left out).
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if rel.ends_with(".made") || rel.ends_with(".default") {
                continue;
            }
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                let to = std::fs::read_link(&path).unwrap();
                out.push(format!(
                    "{rel} -> {}",
                    to.strip_prefix(root).unwrap().display()
                ));
            } else {
                out.push(rel);
                if t.is_dir() {
                    walk(root, &path, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A tree as the kernel shows it before any export: `core` only (`iscsi` comes when the
/// fabric is first used).
fn kernel_root(root: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(root.join("core")).unwrap();
    root.to_path_buf()
}

fn sample_plan(chap: bool) -> Plan {
    Plan {
        name: "db".into(),
        backstore: Backstore::Fileio {
            path: "/pool/db.raw".into(),
            size: 1 << 30,
        },
        serial: "0123".into(),
        iqn: "iqn.2026-12.org.cairn:h:db".into(),
        port: 3260,
        acls: [INITIATOR, OTHER]
            .iter()
            .map(|iqn| Acl {
                iqn: iqn.to_string(),
                chap: chap.then(|| ("alice".into(), "twelve-chars".into())),
            })
            .collect(),
    }
}

#[test]
fn an_export_is_made_in_lios_order_and_taken_down_whole() {
    let t = TempDir::new("export-order");
    kernel_root(t.path());
    let fs = Configfs::simulated(t.path());
    assert!(fs.make(&sample_plan(true)).unwrap(), "a file is thin");
    let made = tree(t.path());
    let tpg = "iscsi/iqn.2026-12.org.cairn:h:db/tpgt_1";
    let object = "core/fileio_3260/db";
    for want in [
        format!("{object}/control"),
        format!("{tpg}/lun/lun_0/db -> {object}"),
        format!("{tpg}/np/0.0.0.0:3260"),
        format!("{tpg}/acls/{INITIATOR}/lun_0/lun_0 -> {tpg}/lun/lun_0"),
        format!("{tpg}/acls/{OTHER}/auth/password"),
    ] {
        assert!(made.contains(&want), "{want} missing from {made:#?}");
    }
    let read = |rel: &str| std::fs::read_to_string(t.path().join(rel)).unwrap();
    assert_eq!(
        read(&format!("{object}/control")),
        "fd_dev_name=/pool/db.raw,fd_dev_size=1073741824,fd_buffered_io=1"
    );
    for attr in ["emulate_tpu", "emulate_tpws", "unmap_zeroes_data"] {
        assert_eq!(read(&format!("{object}/attrib/{attr}")), "1", "{attr}");
    }
    assert_eq!(read(&format!("{tpg}/attrib/authentication")), "1");
    assert_eq!(read(&format!("{tpg}/attrib/generate_node_acls")), "0");
    assert_eq!(
        read(&format!("{tpg}/acls/{INITIATOR}/auth/userid")),
        "alice"
    );
    assert_eq!(read(&format!("{tpg}/enable")), "1");
    assert!(fs.is_whole(&sample_plan(true)));
    // A second make of the same export is refused at its first mkdir, and leaves the first.
    assert!(fs.make(&sample_plan(true)).is_err());
    assert_eq!(tree(t.path()), made);

    fs.remove(Some("iqn.2026-12.org.cairn:h:db"), Some(object))
        .unwrap();
    // The shared parents stay (another export may use them); nothing of this one does.
    assert_eq!(tree(t.path()), ["core", "core/fileio_3260", "iscsi"]);
}

#[test]
fn a_failure_at_any_step_stops_there_and_undoes_everything_in_reverse() {
    let t = TempDir::new("export-rollback");
    kernel_root(t.path());
    let mut failures = 0;
    for n in 0.. {
        let fs = Configfs::simulated(t.path()).failing_at(n);
        let (made, journal) = fs.make_journaled(&sample_plan(true));
        match made {
            Ok(_) => break,
            Err(e) => {
                failures += 1;
                assert!(e.to_string().contains("failure injected"), "{e}");
            }
        }
        // Nothing ran after the failed step.
        let failed = journal
            .iter()
            .position(|j| j.starts_with("FAILED"))
            .unwrap();
        assert!(
            journal[failed + 1..].iter().all(|j| j.starts_with("undo ")),
            "step {n}: {journal:#?}"
        );
        // What was made is undone, last first.
        let made: Vec<String> = journal[..failed]
            .iter()
            .filter_map(|j| {
                j.strip_prefix("mkdir ")
                    .map(|p| format!("undo rmdir {p}"))
                    .or_else(|| {
                        j.strip_prefix("link ")
                            .map(|p| format!("undo unlink {}", p.split(" -> ").next().unwrap()))
                    })
            })
            .rev()
            .collect();
        assert_eq!(journal[failed + 1..].to_vec(), made, "step {n}");
        assert_eq!(tree(t.path()), ["core"], "step {n} left something");
    }
    assert!(failures > 20, "{failures} steps");
}

#[test]
fn a_failed_control_write_stops_before_any_attribute() {
    // Debian's 6.1 oopsed on emulate_tpu after a failed control write.
    let t = TempDir::new("export-control");
    kernel_root(t.path());
    let fs = Configfs::simulated(t.path()).failing_at(2);
    let (made, journal) = fs.make_journaled(&sample_plan(false));
    assert!(made.is_err());
    assert!(
        journal[2].starts_with("FAILED write core/fileio_3260/db/control"),
        "{journal:#?}"
    );
    assert!(
        !journal.iter().any(|j| j.contains("attrib")),
        "{journal:#?}"
    );
}

fn spec(volume: &str, initiators: &[(&str, Option<(&str, &str)>)]) -> ExportSpec {
    ExportSpec {
        volume: volume.into(),
        name: None,
        initiators: initiators
            .iter()
            .map(|(iqn, chap)| InitiatorSpec {
                iqn: iqn.to_string(),
                chap_user: chap.map(|c| c.0.to_string()),
                chap_secret: chap.map(|c| c.1.to_string()),
            })
            .collect(),
        port: None,
    }
}

#[test]
fn requests_are_checked_whole() {
    let chap = Some(("alice", "twelve-chars"));
    let ok = check(&spec("p/db", &[(INITIATOR, chap)]), "Host_1").unwrap();
    assert_eq!(ok.record.iqn, "iqn.2026-12.org.cairn:host-1:db");
    assert_eq!(ok.record.port, 3260);
    for (bad, why) in [
        (spec("db", &[(INITIATOR, None)]), "is not POOL/VOLUME"),
        (spec("p/db", &[]), "initiators: none given"),
        (spec("p/db", &[("iqn.x", None)]), "initiators[0].iqn"),
        (
            spec("p/db", &[(INITIATOR, None), (INITIATOR, None)]),
            "listed twice",
        ),
        (
            spec("p/db", &[(INITIATOR, Some(("alice", "short")))]),
            "12 to 16",
        ),
        (
            spec("p/db", &[(INITIATOR, chap), (OTHER, None)]),
            "1 of 2 have CHAP",
        ),
    ] {
        let e = check(&bad, "h").unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    let mut half = spec("p/db", &[(INITIATOR, None)]);
    half.initiators[0].chap_user = Some("alice".into());
    assert!(
        check(&half, "h")
            .unwrap_err()
            .to_string()
            .contains("both or neither")
    );
    let mut named = spec("p/db", &[(INITIATOR, None)]);
    named.name = Some("Bad_Name".into());
    assert!(
        check(&named, "h")
            .unwrap_err()
            .to_string()
            .contains("export name")
    );
    named.name = Some("ok".into());
    named.port = Some(0);
    assert!(
        check(&named, "h")
            .unwrap_err()
            .to_string()
            .contains("port 0")
    );
}

fn pools_with_volume(t: &TempDir) -> Pools {
    let mut pools = Pools::load(&config(), &t.path().join("state"));
    pools
        .create_pool(
            // From JSON, as the API gives it: the optional members stay unset.
            serde_json::from_value::<PoolSpec>(serde_json::json!({
                "name": "p",
                "kind": "dir",
                "path": t.path().join("pool").display().to_string(),
            }))
            .unwrap(),
        )
        .unwrap();
    for v in ["p/db", "p/web"] {
        pools
            .create_volume(&VolumeSpec {
                volume: v.into(),
                size: "64M".into(),
                full: None,
            })
            .unwrap();
    }
    pools
}

#[test]
fn an_export_holds_its_volume_is_recorded_and_made_again_after_a_restart() {
    let t = TempDir::new("export-records");
    let kernel = kernel_root(&t.path().join("kernel"));
    let state = t.path().join("state");
    let mut pools = pools_with_volume(&t);
    let mut exports = Exports::load(&state, "h", Configfs::simulated(&kernel));
    let chap = Some(("alice", "twelve-chars"));
    let info = exports
        .create(&spec("p/db", &[(INITIATOR, chap)]), &mut pools)
        .unwrap();
    assert_eq!(info.iqn, "iqn.2026-12.org.cairn:h:db");
    assert_eq!((info.lun, info.thin, info.active), (0, true, true));
    assert_eq!(info.backstore, "fileio");
    assert_eq!(info.initiators[0].chap_user.as_deref(), Some("alice"));
    assert!(
        !serde_json::to_string(&info)
            .unwrap()
            .contains("twelve-chars")
    );
    assert_eq!(exports.get("db").unwrap(), info);
    assert_eq!(pools.volume_info("p/db").unwrap().used_by, ["export:db"]);
    let e = pools.delete_volume("p/db").unwrap_err().to_string();
    assert!(e.contains("export:db"), "{e}");

    // Conflicts and unknowns, and nothing made by them.
    let before = tree(&kernel);
    let mut again = spec("p/web", &[(INITIATOR, None)]);
    again.name = Some("db".into());
    assert!(matches!(
        exports.create(&again, &mut pools),
        Err(StoreError::Conflict(_))
    ));
    let mut twice = spec("p/db", &[(INITIATOR, None)]);
    twice.name = Some("db2".into());
    assert!(matches!(
        exports.create(&twice, &mut pools),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        exports.create(&spec("p/nope", &[(INITIATOR, None)]), &mut pools),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(tree(&kernel), before);

    // The records are root's alone (they hold the secrets).
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(state.join("exports"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");

    // A reboot: the kernel's tree is gone; a leftover target of Cairn's is there instead.
    std::fs::remove_dir_all(&kernel).unwrap();
    kernel_root(&kernel);
    std::fs::create_dir_all(kernel.join("iscsi/iqn.2026-12.org.cairn:h:old/tpgt_1")).unwrap();
    let mut exports = Exports::load(&state, "h", Configfs::simulated(&kernel));
    exports.reconcile(&mut pools);
    assert!(exports.get("db").unwrap().active);
    let now = tree(&kernel);
    assert!(!now.iter().any(|p| p.contains(":old")), "{now:#?}");
    assert!(Configfs::simulated(&kernel).is_whole(&plan_of(&exports, &pools)));
    // A second reconcile changes nothing.
    exports.reconcile(&mut pools);
    assert_eq!(tree(&kernel), now);

    exports.delete("db", &mut pools).unwrap();
    assert!(matches!(exports.get("db"), Err(StoreError::NotFound(_))));
    assert!(
        !tree(&kernel).iter().any(|p| p.contains("db")),
        "{:#?}",
        tree(&kernel)
    );
    pools.delete_volume("p/db").unwrap();
    assert!(
        Exports::load(&state, "h", Configfs::simulated(&kernel))
            .list()
            .is_empty()
    );
}

fn plan_of(exports: &Exports, pools: &Pools) -> Plan {
    let r = &exports.records["db"];
    plan(
        r,
        backstore(&pools.volume_info(&r.volume).unwrap()).unwrap(),
    )
}

#[test]
fn a_guests_volume_is_not_exported() {
    let t = TempDir::new("export-in-use");
    let kernel = kernel_root(&t.path().join("kernel"));
    let mut pools = pools_with_volume(&t);
    pools.open_volume("p/web", "vm:web").unwrap();
    let mut exports = Exports::load(&t.path().join("state"), "h", Configfs::simulated(&kernel));
    let e = exports
        .create(&spec("p/web", &[(INITIATOR, None)]), &mut pools)
        .unwrap_err();
    assert!(e.to_string().contains("in use by vm:web"), "{e}");
    assert_eq!(tree(&kernel), ["core"]);
}
