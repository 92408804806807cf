//! The host's disks as `host.disks` lists them, from sysfs: what each holds and whether the
//! installer can take it.

use std::path::Path;

use model::install::{DiskInfo, MIN_DISK_BYTES};

use super::probe;

/// Every whole disk (not loop, RAM, optical or device-mapper devices), by name.
pub fn list(sys_block: &Path, dev: &Path, mountinfo: &Path) -> Vec<DiskInfo> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !["loop", "ram", "sr", "zram", "dm-", "md"]
                        .iter()
                        .any(|p| n.starts_with(p))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let busy = mounted_devices(mountinfo);
    names
        .into_iter()
        .map(|name| describe(sys_block, dev, &name, &busy))
        .collect()
}

pub fn describe(sys_block: &Path, dev: &Path, name: &str, mounted: &[String]) -> DiskInfo {
    let sys = sys_block.join(name);
    let read = |f: &str| {
        std::fs::read_to_string(sys.join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let size_bytes = read("size").parse::<u64>().unwrap_or(0) * 512;
    let model = [read("device/model"), read("device/serial"), read("serial")]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    let holds = match probe::read_head(&dev.join(name), probe::HEAD) {
        Ok(head) => probe::holds(&head).unwrap_or_default(),
        Err(e) => format!("unreadable: {e}"),
    };
    let mut unusable = String::new();
    // The disk itself and its partitions, as major:minor.
    let mut numbers = vec![read("dev")];
    if let Ok(entries) = std::fs::read_dir(&sys) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(name)
                && let Ok(n) = std::fs::read_to_string(e.path().join("dev"))
            {
                numbers.push(n.trim().to_string());
            }
        }
    }
    if read("ro") == "1" {
        unusable = "read-only".into();
    } else if numbers.iter().any(|n| mounted.contains(n)) {
        unusable = "in use: a filesystem on it is mounted (the running state partition?)".into();
    } else if read("queue/logical_block_size") != "512" {
        unusable = format!(
            "{}-byte sectors (the installer writes 512-byte ones)",
            read("queue/logical_block_size")
        );
    } else if size_bytes < MIN_DISK_BYTES {
        unusable = format!(
            "too small: {} MiB, the installer needs {} MiB",
            size_bytes >> 20,
            MIN_DISK_BYTES >> 20
        );
    }
    DiskInfo {
        name: name.to_string(),
        size_bytes,
        model,
        holds,
        unusable,
    }
}

/// major:minor of every mounted block device (field 3 of mountinfo).
pub fn mounted_devices(mountinfo: &Path) -> Vec<String> {
    std::fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(2))
        .filter(|n| !n.starts_with("0:"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_disk(root: &Path, name: &str, files: &[(&str, &str)]) {
        for (f, v) in files {
            let p = root.join(name).join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{v}\n")).unwrap();
        }
    }

    #[test]
    fn disks_are_judged_from_sysfs() {
        let root = std::env::temp_dir().join(format!("cairn-disks-{}", std::process::id()));
        let sys = root.join("sys");
        let dev = root.join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let base = [("queue/logical_block_size", "512"), ("ro", "0")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            v
        };
        fake_disk(
            &sys,
            "vda",
            &with(&[("size", "4194304"), ("dev", "254:0"), ("serial", "blank")]),
        );
        std::fs::File::create(dev.join("vda"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        fake_disk(
            &sys,
            "vdb",
            &with(&[("size", "4194304"), ("dev", "254:16")]),
        );
        fake_disk(&sys, "vdb/vdb1", &[("dev", "254:17")]);
        fake_disk(&sys, "vdc", &with(&[("size", "2048"), ("dev", "254:32")]));
        fake_disk(&sys, "loop0", &with(&[("size", "4194304"), ("dev", "7:0")]));
        let mut ro = with(&[("size", "4194304"), ("dev", "254:48")]);
        ro[1] = ("ro", "1");
        fake_disk(&sys, "vdd", &ro);

        let disks: Vec<DiskInfo> = ["vda", "vdb", "vdc", "vdd"]
            .iter()
            .map(|n| describe(&sys, &dev, n, &["254:17".to_string()]))
            .collect();
        assert_eq!(disks[0].unusable, "");
        assert_eq!(disks[0].holds, "");
        assert_eq!(disks[0].model, "blank");
        assert_eq!(disks[0].size_bytes, 2 << 30);
        assert!(disks[1].unusable.starts_with("in use"), "{:?}", disks[1]);
        assert!(disks[1].holds.starts_with("unreadable"), "{:?}", disks[1]);
        assert!(disks[2].unusable.starts_with("too small"), "{:?}", disks[2]);
        assert_eq!(disks[3].unusable, "read-only");
        let mountinfo = root.join("mountinfo");
        std::fs::write(
            &mountinfo,
            "22 1 254:17 / /var/lib/cairn rw - ext4 /dev/vdb1 rw\n",
        )
        .unwrap();
        let listed = list(&sys, &dev, &mountinfo);
        assert_eq!(
            listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["vda", "vdb", "vdc", "vdd"]
        );
        assert!(listed[1].unusable.starts_with("in use"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
