//! The installer against a disk image file with a sysfs of its own: the real mke2fs, the GPT
//! read back, the slot's files and the saved config read out of the filesystems by debugfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use model::install::{BIOS_BOOT, ESP, SECTOR, SLOT_A, SLOT_B, STATE};

use super::*;

struct Rig {
    root: PathBuf,
    installer: Installer,
    payload: Payload,
}

impl Rig {
    fn new(tag: &str, disk_bytes: u64) -> Rig {
        let root = std::env::temp_dir().join(format!("cairn-install-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (sys, dev, files) = (root.join("sys"), root.join("dev"), root.join("payload"));
        for d in [&sys.join("vda/queue"), &dev, &files] {
            std::fs::create_dir_all(d).unwrap();
        }
        for (f, v) in [
            ("size", (disk_bytes / 512).to_string()),
            ("dev", "254:0".into()),
            ("ro", "0".into()),
            ("queue/logical_block_size", "512".into()),
        ] {
            std::fs::write(sys.join("vda").join(f), v).unwrap();
        }
        File::create(dev.join("vda"))
            .unwrap()
            .set_len(disk_bytes)
            .unwrap();
        let mut boot = vec![0xebu8; 512];
        boot[510..].copy_from_slice(&[0x55, 0xaa]);
        std::fs::write(files.join("boot.img"), &boot).unwrap();
        std::fs::write(files.join("core.img"), vec![0xc0u8; 70_000]).unwrap();
        std::fs::write(files.join("esp.img"), vec![0xe5u8; 3 << 20]).unwrap();
        std::fs::write(files.join("vmlinuz"), b"kernel".repeat(1000)).unwrap();
        let initrd = [&[0x28u8, 0xb5, 0x2f, 0xfd][..], &b"initrd".repeat(5000)].concat();
        let payload = Payload::from_dir(&files, initrd).unwrap();
        let installer = Installer::new(Devices {
            sys_block: sys,
            dev,
            scratch: root.join("scratch"),
            mke2fs: "mke2fs".into(),
            mountinfo: root.join("mountinfo"),
        });
        std::fs::write(root.join("mountinfo"), "").unwrap();
        Rig {
            root,
            installer,
            payload,
        }
    }

    fn disk(&self) -> PathBuf {
        self.root.join("dev/vda")
    }

    fn read(&self, at: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        File::open(self.disk())
            .unwrap()
            .read_exact_at(&mut b, at)
            .unwrap();
        b
    }

    /// A file out of the ext4 filesystem at `part`.
    fn cat(&self, part: &model::install::Partition, path: &str) -> Vec<u8> {
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(format!(
                "{}?offset={}",
                self.disk().display(),
                part.first_lba * SECTOR
            ))
            .output()
            .expect("debugfs (e2fsprogs)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn fsck(&self, part: &model::install::Partition) {
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(format!(
                "{}?offset={}",
                self.disk().display(),
                part.first_lba * SECTOR
            ))
            .output()
            .expect("e2fsck (e2fsprogs)");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

use std::os::unix::fs::FileExt;

const CONFIG: &str = "[host]\nhostname = \"installed\"\n";

#[test]
fn a_blank_disk_gets_the_whole_layout() {
    let rig = Rig::new("blank", 2 << 30);
    rig.installer
        .run_now("vda", Some(CONFIG), false, &rig.payload)
        .unwrap();
    let report = rig.installer.report();
    assert_eq!(report.state, "done", "{report:?}");
    assert_eq!(report.done_bytes, rig.payload.bytes());
    assert_eq!(report.total_bytes, rig.payload.bytes());

    let mbr = rig.read(0, 512);
    assert_eq!(
        &mbr[..440],
        &rig.payload.boot_img[..440],
        "GRUB's boot code"
    );
    assert_eq!(mbr[446 + 4], 0xee, "the protective MBR's partition");
    assert_eq!(&rig.read(512, 8), b"EFI PART");
    assert_eq!(
        &rig.read((2 << 30) - 512, 8),
        b"EFI PART",
        "the backup header"
    );
    assert_eq!(
        rig.read(BIOS_BOOT.first_lba * SECTOR, 70_000),
        rig.payload.core_img
    );
    assert_eq!(
        rig.read(ESP.first_lba * SECTOR, 3 << 20),
        vec![0xe5u8; 3 << 20]
    );

    assert_eq!(rig.cat(&SLOT_A, "/initrd.img"), rig.payload.initrd);
    assert_eq!(rig.cat(&SLOT_A, "/vmlinuz"), b"kernel".repeat(1000));
    assert_eq!(rig.cat(&STATE, "/config/host.toml"), CONFIG.as_bytes());
    rig.fsck(&SLOT_A);
    rig.fsck(&STATE);
    // ext4 with its journal (s_feature_compat HAS_JOURNAL, s_feature_incompat EXTENTS): the
    // state must survive a power cut.
    for p in [&SLOT_A, &STATE] {
        let sb = rig.read(p.first_lba * SECTOR + 1024, 1024);
        let compat = u32::from_le_bytes(sb[0x5c..0x60].try_into().unwrap());
        let incompat = u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap());
        assert!(compat & 0x4 != 0, "{}: no journal", p.name);
        assert!(incompat & 0x40 != 0, "{}: no extents", p.name);
    }
    let head = probe::read_head(&rig.disk(), 1 << 20).unwrap();
    assert_eq!(
        probe::holds(&head).as_deref(),
        Some("a GPT partition table")
    );
    let at =
        |p: &model::install::Partition| probe::ext_label(&rig.read(p.first_lba * SECTOR, 2048));
    assert_eq!(at(&SLOT_A).as_deref(), Some("CAIRN-A"));
    assert_eq!(at(&STATE).as_deref(), Some("CAIRN-STATE"));
    assert_eq!(at(&SLOT_B), None, "slot B is left for updates");
}

#[test]
fn a_used_disk_is_refused_unless_forced_and_then_wiped() {
    let rig = Rig::new("used", 2 << 30);
    // An old filesystem labelled as our state partition, where slot B now lies.
    let old = rig.root.join("old.img");
    File::create(&old).unwrap().set_len(64 << 20).unwrap();
    assert!(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "CAIRN-STATE"])
            .arg(&old)
            .status()
            .unwrap()
            .success()
    );
    let old = std::fs::read(&old).unwrap();
    let disk = OpenOptions::new().write(true).open(rig.disk()).unwrap();
    disk.write_all_at(&old, 0).unwrap();
    disk.write_all_at(&old, SLOT_B.first_lba * SECTOR).unwrap();

    let e = rig
        .installer
        .run_now("vda", None, false, &rig.payload)
        .unwrap_err();
    assert!(
        matches!(&e, InstallError::Refused(m) if m.contains("ext2/3/4 filesystem labelled \"CAIRN-STATE\"") && m.contains("force")),
        "{e}"
    );
    assert_eq!(rig.read(0, 1 << 20), old[..1 << 20], "nothing written");

    rig.installer
        .run_now("vda", None, true, &rig.payload)
        .unwrap();
    assert_eq!(
        probe::ext_label(&rig.read(SLOT_B.first_lba * SECTOR, 2048)),
        None
    );
    // No config given: the installed host boots into maintenance mode.
    let out = Command::new("debugfs")
        .args(["-R", "ls -p /"])
        .arg(format!(
            "{}?offset={}",
            rig.disk().display(),
            STATE.first_lba * SECTOR
        ))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("config"));
}

#[test]
fn bad_requests_change_nothing() {
    let rig = Rig::new("bad", 2 << 30);
    for name in ["", "../vda", "sdz"] {
        let e = rig
            .installer
            .start(name, None, false, || {
                Payload::from_dir(Path::new("/nonexistent"), vec![])
            })
            .unwrap_err();
        assert!(matches!(e, InstallError::NoSuchDisk(_)), "{name}: {e}");
    }
    let e = rig
        .installer
        .start("vda", Some("[host]\nhostname = 5\n".into()), false, || {
            panic!("the payload is not read for a bad config")
        })
        .unwrap_err();
    assert!(
        matches!(&e, InstallError::InvalidConfig(m) if m.contains("host.toml:2:")),
        "{e}"
    );
    let e = rig
        .installer
        .start("vda", None, false, || {
            Err(InstallError::NoPayload("no retain_initrd".into()))
        })
        .unwrap_err();
    assert!(matches!(e, InstallError::NoPayload(_)), "{e}");
    assert_eq!(rig.installer.report().state, "failed");
    assert_eq!(rig.read(0, 1 << 20), vec![0u8; 1 << 20], "nothing written");
}

#[test]
fn a_small_disk_cannot_take_cairn() {
    let rig = Rig::new("small", 512 << 20);
    let e = rig
        .installer
        .run_now("vda", None, true, &rig.payload)
        .unwrap_err();
    assert!(
        matches!(&e, InstallError::Refused(m) if m.contains("too small")),
        "{e}"
    );
}
