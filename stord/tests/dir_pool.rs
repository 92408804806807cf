//! The real stord on a private bus, with a dir pool on a loop-mounted 1 GiB xfs (reflinks on):
//! 100 volumes of 10 GiB (1000x overcommitted, and reported so), data written and read back,
//! a snapshot that shares the volume's blocks, a reflink clone, refusal past the overcommit
//! limit, and everything still there after stord restarts; and a backup whose progress
//! volume.info shows while the rest of the API answers.

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use model::dbus::Storage1Proxy;
use model::storage::{PoolInfo, PoolKind, PoolSpec, VolumeInfo, VolumeSpec};
use testkit::TempDir;

struct Mounted {
    at: std::path::PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stord(dir: &Path, bus: &str) -> Running {
    let config = dir.join("host.toml");
    std::fs::write(
        &config,
        "[host]\nhostname = \"s\"\n[host.management]\ninterface = \"lo\"\ndhcp = true\n",
    )
    .unwrap();
    Running(
        Command::new(env!("CARGO_BIN_EXE_stord"))
            .arg("--config")
            .arg(&config)
            .arg("--state")
            .arg(dir.join("state"))
            .env(model::dbus::BUS_ADDRESS_ENV, bus)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn proxy(bus: &str) -> Storage1Proxy<'static> {
    let started = Instant::now();
    loop {
        let conn = zbus::connection::Builder::address(bus)
            .build()
            .await
            .unwrap();
        let p = Storage1Proxy::new(&conn).await.unwrap();
        if p.status().await.is_ok() {
            return p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stord did not get on the bus"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn json<T: serde::de::DeserializeOwned>(s: String) -> T {
    serde_json::from_str(&s).unwrap()
}

async fn volume(p: &Storage1Proxy<'_>, name: &str, size: &str) -> Result<VolumeInfo, String> {
    let spec = serde_json::to_string(&VolumeSpec {
        volume: name.into(),
        size: size.into(),
        full: None,
    })
    .unwrap();
    p.create_volume(&spec)
        .await
        .map(json)
        .map_err(|e| e.to_string())
}

/// pool.create's argument for a dir pool at `path`.
fn dir_pool(name: &str, path: &Path, overcommit: Option<f64>) -> String {
    serde_json::to_string(&PoolSpec {
        name: name.into(),
        kind: PoolKind::Dir,
        path: Some(path.display().to_string()),
        overcommit,
        force: None,
        source: None,
        options: None,
    })
    .unwrap()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read(path: &str, at: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, at)
        .unwrap();
    buf
}

#[test]
fn a_dir_pool_on_xfs() {
    const TEST: &str = "stord::a_dir_pool_on_xfs";
    if !testkit::is_root() {
        return testkit::skip(TEST, "mounting a loop device needs root");
    }
    let dir = TempDir::new("stord-xfs");
    let image = dir.path().join("xfs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    // ci/deps installs xfsprogs: a missing mkfs.xfs is a failure, not a skip.
    testkit::run(
        "mkfs.xfs",
        &["-q", "-m", "reflink=1", &image.display().to_string()],
    );
    let at = dir.path().join("mnt");
    std::fs::create_dir_all(&at).unwrap();
    testkit::run(
        "mount",
        &[
            "-o",
            "loop",
            &image.display().to_string(),
            &at.display().to_string(),
        ],
    );
    let _mounted = Mounted { at: at.clone() };
    let (mut bus, address) = testkit::start_private_bus(dir.path(), Stdio::null()).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let daemon = stord(dir.path(), &address);
        let p = proxy(&address).await;
        // The limit sits between 100 and 101 volumes of 10 GiB on this filesystem's capacity.
        let capacity = nix::sys::statvfs::statvfs(&at).unwrap();
        let capacity = capacity.blocks() * capacity.fragment_size();
        let limit = (1005u64 << 30) as f64 / capacity as f64;
        let spec = dir_pool("fast", &at.join("pool"), Some(limit));
        let info: PoolInfo = json(p.create_pool(&spec).await.unwrap());
        assert_eq!(info.capacity_bytes, capacity);

        for i in 0..100 {
            volume(&p, &format!("fast/v{i}"), "10G").await.unwrap();
        }
        let info: PoolInfo = json(p.pool_info("fast").await.unwrap());
        assert_eq!((info.volumes, info.provisioned_bytes), (100, 1000 << 30));
        assert!(info.overcommit_ratio > 900.0, "{info:?}");
        assert!(
            info.allocated_bytes < 8 << 20,
            "thin volumes hold nothing yet: {info:?}"
        );
        assert!(
            info.warnings.iter().any(|w| w.contains("near its limit")),
            "{info:?}"
        );
        let refused = volume(&p, "fast/v100", "10G").await.unwrap_err();
        assert!(refused.contains("its overcommit limit is"), "{refused}");
        let counts = p.status().await.unwrap().1;
        assert_eq!((counts["pools"], counts["volumes"]), (1, 100));

        // 8 MiB of data, read back; a snapshot shares its blocks (reflink).
        let v = volume(&p, "fast/v0", "10G").await.unwrap_err();
        assert!(v.contains("exists"), "{v}");
        let v0: VolumeInfo = json(p.volume_info("fast/v0").await.unwrap());
        let data = pattern(1, 8 << 20);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&v0.path)
            .unwrap();
        file.write_all_at(&data, 5 << 30).unwrap();
        file.sync_all().unwrap();
        assert_eq!(read(&v0.path, 5 << 30, data.len()), data);
        let used_before: PoolInfo = json(p.pool_info("fast").await.unwrap());
        let snapped: VolumeInfo = json(p.snapshot_volume("fast/v0", "before").await.unwrap());
        assert_eq!(snapped.snapshots.len(), 1);
        let used_after: PoolInfo = json(p.pool_info("fast").await.unwrap());
        assert!(
            used_after.used_bytes < used_before.used_bytes + (1 << 20),
            "the snapshot copied its 8 MiB instead of sharing them: {} -> {}",
            used_before.used_bytes,
            used_after.used_bytes
        );
        let newer = pattern(2, 1 << 20);
        file.write_all_at(&newer, 5 << 30).unwrap();
        file.sync_all().unwrap();
        let snap = at
            .join("pool/snapshots/v0/before.raw")
            .display()
            .to_string();
        assert_eq!(
            read(&snap, 5 << 30, data.len()),
            data,
            "the snapshot kept the past"
        );

        // A clone of the snapshot: the old data, as a volume of its own (v1 deleted for room).
        p.delete_volume("fast/v1").await.unwrap();
        let clone: VolumeInfo = json(
            p.clone_volume("fast/v0@before", "fast/restored")
                .await
                .unwrap(),
        );
        assert_eq!(clone.size_bytes, 10 << 30);
        assert_eq!(read(&clone.path, 5 << 30, data.len()), data);
        let grown = p.grow_volume("fast/restored", "16G").await.unwrap_err();
        assert!(
            grown.to_string().contains("its overcommit limit is"),
            "{grown}"
        );

        // stord restarts: the pool, its volumes and the snapshot are all there.
        drop(daemon);
        let _daemon = stord(dir.path(), &address);
        let p = proxy(&address).await;
        let list: Vec<VolumeInfo> = json(p.list_volumes("fast").await.unwrap());
        assert_eq!(list.len(), 100);
        let v0: VolumeInfo = json(p.volume_info("fast/v0").await.unwrap());
        assert_eq!(v0.snapshots[0].name, "before");
        assert_eq!(read(&v0.path, 5 << 30, newer.len()), newer);
        let pools: Vec<PoolInfo> = json(p.list_pools().await.unwrap());
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].overcommit_limit, Some(limit));
    });
    let _ = bus.kill();
    let _ = bus.wait();
}

