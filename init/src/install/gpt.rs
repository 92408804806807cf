//! A GUID partition table (UEFI spec, chapter 5) for the installed layout: the protective MBR,
//! the primary header and entry array at the start of the disk, and their backup copies at its
//! end. 512-byte sectors, 128 entries of 128 bytes.

use model::install::{Partition, SECTOR};

use super::InstallError;

const ENTRIES: usize = 128;
const ENTRY_SIZE: usize = 128;
/// Sectors the entry array takes (16 KiB).
const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;
const HEADER_SIZE: usize = 92;

/// What goes where: `head` at sector 0 (protective MBR, primary header, entries) and `tail` at
/// sector `tail_lba` (backup entries, then the backup header in the last sector).
pub struct Table {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub tail_lba: u64,
    /// Each partition's (first, last) sector, in the order given.
    pub ranges: Vec<(u64, u64)>,
}

/// The table for a disk of `disk_sectors` holding `parts` (a `sectors` of 0 runs to the last
/// usable sector, rounded down to a MiB). `guids` gives the disk's GUID and then one per
/// partition (random in use; fixed in tests).
pub fn table(
    disk_sectors: u64,
    parts: &[Partition],
    guids: &[[u8; 16]],
) -> Result<Table, InstallError> {
    if guids.len() != parts.len() + 1 {
        return Err(InstallError::Internal(format!(
            "{} GUIDs for {} partitions",
            guids.len(),
            parts.len()
        )));
    }
    let first_usable = 2 + ENTRY_SECTORS;
    let last_lba = disk_sectors - 1;
    let last_usable = last_lba - 1 - ENTRY_SECTORS;
    let mut entries = vec![0u8; ENTRIES * ENTRY_SIZE];
    let mut ranges = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let last = if p.sectors == 0 {
            ((last_usable + 1) / 2048) * 2048 - 1
        } else {
            p.first_lba + p.sectors - 1
        };
        if p.first_lba < first_usable || last > last_usable || last < p.first_lba {
            return Err(InstallError::Internal(format!(
                "partition {} does not fit a disk of {disk_sectors} sectors",
                p.name
            )));
        }
        ranges.push((p.first_lba, last));
        let e = &mut entries[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
        e[0..16].copy_from_slice(&guid(p.type_guid)?);
        e[16..32].copy_from_slice(&guids[i + 1]);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let header = |mine: u64, other: u64, entries_lba: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&mine.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&guids[0]);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut head = protective_mbr(disk_sectors);
    head.extend(header(1, last_lba, 2));
    head.extend(&entries);
    let tail_lba = last_lba - ENTRY_SECTORS;
    let mut tail = entries;
    tail.extend(header(last_lba, 1, tail_lba));
    Ok(Table {
        head,
        tail,
        tail_lba,
        ranges,
    })
}

/// Sector 0: one partition of type 0xEE over the whole disk (capped at 2 TiB, as the spec
/// says), so MBR-only tools see the disk as used. The boot code area (the first 440 bytes) is
/// left zero for GRUB's boot sector.
fn protective_mbr(disk_sectors: u64) -> Vec<u8> {
    let mut s = vec![0u8; SECTOR as usize];
    let p = &mut s[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    p[4] = 0xee;
    p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    p[12..16].copy_from_slice(&size.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// A GUID's on-disk bytes from its text form: the first three fields little-endian, the last
/// two as written.
pub fn guid(text: &str) -> Result<[u8; 16], InstallError> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let bad = || InstallError::Internal(format!("bad GUID {text:?}"));
    if hex.len() != 32 || text.len() != 36 {
        return Err(bad());
    }
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    raw[0..4].reverse();
    raw[4..6].reverse();
    raw[6..8].reverse();
    Ok(raw)
}

/// A random (version 4) GUID.
pub fn random_guid() -> Result<[u8; 16], InstallError> {
    let mut g = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut g))
        .map_err(|e| InstallError::Internal(format!("reading /dev/urandom: {e}")))?;
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::install::PARTITIONS;

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn guids_are_mixed_endian() {
        let g = guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(
            g,
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert!(guid("C12A7328F81F11D2BA4B00A0C93EC93B").is_err());
        assert!(guid("X12A7328-F81F-11D2-BA4B-00A0C93EC93B").is_err());
    }

    #[test]
    fn headers_and_entries_check_out() {
        let sectors = 4 << 21; // 4 GiB
        let guids: Vec<[u8; 16]> = (0..6u8).map(|i| [i + 1; 16]).collect();
        let t = table(sectors, &PARTITIONS, &guids).unwrap();
        assert_eq!(t.head.len(), 34 * 512);
        assert_eq!(t.tail.len(), 33 * 512);
        assert_eq!(t.tail_lba + 33, sectors);
        assert_eq!(&t.head[510..512], &[0x55, 0xaa]);
        assert_eq!(t.head[446 + 4], 0xee);
        let primary = &t.head[512..1024];
        let backup = &t.tail[32 * 512..];
        for (h, mine, other, entries_lba) in [
            (primary, 1, sectors - 1, 2),
            (backup, sectors - 1, 1, sectors - 33),
        ] {
            assert_eq!(&h[0..8], b"EFI PART");
            let mut zeroed = h[..92].to_vec();
            zeroed[16..20].fill(0);
            assert_eq!(
                u32::from_le_bytes(h[16..20].try_into().unwrap()),
                crc32fast::hash(&zeroed)
            );
            assert_eq!((u64_at(h, 24), u64_at(h, 32)), (mine, other));
            assert_eq!(u64_at(h, 72), entries_lba);
        }
        let entries = &t.head[1024..];
        assert_eq!(entries, &t.tail[..16384]);
        assert_eq!(
            u32::from_le_bytes(primary[88..92].try_into().unwrap()),
            crc32fast::hash(entries)
        );
        // The state partition runs to the last whole MiB before the backup table.
        let state = &entries[4 * 128..5 * 128];
        assert_eq!(u64_at(state, 32), model::install::STATE.first_lba);
        assert_eq!(u64_at(state, 40), sectors - 2048 - 1);
        assert_eq!(&state[56..58], &[b'c', 0]);
        assert_eq!(
            t.ranges[4],
            (model::install::STATE.first_lba, sectors - 2049)
        );
    }

    #[test]
    fn a_disk_too_small_is_refused() {
        let guids = vec![[0u8; 16]; 6];
        assert!(table(1 << 20, &PARTITIONS, &guids).is_err());
    }
}
