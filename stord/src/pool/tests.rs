//! Dir pools on whatever filesystem the temporary directory is (tmpfs or ext4 here: no
//! reflinks, so copies are sparse copies); the xfs reflink path is stord/tests/dir_pool.rs's.

use std::os::unix::fs::FileExt as _;

use super::*;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("stord-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config() -> HostConfig {
    model::config::parse(
        "host.toml",
        "[host]\nhostname = \"h\"\n[host.management]\ninterface = \"lo\"\ndhcp = true\n",
    )
    .unwrap()
}

fn spec(name: &str, path: &Path, overcommit: Option<f64>) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        kind: PoolKind::Dir,
        path: Some(path.display().to_string()),
        overcommit,
        force: None,
        source: None,
        options: None,
    }
}

fn volume(name: &str, size: &str) -> VolumeSpec {
    VolumeSpec {
        volume: name.into(),
        size: size.into(),
        full: None,
    }
}

#[test]
fn volumes_are_sparse_snapshots_keep_the_past_and_clones_copy_it() {
    let s = Scratch::new("volumes");
    let mut pools = Pools::load(&config(), &s.0.join("state"));
    pools.create_pool(spec("p", &s.0.join("p"), None)).unwrap();
    let v = pools.create_volume(&volume("p/a", "1G")).unwrap();
    assert_eq!(v.size_bytes, 1 << 30);
    assert!(
        v.allocated_bytes < 1 << 20,
        "a thin volume allocates nothing: {v:?}"
    );

    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&v.path)
        .unwrap();
    file.write_all_at(b"before", 512 << 20).unwrap();
    pools.snapshot_volume("p/a", "one").unwrap();
    file.write_all_at(b"after!", 512 << 20).unwrap();
    let info = pools.volume_info("p/a").unwrap();
    assert_eq!(info.snapshots.len(), 1);
    assert_eq!(info.snapshots[0].name, "one");
    assert!(
        info.snapshots[0].allocated_bytes < 1 << 20,
        "sparse copy: {info:?}"
    );

    let clone = pools.clone_volume("p/a@one", "p/b").unwrap();
    let mut buf = [0u8; 6];
    std::fs::File::open(&clone.path)
        .unwrap()
        .read_exact_at(&mut buf, 512 << 20)
        .unwrap();
    assert_eq!(&buf, b"before");
    let now = pools.clone_volume("p/a", "p/c").unwrap();
    std::fs::File::open(&now.path)
        .unwrap()
        .read_exact_at(&mut buf, 512 << 20)
        .unwrap();
    assert_eq!(&buf, b"after!");
    assert_eq!(now.size_bytes, 1 << 30);

    let grown = pools.grow_volume("p/a", "2G").unwrap();
    assert_eq!(grown.size_bytes, 2 << 30);
    let e = pools.grow_volume("p/a", "1G").unwrap_err();
    assert!(e.to_string().contains("do not shrink"), "{e}");

    let info = pools.pool_info("p").unwrap();
    assert_eq!((info.volumes, info.provisioned_bytes), (3, 4 << 30));
    pools.delete_volume("p/a").unwrap();
    assert!(
        !s.0.join("p/snapshots/a").exists(),
        "its snapshots go with it"
    );
    assert_eq!(pools.list_volumes("p").unwrap().len(), 2);
}

