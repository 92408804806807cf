use super::*;

#[test]
fn sources() {
    let s = parse_source("iscsi://10.0.2.2:3261/iqn.2026-12.lan.san:vms").unwrap();
    assert_eq!(s.portals, vec!["10.0.2.2:3261"]);
    assert_eq!(s.iqn, "iqn.2026-12.lan.san:vms");
    assert_eq!((s.lun, s.chap.is_none()), (None, true));

    let s =
        parse_source("iscsi://cairn%0123456789ab@san-a,[fd00::2]:3262/iqn.2026-12.lan.san:vms/2")
            .unwrap();
    assert_eq!(s.portals, vec!["san-a:3260", "[fd00::2]:3262"]);
    assert_eq!(s.lun, Some(2));
    assert_eq!(
        s.chap,
        Some(("cairn".to_string(), "0123456789ab".to_string()))
    );
    // Shown without the secret (pool.info's path, the log).
    assert_eq!(
        s.to_string(),
        "iscsi://cairn@san-a:3260,[fd00::2]:3262/iqn.2026-12.lan.san:vms/2"
    );
    assert!(!format!("{s:?}").contains("0123456789ab"));

    for (bad, why) in [
        ("nfs://x/iqn.2026-12.a:b", "iscsi://"),
        ("iscsi://san", "no /IQN"),
        ("iscsi://san/vms", "not a target name"),
        ("iscsi://san:0/iqn.2026-12.a:b", "HOST[:PORT]"),
        ("iscsi://san:99999/iqn.2026-12.a:b", "HOST[:PORT]"),
        ("iscsi://,san/iqn.2026-12.a:b", "HOST[:PORT]"),
        ("iscsi://san/iqn.2026-12.a:b/x", "LUN \"x\""),
        ("iscsi://san/iqn.2026-12.a:b/1/2", "more after"),
        ("iscsi://user@san/iqn.2026-12.a:b", "USER%SECRET@"),
        ("iscsi://u%short@san/iqn.2026-12.a:b", "12 to 16"),
    ] {
        let e = parse_source(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
    // The secret stays out of the error too.
    let e = parse_source("iscsi://u%0123456789ab@:x/iqn.2026-12.a:b")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("0123456789ab"), "{e}");
}

#[test]
fn discovery_output() {
    let out = "127.0.0.1:3261,1 iqn.2026-12.lan.san:vms\n\
               [::1]:3261,1 iqn.2026-12.lan.san:other\n";
    assert_eq!(
        discovered_targets(out),
        vec!["iqn.2026-12.lan.san:vms", "iqn.2026-12.lan.san:other"]
    );
    assert!(discovered_targets("").is_empty());
}

#[test]
fn secrets_left_out_of_command_lines() {
    let args = [
        "-m",
        "node",
        "-o",
        "update",
        "-n",
        "node.session.auth.password",
        "-v",
        "s3cret",
    ];
    assert_eq!(
        shown(&args),
        "-m node -o update -n node.session.auth.password -v …"
    );
    assert_eq!(
        shown(&["-n", "node.startup", "-v", "manual"]),
        "-n node.startup -v manual"
    );
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A sysfs as the kernel lays one out for session `n` (host `host`) to `iqn` at
/// `addr:port`, with disks `(lun, sdX, dev, sectors)`; LUN 0 the controller, without a disk.
fn fake_session(
    sys: &Path,
    n: u32,
    host: u32,
    iqn: &str,
    addr: &str,
    port: u16,
    disks: &[(u32, &str, &str, u64)],
) {
    let session = sys.join(format!("class/iscsi_session/session{n}"));
    write(session.join("targetname"), &format!("{iqn}\n"));
    let conn = sys.join(format!("class/iscsi_connection/connection{n}:0"));
    write(conn.join("persistent_address"), &format!("{addr}\n"));
    write(conn.join("persistent_port"), &format!("{port}\n"));
    let target = session.join(format!("device/target{host}:0:0"));
    // LUN 0: the target's controller (SCSI type 12), never a disk.
    write(target.join(format!("{host}:0:0:0/type")), "12\n");
    for (lun, sd, dev, sectors) in disks {
        let lun_dir = target.join(format!("{host}:0:0:{lun}"));
        write(lun_dir.join("type"), "0\n");
        std::fs::create_dir_all(lun_dir.join("block").join(sd)).unwrap();
        write(sys.join("block").join(sd).join("dev"), &format!("{dev}\n"));
        write(
            sys.join("block").join(sd).join("size"),
            &format!("{sectors}\n"),
        );
    }
}

#[test]
fn luns_from_sysfs() {
    let dir = testkit::TempDir::new("iscsi-sysfs");
    let sys = dir.path();
    let iqn = "iqn.2026-12.lan.san:vms";
    fake_session(
        sys,
        3,
        2,
        iqn,
        "10.0.2.2",
        3261,
        &[(2, "sdc", "8:32", 4096), (1, "sdb", "8:16", 2048)],
    );
    fake_session(
        sys,
        4,
        3,
        iqn,
        "10.0.2.3",
        3261,
        &[(1, "sdd", "8:48", 2048)],
    );
    fake_session(
        sys,
        5,
        4,
        "iqn.2026-12.lan.san:other",
        "10.0.2.2",
        3261,
        &[(1, "sde", "8:64", 8)],
    );

    assert_eq!(sessions(sys, iqn, "10.0.2.2:3261"), vec![3]);
    assert!(!disks_pending(sys, 3));
    // A disk LUN the scan has found but whose block device is not there yet.
    write(
        sys.join("class/iscsi_session/session4/device/target3:0:0/3:0:0:5/type"),
        "0\n",
    );
    assert!(disks_pending(sys, 4));
    std::fs::remove_dir_all(sys.join("class/iscsi_session/session4/device/target3:0:0/3:0:0:5"))
        .unwrap();
    assert!(!disks_pending(sys, 4));
    assert_eq!(sessions(sys, iqn, "10.0.2.3:3261"), vec![4]);
    assert!(sessions(sys, iqn, "10.0.2.2:3260").is_empty());
    assert_eq!(
        session_disks(sys, 3),
        vec![
            Disk {
                lun: 1,
                block: "sdb".into(),
                dev: "8:16".into(),
                size_bytes: 2048 * 512
            },
            Disk {
                lun: 2,
                block: "sdc".into(),
                dev: "8:32".into(),
                size_bytes: 4096 * 512
            },
        ]
    );

    // A LUN seen through two portals is one volume: its disk on the first portal.
    let pool = IscsiPool {
        name: "san".into(),
        declared: false,
        source: parse_source(&format!("iscsi://10.0.2.2:3261,10.0.2.3:3261/{iqn}")).unwrap(),
        location: PathBuf::from("x"),
        logged_in: vec!["10.0.2.3:3261".into(), "10.0.2.2:3261".into()],
        sys: sys.to_path_buf(),
        dev: sys.join("dev"),
    };
    let disks = pool.disks();
    assert_eq!(
        disks
            .iter()
            .map(|d| (d.lun, d.block.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "sdd"), (2, "sdc")]
    );
    assert_eq!(pool.volume_names(), vec!["lun1", "lun2"]);
    let info = pool.info().unwrap();
    assert_eq!(
        (info.capacity_bytes, info.volumes),
        ((2048 + 4096) * 512, 2)
    );
    assert!(matches!(pool.disk("lun7"), Err(StoreError::NotFound(_))));
    assert!(matches!(pool.disk("disk"), Err(StoreError::NotFound(_))));

    let only_two = IscsiPool {
        source: parse_source(&format!("iscsi://10.0.2.2:3261/{iqn}/2")).unwrap(),
        ..pool
    };
    assert_eq!(only_two.volume_names(), vec!["lun2"]);
}

#[test]
fn luns_are_the_sans_to_make() {
    let mut pool = IscsiPool {
        name: "san".into(),
        declared: false,
        source: parse_source("iscsi://10.0.2.2/iqn.2026-12.lan.san:vms").unwrap(),
        location: PathBuf::from("x"),
        logged_in: Vec::new(),
        sys: PathBuf::from("/nonexistent"),
        dev: PathBuf::from("/nonexistent"),
    };
    for e in [
        pool.create_volume("lun9", 1 << 20, false).unwrap_err(),
        pool.delete_volume("lun1").unwrap_err(),
        pool.grow_volume("lun1", 1 << 30).unwrap_err(),
    ] {
        assert!(
            matches!(&e, StoreError::Conflict(m) if m.contains("the SAN makes LUNs")),
            "{e}"
        );
    }
}
