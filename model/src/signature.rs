//! What a disk holds, from the signatures at its start (no udev or blkid in the appliance):
//! the installer and stord refuse a disk that holds anything unless forced, and `host.disks`
//! says what it found. Pure: callers read the bytes.

/// Bytes read from the start of a disk: the signatures below all lie in it (btrfs' is the
/// farthest, at 64 KiB), and a disk whose first MiB is not all zero is not blank.
pub const HEAD: usize = 1 << 20;

/// A description of what `head` (a disk's first bytes) holds, or `None` when it is blank.
pub fn holds(head: &[u8]) -> Option<String> {
    let at = |off: usize, sig: &[u8]| head.get(off..off + sig.len()) == Some(sig);
    if at(512, b"EFI PART") {
        return Some("a GPT partition table".into());
    }
    if let Some(label) = ext_label(head) {
        return Some(match label.as_str() {
            "" => "an ext2/3/4 filesystem".into(),
            l => format!("an ext2/3/4 filesystem labelled {l:?}"),
        });
    }
    if at(0, b"XFSB") {
        return Some("an XFS filesystem".into());
    }
    if at(65536 + 64, b"_BHRfS_M") {
        return Some("a btrfs filesystem".into());
    }
    if at(32769, b"CD001") {
        return Some("an ISO 9660 filesystem".into());
    }
    if at(0, b"LUKS\xba\xbe") {
        return Some("a LUKS volume".into());
    }
    if (0..4).any(|s| at(s * 512, b"LABELONE")) {
        return Some("an LVM physical volume".into());
    }
    if at(4086, b"SWAPSPACE2") {
        return Some("a swap area".into());
    }
    if at(0, b"hsqs") {
        return Some("a squashfs filesystem".into());
    }
    if at(510, &[0x55, 0xaa]) {
        if at(54, b"FAT") || at(82, b"FAT32") {
            return Some("a FAT filesystem".into());
        }
        if (0..4).any(|i| head.get(446 + 16 * i + 4).is_some_and(|&t| t != 0)) {
            return Some("an MBR partition table".into());
        }
    }
    head.iter()
        .any(|&b| b != 0)
        .then(|| "data of a kind not recognised (its first MiB is not blank)".into())
}

/// The volume label of an ext2/3/4 superblock in `head` (at byte 1024: magic 0xEF53 at +0x38,
/// the 16-byte name at +0x78), `None` when there is none.
pub fn ext_label(head: &[u8]) -> Option<String> {
    let sb = head.get(1024..1024 + 0x88)?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return None;
    }
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}