#[test]
fn bad_requests_change_nothing() {
    let s = Scratch::new("bad");
    let mut pools = Pools::load(&config(), &s.0.join("state"));
    let foreign = s.0.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("data.img"), b"x").unwrap();
    let e = pools.create_pool(spec("f", &foreign, None)).unwrap_err();
    assert!(
        e.to_string()
            .contains("holds files stord did not make (data.img)"),
        "{e}"
    );
    assert!(!foreign.join(".cairn-pool").exists());

    std::fs::write(s.0.join("file"), b"not a disk").unwrap();
    for (bad, want) in [
        (
            PoolSpec {
                name: "Bad".into(),
                ..spec("x", &s.0.join("x"), None)
            },
            "pool name",
        ),
        (
            PoolSpec {
                path: Some("rel".into()),
                ..spec("x", &s.0.join("x"), None)
            },
            "not absolute",
        ),
        (spec("x", &s.0.join("x"), Some(0.0)), "not a ratio above 0"),
        (
            PoolSpec {
                kind: PoolKind::Thin,
                ..spec("x", &s.0.join("file"), None)
            },
            "is not a block device",
        ),
        (
            PoolSpec {
                kind: PoolKind::Thin,
                path: None,
                ..spec("x", &s.0.join("x"), None)
            },
            "needs path",
        ),
    ] {
        let e = pools.create_pool(bad).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    assert!(pools.list_pools().is_empty());

    pools
        .create_pool(spec("p", &s.0.join("p"), Some(2.0)))
        .unwrap();
    let e = pools
        .create_pool(spec("q", &s.0.join("p"), None))
        .unwrap_err();
    assert!(e.to_string().contains("is pool \"p\"'s"), "{e}");
    for (v, want) in [
        (volume("p/a", "0"), "size 0"),
        (volume("p/a", "ten"), "size \"ten\""),
        (volume("nope/a", "1M"), "no pool \"nope\""),
        (volume("p", "1M"), "no '/'"),
    ] {
        let e = pools.create_volume(&v).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    // Past twice the capacity of the filesystem holding the pool.
    let capacity = pools.pool_info("p").unwrap().capacity_bytes;
    let e = pools
        .create_volume(&volume("p/huge", &format!("{}", capacity * 2 + 4096)))
        .unwrap_err();
    assert!(e.to_string().contains("its overcommit limit is 2x"), "{e}");
    assert!(pools.list_volumes("p").unwrap().is_empty());

    pools.create_volume(&volume("p/a", "1M")).unwrap();
    let e = pools.create_volume(&volume("p/a", "1M")).unwrap_err();
    assert!(e.to_string().contains("exists"), "{e}");
    let e = pools.delete_pool("p").unwrap_err();
    assert!(e.to_string().contains("holds 1 volume(s): a"), "{e}");
    let e = pools.snapshot_volume("p/a", "Bad").unwrap_err();
    assert!(e.to_string().contains("snapshot name"), "{e}");
    let e = pools.clone_volume("p/a", "other/b").unwrap_err();
    assert!(e.to_string().contains("stays in its source's pool"), "{e}");
}

#[test]
fn pools_made_through_the_api_come_back_and_a_crash_leaves_no_half_volume() {
    let s = Scratch::new("records");
    let state = s.0.join("state");
    let mut pools = Pools::load(&config(), &state);
    pools
        .create_pool(spec("p", &s.0.join("p"), Some(50.0)))
        .unwrap();
    pools.create_volume(&volume("p/a", "1M")).unwrap();
    // What a crash in the middle of a copy leaves.
    std::fs::write(s.0.join("p/volumes/.b.raw.part"), b"half").unwrap();
    drop(pools);

    let mut pools = Pools::load(&config(), &state);
    let info = pools.pool_info("p").unwrap();
    assert_eq!((info.volumes, info.overcommit_limit), (1, Some(50.0)));
    assert!(!s.0.join("p/volumes/.b.raw.part").exists());
    assert_eq!(pools.counts(), (1, 1));
    pools.delete_volume("p/a").unwrap();
    pools.delete_pool("p").unwrap();
    let pools = Pools::load(&config(), &state);
    assert!(
        pools.list_pools().is_empty(),
        "a deleted pool stays deleted"
    );
}

#[test]
fn a_volume_in_use_is_not_deleted_and_holds_outlive_a_restart() {
    let s = Scratch::new("holders");
    let state = s.0.join("state");
    let mut pools = Pools::load(&config(), &state);
    pools.create_pool(spec("p", &s.0.join("p"), None)).unwrap();
    pools.create_volume(&volume("p/a", "1M")).unwrap();
    pools.create_volume(&volume("p/b", "1M")).unwrap();
    let a = pools.open_volume("p/a", "vm:deb").unwrap();
    assert_eq!(a.used_by, ["vm:deb"]);
    assert!(a.path.ends_with("/p/volumes/a.raw"), "{}", a.path);
    assert_eq!(
        pools.open_volume("p/a", "vm:deb").unwrap().used_by,
        ["vm:deb"]
    );
    pools.open_volume("p/b", "vm:old").unwrap();
    let e = pools.open_volume("p/zz", "vm:deb").unwrap_err();
    assert!(e.to_string().contains("no volume p/zz"), "{e}");
    let e = pools.open_volume("p/a", "").unwrap_err();
    assert!(e.to_string().contains("holder"), "{e}");
    // An exported volume is no guest's disk.
    pools.create_volume(&volume("p/lun", "1M")).unwrap();
    pools.open_volume("p/lun", "export:lun").unwrap();
    let e = pools.open_volume("p/lun", "vm:deb").unwrap_err();
    assert!(e.to_string().contains("exported as an iSCSI LUN"), "{e}");
    pools.release_volume("p/lun", "export:lun").unwrap();
    pools.delete_volume("p/lun").unwrap();

    let e = pools.delete_volume("p/a").unwrap_err();
    assert!(e.to_string().contains("is in use by vm:deb"), "{e}");
    drop(pools);

    let mut pools = Pools::load(&config(), &state);
    assert_eq!(pools.volume_info("p/b").unwrap().used_by, ["vm:old"]);
    let released = pools.keep_holders("vm:", &["vm:deb".to_string()]).unwrap();
    assert_eq!(released, ["p/b by vm:old"]);
    pools.delete_volume("p/b").unwrap();
    pools.release_volume("p/a", "vm:deb").unwrap();
    pools.release_volume("p/a", "vm:deb").unwrap();
    pools.delete_volume("p/a").unwrap();
}

#[test]
fn a_sparse_copy_hashes_as_its_every_byte_and_keeps_its_holes() {
    use sha2::Digest as _;
    let s = Scratch::new("hash");
    let src = s.0.join("src.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(b"middle", 3 << 20).unwrap();
    f.write_all_at(b"end", (8 << 20) - 3).unwrap();
    let mut dense = vec![0u8; 8 << 20];
    dense[3 << 20..(3 << 20) + 6].copy_from_slice(b"middle");
    dense[(8 << 20) - 3..].copy_from_slice(b"end");
    let want = model::hex(&sha2::Sha256::digest(&dense));
    assert_eq!(files::sha256(&src).unwrap(), want);
    let dst = s.0.join("dst.raw");
    let seen = std::cell::Cell::new(0);
    let progress = |done: u64| {
        assert!(done >= seen.get(), "progress goes forward");
        seen.set(done);
    };
    assert_eq!(files::copy_hashed(&src, &dst, &progress).unwrap(), want);
    assert_eq!(seen.get(), 8 << 20, "the progress ends at the whole length");
    assert_eq!(std::fs::read(&dst).unwrap(), dense);
    assert!(files::allocated(&dst) < 1 << 20, "the holes were written");
    let e = files::copy_hashed(&src, &dst, &|_| {}).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
}

#[test]
fn raw_images_are_imported_with_their_bytes_and_other_formats_refused() {
    let s = Scratch::new("import");
    let mut pools = Pools::load(&config(), &s.0.join("state"));
    pools.create_pool(spec("p", &s.0.join("p"), None)).unwrap();
    let image = s.0.join("disk.raw");
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(4 << 20).unwrap();
    f.write_all_at(b"boot", 0).unwrap();
    f.write_all_at(b"tail", (4 << 20) - 4).unwrap();
    let image_path = image.display().to_string();

    let v = pools.import(&image_path, "p/disk").unwrap();
    assert_eq!(v.size_bytes, 4 << 20);
    assert_eq!(
        std::fs::read(&v.path).unwrap(),
        std::fs::read(&image).unwrap()
    );
    assert!(
        files::allocated(Path::new(&v.path)) < 1 << 20,
        "holes stay holes"
    );
    assert!(image.exists(), "the image is left where it is");
    let e = pools.import(&image_path, "p/disk").unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");

    // Other formats, empty and partial-sector images, and bad paths: refused, nothing made.
    let cases: [(&[u8], u64, &str); 4] = [
        (b"QFI\xfb\0\0\0\x03", 1 << 20, "qcow2"),
        (b"KDMV", 1 << 20, "VMDK"),
        (b"", 0, "empty"),
        (b"x", 1000, "512-byte sectors"),
    ];
    for (head, len, why) in cases {
        let bad = s.0.join("bad.img");
        let f = std::fs::File::create(&bad).unwrap();
        f.set_len(len).unwrap();
        f.write_all_at(head, 0).unwrap();
        f.set_len(len).unwrap();
        let e = pools
            .import(&bad.display().to_string(), "p/bad")
            .unwrap_err();
        assert!(
            matches!(e, StoreError::InvalidArgs(ref m) if m.contains(why)),
            "{why}: {e}"
        );
    }
    let e = pools.import("relative.raw", "p/bad").unwrap_err();
    assert!(matches!(e, StoreError::InvalidArgs(_)), "{e}");
    let e = pools
        .import(&s.0.join("none.raw").display().to_string(), "p/bad")
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    let e = pools.import(&image_path, "nopool/bad").unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    assert_eq!(pools.list_volumes("p").unwrap().len(), 1);
}

#[test]
fn a_snapshot_is_deleted_alone() {
    let s = Scratch::new("delsnap");
    let mut pools = Pools::load(&config(), &s.0.join("state"));
    pools.create_pool(spec("p", &s.0.join("p"), None)).unwrap();
    pools.create_volume(&volume("p/a", "16M")).unwrap();
    pools.snapshot_volume("p/a", "one").unwrap();
    pools.snapshot_volume("p/a", "two").unwrap();
    let clone = pools.clone_volume("p/a@one", "p/b").unwrap();

    let info = pools.delete_snapshot("p/a@one").unwrap();
    let names: Vec<&str> = info.snapshots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["two"]);
    assert!(Path::new(&clone.path).exists(), "a clone of it stays");
    for (bad, code) in [
        ("p/a@one", "no snapshot"),
        ("p/a", "names no snapshot"),
        ("p/nope@two", "no volume"),
        ("q/a@two", "no pool"),
    ] {
        let e = pools.delete_snapshot(bad).unwrap_err();
        assert!(e.to_string().contains(code), "{bad}: {e}");
    }
    assert_eq!(pools.volume_info("p/a").unwrap().snapshots.len(), 1);
}
