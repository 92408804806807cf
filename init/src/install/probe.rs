//! What a disk holds, from the signatures at its start (no udev or blkid here): the installer
//! refuses a disk that holds anything unless forced, and `host.disks` says what it found.

use std::io::Read;
use std::path::Path;

pub use model::signature::{HEAD, ext_label, holds};

/// Bytes [`fs_label`] needs from a device's start (an ISO 9660 volume id ends at 32 840).
pub const LABEL_HEAD: usize = 36 << 10;

/// The filesystem type (as mount(2) names it) and volume label at the start of `head`: ext2/3/4,
/// FAT (the label in the boot sector's extended BPB) or ISO 9660.
pub fn fs_label(head: &[u8]) -> Option<(&'static str, String)> {
    if let Some(label) = ext_label(head) {
        return Some(("ext4", label));
    }
    let text = |r: std::ops::Range<usize>| {
        head.get(r).map(|b| {
            String::from_utf8_lossy(b)
                .trim_end_matches([' ', '\0'])
                .to_string()
        })
    };
    if head.get(510..512) == Some(&[0x55, 0xaa]) {
        // FAT32's extended BPB sits 28 bytes later than FAT12/16's; 0x29 marks one with a label.
        if head.get(82..87) == Some(b"FAT32") && head.get(66) == Some(&0x29) {
            return Some(("vfat", text(71..82)?));
        }
        if head.get(54..57) == Some(b"FAT") && head.get(38) == Some(&0x29) {
            return Some(("vfat", text(43..54)?));
        }
    }
    if head.get(32769..32774) == Some(b"CD001") {
        return Some(("iso9660", text(32808..32840)?));
    }
    None
}

/// Up to `len` bytes from the start of `dev`.
pub fn read_head(dev: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(len);
    std::fs::File::open(dev)?
        .take(len as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_disk_holds_nothing() {
        assert_eq!(holds(&vec![0u8; HEAD]), None);
    }

    #[test]
    fn signatures_are_named() {
        let mut ext = vec![0u8; HEAD];
        ext[1024 + 0x38..1024 + 0x3a].copy_from_slice(&[0x53, 0xef]);
        ext[1024 + 0x78..1024 + 0x7c].copy_from_slice(b"data");
        assert_eq!(
            holds(&ext).as_deref(),
            Some("an ext2/3/4 filesystem labelled \"data\"")
        );
        assert_eq!(ext_label(&ext).as_deref(), Some("data"));

        let mut gpt = vec![0u8; HEAD];
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(holds(&gpt).as_deref(), Some("a GPT partition table"));

        let mut mbr = vec![0u8; HEAD];
        mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
        mbr[446 + 16 + 4] = 0x83;
        assert_eq!(holds(&mbr).as_deref(), Some("an MBR partition table"));

        let mut junk = vec![0u8; HEAD];
        junk[HEAD - 1] = 1;
        assert!(holds(&junk).unwrap().contains("not recognised"));
    }

    #[test]
    fn fat_and_iso_labels_are_read() {
        let mut fat16 = vec![0u8; LABEL_HEAD];
        fat16[510..512].copy_from_slice(&[0x55, 0xaa]);
        fat16[38] = 0x29;
        fat16[43..54].copy_from_slice(b"CAIRN-CONF ");
        fat16[54..59].copy_from_slice(b"FAT16");
        assert_eq!(fs_label(&fat16), Some(("vfat", "CAIRN-CONF".into())));
        let mut fat32 = vec![0u8; LABEL_HEAD];
        fat32[510..512].copy_from_slice(&[0x55, 0xaa]);
        fat32[66] = 0x29;
        fat32[71..82].copy_from_slice(b"BIG        ");
        fat32[82..87].copy_from_slice(b"FAT32");
        assert_eq!(fs_label(&fat32), Some(("vfat", "BIG".into())));
        let mut iso = vec![0u8; LABEL_HEAD];
        iso[32769..32774].copy_from_slice(b"CD001");
        iso[32808..32840].copy_from_slice(&[b' '; 32]);
        iso[32808..32812].copy_from_slice(b"DISC");
        assert_eq!(fs_label(&iso), Some(("iso9660", "DISC".into())));
        assert_eq!(fs_label(&vec![0u8; LABEL_HEAD]), None);
    }

    /// mtools' FAT, as a user's USB stick would have it (mformat is in ci/deps).
    #[test]
    fn a_real_fat_image_is_recognised() {
        let img = std::env::temp_dir().join(format!("cairn-fat-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&img);
        let ok = std::process::Command::new("mformat")
            .args([
                "-C",
                "-T",
                "8192",
                "-h",
                "2",
                "-s",
                "32",
                "-v",
                "CAIRN-CONFIG",
                "-i",
            ])
            .arg(&img)
            .arg("::")
            .env("MTOOLS_SKIP_CHECK", "1")
            .status()
            .unwrap()
            .success();
        assert!(ok, "mformat (mtools) failed");
        let head = read_head(&img, LABEL_HEAD).unwrap();
        // FAT labels hold 11 characters: mformat and mkfs.fat cut the 12th.
        assert_eq!(fs_label(&head), Some(("vfat", "CAIRN-CONFI".to_string())));
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn a_real_ext4_image_is_recognised() {
        let dir = std::env::temp_dir().join(format!("cairn-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let ok = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "CAIRN-STATE"])
            .arg(&img)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mke2fs (e2fsprogs) failed");
        let head = read_head(&img, HEAD).unwrap();
        assert_eq!(ext_label(&head).as_deref(), Some("CAIRN-STATE"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
