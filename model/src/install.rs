//! The installed disk's layout, which the image build (GRUB's boot sector points at the BIOS
//! boot partition) and init's installer (which writes it) must agree on, and what
//! `host.disks` / `host.installStatus` answer.
//!
//! GPT, 512-byte sectors, every partition at a fixed place so the boot code built into the
//! image needs no patching at install time:
//!
//! | # | name          | size       | holds                                                  |
//! |---|---------------|------------|--------------------------------------------------------|
//! | 1 | `bios-boot`   | 1 MiB      | GRUB's core.img for BIOS (boot sector in the MBR)      |
//! | 2 | `esp`         | 64 MiB     | FAT: GRUB for UEFI, and grub.cfg for both firmwares    |
//! | 3 | `cairn-a`     | 256 MiB    | ext4 `CAIRN-A`: vmlinuz + initrd.img (OS slot A)       |
//! | 4 | `cairn-b`     | 256 MiB    | ext4 `CAIRN-B`: slot B, filled by updates              |
//! | 5 | `cairn-state` | the rest   | ext4 `CAIRN-STATE`: /var/lib/cairn                     |

use serde::{Deserialize, Serialize};

pub const SECTOR: u64 = 512;
const MIB: u64 = 2048;

/// One partition of the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// The GPT partition name.
    pub name: &'static str,
    /// The GPT partition type GUID.
    pub type_guid: &'static str,
    pub first_lba: u64,
    /// Sectors; 0 for "to the end of the disk".
    pub sectors: u64,
    /// The filesystem label the installer gives it (empty: no filesystem of ours).
    pub label: &'static str,
}

pub const BIOS_BOOT: Partition = Partition {
    name: "bios-boot",
    type_guid: "21686148-6E6F-744E-6565-6446696F6F4F",
    first_lba: MIB,
    sectors: MIB,
    label: "",
};
pub const ESP: Partition = Partition {
    name: "esp",
    type_guid: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    first_lba: 2 * MIB,
    sectors: 64 * MIB,
    label: "CAIRN-ESP",
};
/// Linux filesystem data.
const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const SLOT_A: Partition = Partition {
    name: "cairn-a",
    type_guid: LINUX,
    first_lba: 66 * MIB,
    sectors: 256 * MIB,
    label: "CAIRN-A",
};
pub const SLOT_B: Partition = Partition {
    name: "cairn-b",
    type_guid: LINUX,
    first_lba: 322 * MIB,
    sectors: 256 * MIB,
    label: "CAIRN-B",
};
/// The Discoverable Partitions Specification's /var type: the state partition is Cairn's /var.
pub const STATE: Partition = Partition {
    name: "cairn-state",
    type_guid: "4D21B016-B534-45C2-A9FB-5C16E091FD2D",
    first_lba: 578 * MIB,
    sectors: 0,
    label: "CAIRN-STATE",
};

pub const PARTITIONS: [Partition; 5] = [BIOS_BOOT, ESP, SLOT_A, SLOT_B, STATE];

/// The smallest disk the installer takes: the fixed partitions and a 256 MiB state partition.
pub const MIN_DISK_BYTES: u64 = (578 + 256 + 1) * MIB * SECTOR;

/// Where the built image keeps what the installer writes (beside the running OS's own files).
pub const PAYLOAD_DIR: &str = "/usr/lib/cairn/install";
/// GRUB's boot sector for BIOS, already pointing at [`BIOS_BOOT`]: its first 440 bytes go to
/// the MBR.
pub const BOOT_IMG: &str = "boot.img";
/// GRUB's core image for BIOS, written at [`BIOS_BOOT`]'s first sector.
pub const CORE_IMG: &str = "core.img";
/// The EFI system partition's filesystem, written at [`ESP`]'s first sector.
pub const ESP_IMG: &str = "esp.img";
/// The kernel the installed system boots (the initramfs is the running one's: see init).
pub const VMLINUZ: &str = "vmlinuz";

/// One block device as `host.disks` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    /// The kernel's name (`vda`, `sda`, `nvme0n1`).
    pub name: String,
    pub size_bytes: u64,
    /// The model or serial the disk reports (empty when it reports none).
    pub model: String,
    /// What is on it now (`GPT partition table`, `ext4 filesystem "data"`, …), empty for blank.
    pub holds: String,
    /// Why the installer cannot take it at all (the running state partition is on it, too
    /// small, read-only), empty when it can.
    pub unusable: String,
}

/// What `host.installStatus` and `host.updateStatus` answer: a long job of init's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobReport {
    /// `idle` (none since boot), `running`, `done` or `failed`.
    pub state: String,
    pub disk: String,
    /// The step under way or last done, in words.
    pub step: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Why it failed, empty otherwise.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_each_other_aligned_to_a_mib() {
        for pair in PARTITIONS.windows(2) {
            assert_eq!(
                pair[0].first_lba + pair[0].sectors,
                pair[1].first_lba,
                "{pair:?}"
            );
        }
        for p in PARTITIONS {
            assert_eq!(p.first_lba % MIB, 0, "{p:?}");
        }
        assert_eq!(STATE.sectors, 0, "the state partition takes the rest");
        const { assert!(MIN_DISK_BYTES > STATE.first_lba * SECTOR) };
    }
}

/// GRUB's environment block (grub-editenv's format): exactly 1024 bytes, a header line, then
/// `name=value` lines, padded with `#`. The installed disk keeps one on the ESP
/// ([`GRUBENV_PATH`]): which slot boots, and the boot attempts an updated slot has left.
pub mod grubenv {
    use std::collections::BTreeMap;

    pub const SIZE: usize = 1024;
    const HEADER: &str = "# GRUB Environment Block\n";

    /// The variables of a block; None when `block` is not one.
    pub fn parse(block: &[u8]) -> Option<BTreeMap<String, String>> {
        let text = std::str::from_utf8(block).ok()?;
        let body = text.strip_prefix(HEADER)?;
        Some(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The block holding `vars`, or None when they do not fit (or a name or value has a
    /// newline).
    pub fn render(vars: &BTreeMap<String, String>) -> Option<Vec<u8>> {
        let mut out = String::from(HEADER);
        for (k, v) in vars {
            if k.contains(['\n', '=']) || v.contains('\n') {
                return None;
            }
            out.push_str(&format!("{k}={v}\n"));
        }
        if out.len() > SIZE {
            return None;
        }
        let mut bytes = out.into_bytes();
        bytes.resize(SIZE, b'#');
        Some(bytes)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_block_round_trips_at_its_fixed_size() {
            let vars: BTreeMap<String, String> = [("slot", "a"), ("try_slot", ""), ("tries", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let block = render(&vars).unwrap();
            assert_eq!(block.len(), SIZE);
            assert!(block.starts_with(b"# GRUB Environment Block\nslot=a\ntries=2\ntry_slot=\n#"));
            assert_eq!(parse(&block).unwrap(), vars);
            assert_eq!(parse(b"garbage"), None);
            let mut big = BTreeMap::new();
            big.insert("x".to_string(), "y".repeat(2000));
            assert_eq!(render(&big), None);
            let mut bad = BTreeMap::new();
            bad.insert("x".to_string(), "a\nb".into());
            assert_eq!(render(&bad), None);
        }
    }
}

/// The environment block's path on the ESP (GRUB reads it as `($root)/grub/grubenv`).
pub const GRUBENV_PATH: &str = "grub/grubenv";
/// Boot attempts an updated slot gets before GRUB goes back to the one that booted before.
pub const UPDATE_TRIES: u32 = 2;