#[test]
fn a_backup_shows_its_progress_and_the_api_answers_while_it_copies() {
    let dir = TempDir::new("stord-progress");
    let (mut bus, address) = testkit::start_private_bus(dir.path(), Stdio::null()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _daemon = stord(dir.path(), &address);
        let p = proxy(&address).await;
        for name in ["src", "bk"] {
            p.create_pool(&dir_pool(name, &dir.path().join(name), None))
                .await
                .unwrap();
        }
        let big = volume(&p, "src/big", "512M").await.unwrap();
        let data = pattern(7, 4 << 20);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&big.path)
            .unwrap();
        for i in 0..64u64 {
            f.write_all_at(&data, i * (8 << 20)).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);

        let backup = p.backup_volume("src/big", "bk");
        tokio::pin!(backup);
        let mut seen = Vec::new();
        let mut answered_meanwhile = false;
        let info = loop {
            tokio::select! {
                done = &mut backup => break done.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(20)) => {
                    let v: VolumeInfo = json(p.volume_info("src/big").await.unwrap());
                    if let Some(copy) = v.copy {
                        assert_eq!((copy.what.as_str(), copy.total_bytes), ("backup", 512 << 20));
                        seen.push(copy.done_bytes);
                        // Another call, answered while the copy runs.
                        answered_meanwhile |= p.list_pools().await.is_ok();
                    }
                }
            }
        };
        assert!(!seen.is_empty(), "volume.info never showed the copy");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(answered_meanwhile);
        let info: model::storage::BackupInfo = json(info);
        assert_eq!(info.size_bytes, 512 << 20);
        let v: VolumeInfo = json(p.volume_info("src/big").await.unwrap());
        assert_eq!(v.copy, None, "the copy is gone from volume.info once done");

        // A backup is deleted with the sha256 beside it; nothing else is taken for one.
        let sidecar = format!("{}.sha256", info.backup);
        assert!(std::path::Path::new(&sidecar).is_file());
        let not_one = p.delete_backup(&big.path).await.unwrap_err();
        assert!(not_one.to_string().contains("not a backup"), "{not_one}");
        let not_one = p.delete_backup(&sidecar).await.unwrap_err();
        assert!(not_one.to_string().contains("not a backup"), "{not_one}");
        p.delete_backup(&info.backup).await.unwrap();
        assert!(!std::path::Path::new(&info.backup).exists());
        assert!(!std::path::Path::new(&sidecar).exists());
        assert!(
            std::path::Path::new(&big.path).is_file(),
            "the volume stays"
        );
        let gone = p.delete_backup(&info.backup).await.unwrap_err();
        assert!(
            matches!(gone, model::dbus::CairnError::NotFound(_)),
            "{gone}"
        );
    });
    let _ = bus.kill();
    let _ = bus.wait();
}
