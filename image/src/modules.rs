//! Which kernel modules the appliance carries, and in what order init loads them.
//!
//! Debian's package ships no modules.dep, so we run `depmod -b` over a scratch tree that points
//! at the unpacked modules, then take the dependency closure of [`WANTED`] in load order
//! (dependencies first). init reads that order from /etc/cairn/modules and calls finit_module
//! on each, so everything here is decided at build time.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::kernel::{Kernel, run};

/// Every module Cairn needs, by what uses it. Names as modprobe spells them ('-' == '_').
pub const WANTED: &[&str] = &[
    // NICs QEMU and common servers present, and virtio transport for them.
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "r8169",
    "tg3",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    // Disks a server keeps its state partition on (SATA/SAS through sd, NVMe).
    "ahci",
    "sd_mod",
    "nvme",
    // netd: bridges, VLANs, ports, shaping.
    "bridge",
    "8021q",
    "bonding",
    "veth",
    "tun",
    "dummy",
    "ifb",
    "sch_htb",
    "sch_tbf",
    "sch_ingress",
    "cls_u32",
    "cls_matchall",
    "act_police",
    "act_mirred",
    // netd: port security (nf_tables, netdev family; counter is built in on 6.1).
    "nf_tables",
    // hostd: containers (overlay over templates) and VMs (KVM on AMD or Intel).
    "overlay",
    "kvm_amd",
    "kvm_intel",
    // stord: loop-backed pools (its other kinds' modules are ON_DEMAND).
    "loop",
    // Debug appliances mount the guest kit's drive (ext4, read-only) for the nested-VM tests.
    "ext4",
];

/// Modules loaded only when needed, by group (modules.d in the image), not at boot: each load
/// costs ~50 ms of boot under TCG. The filesystems a CAIRN-CONFIG medium may carry (init loads
/// them when it finds one), the watchdogs of a trial boot, and stord's pool kinds: dm-thin, NFS client, iSCSI initiator and
/// LIO target (issue 12's stord loads them when a pool or export of that kind is made).
pub const ON_DEMAND: &[(&str, &[&str])] = &[
    ("vfat", &["vfat", "nls_cp437", "nls_ascii", "nls_utf8"]),
    ("iso9660", &["isofs"]),
    // init arms a watchdog while an updated system is on trial: the hardware ones of QEMU,
    // Intel and AMD chipsets, and the software one where none binds.
    ("watchdog", &["i6300esb", "iTCO_wdt", "sp5100_tco"]),
    ("softdog", &["softdog"]),
    // A thin pool needs only dm-thin: its group loads in ~1 s under TCG, where the whole
    // storage group takes ~6 s, past the API's budget for pool.create.
    ("thin", &["dm_thin_pool"]),
    // Likewise nfs pools (v4 and, for `vers=3` in a pool's options, v3) and iscsi pools.
    ("nfs", &["nfsv4", "nfsv3"]),
    ("iscsi", &["iscsi_tcp"]),
    (
        "storage",
        &[
            "dm_thin_pool",
            "nfsv4",
            "nfsv3",
            "iscsi_tcp",
            "configfs",
            "target_core_mod",
            "target_core_iblock",
            "target_core_file",
            "iscsi_target_mod",
        ],
    ),
];

/// Soft dependencies modules.dep does not express (they live in modules.softdep as aliases):
/// (module, must be loaded before it). libcrc32c asks the crypto API for "crc32c" and fails
/// without an implementation; crc-t10dif likewise for "crct10dif".
/// ext4 and jbd2 likewise ("softdep pre: crypto-crc32c") for metadata checksums at mount.
const SOFT_PRE: &[(&str, &str)] = &[
    ("libcrc32c", "crc32c_generic"),
    ("jbd2", "crc32c_generic"),
    ("ext4", "crc32c_generic"),
    ("crc_t10dif", "crct10dif_generic"),
];

/// A parsed modules.dep: module name → (path relative to lib/modules/<rel>, its dependencies).
#[derive(Debug, Default)]
pub struct DepTable {
    mods: HashMap<String, (String, Vec<String>)>,
}

/// "kernel/net/8021q/8021q.ko.xz" → "8021q"; "kvm-amd.ko" → "kvm_amd".
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl DepTable {
    pub fn parse(text: &str) -> Result<DepTable> {
        let mut mods = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((path, deps)) = line.split_once(':') else {
                bail!("modules.dep line {}: no ':' in {line:?}", n + 1);
            };
            let deps = deps.split_whitespace().map(module_name).collect();
            mods.insert(module_name(path), (path.trim().to_string(), deps));
        }
        Ok(DepTable { mods })
    }

    pub fn path(&self, name: &str) -> Option<&str> {
        self.mods.get(name).map(|(p, _)| p.as_str())
    }

    /// The closure of `wanted` (plus [`SOFT_PRE`]) in an order where each module comes after
    /// everything it needs. Names in `builtin` are skipped (already in the kernel); any other
    /// unknown name is an error, since it means the kernel config changed under us.
    pub fn load_order(&self, wanted: &[&str], builtin: &BTreeSet<String>) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut missing = Vec::new();
        for w in wanted {
            let w = w.replace('-', "_");
            if builtin.contains(&w) {
                continue;
            }
            if !self.mods.contains_key(&w) {
                missing.push(w);
                continue;
            }
            self.visit(&w, builtin, &mut done, &mut Vec::new(), &mut order)?;
        }
        if !missing.is_empty() {
            bail!("the kernel has neither a module nor a built-in named {missing:?}");
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        builtin: &BTreeSet<String>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(name) || builtin.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            bail!("module dependency cycle: {} -> {name}", stack.join(" -> "));
        }
        let Some((_, deps)) = self.mods.get(name) else {
            bail!(
                "module {name} (needed by {}) is not in modules.dep",
                stack.last().map(String::as_str).unwrap_or("?")
            );
        };
        stack.push(name.to_string());
        for (m, pre) in SOFT_PRE {
            if *m == name && self.mods.contains_key(*pre) {
                self.visit(pre, builtin, done, stack, order)?;
            }
        }
        // modules.dep lists the full closure; visiting each entry still yields a valid order
        // because every dependency's own dependencies are placed first.
        for d in deps {
            self.visit(d, builtin, done, stack, order)?;
        }
        stack.pop();
        done.insert(name.to_string());
        order.push(name.to_string());
        Ok(())
    }
}

/// Names of modules built into the kernel, from modules.builtin.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(module_name)
        .collect()
}

/// One module as it goes into the image.
#[derive(Debug, Clone)]
pub struct Module {
    /// Relative to /lib/modules/<release>/, always ending in plain ".ko".
    pub rel_path: String,
    /// An uncompressed .ko on the build host.
    pub file: PathBuf,
}

/// Computes the load order of [`WANTED`] and decompresses each module into `staging`.
pub fn collect(kernel: &Kernel, staging: &Path) -> Result<Vec<Module>> {
    collect_set(kernel, staging, WANTED)
}

/// [`collect`] for any set of modules (the guest kit has its own).
pub fn collect_set(kernel: &Kernel, staging: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    let deps_text = modules_dep(kernel)?;
    let table = DepTable::parse(&deps_text)?;
    let builtin_path = kernel.modules_dir.join("modules.builtin");
    let builtin = parse_builtin(
        &fs::read_to_string(&builtin_path)
            .with_context(|| format!("reading {}", builtin_path.display()))?,
    );
    let order = table.load_order(wanted, &builtin)?;
    let mut out = Vec::new();
    for name in order {
        let Some(rel) = table.path(&name) else {
            bail!("{name} vanished from modules.dep");
        };
        let src = kernel.modules_dir.join(rel);
        let (plain, tool) = match rel.rsplit_once(".ko") {
            Some((stem, ".xz")) => (format!("{stem}.ko"), Some("xz")),
            Some((stem, ".zst")) => (format!("{stem}.ko"), Some("zstd")),
            Some((stem, ".gz")) => (format!("{stem}.ko"), Some("gzip")),
            Some((_, "")) => (rel.to_string(), None),
            _ => bail!("{rel}: not a .ko module file"),
        };
        let file = match tool {
            // finit_module on a compressed file needs MODULE_INIT_COMPRESSED_FILE and a kernel
            // that supports that compressor; decompressing here keeps init simple.
            Some(tool) => {
                let dst = staging.join("modules").join(&plain);
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                let bytes = run(Command::new(tool).arg("-dc").arg(&src))
                    .with_context(|| format!("decompressing {}", src.display()))?;
                fs::write(&dst, bytes).with_context(|| format!("writing {}", dst.display()))?;
                dst
            }
            None => src,
        };
        out.push(Module {
            rel_path: plain,
            file,
        });
    }
    Ok(out)
}

/// The /etc/cairn/modules file: one path per line, in load order.
pub fn load_list(mods: &[Module]) -> String {
    let mut s = String::new();
    for m in mods {
        s.push_str(&m.rel_path);
        s.push('\n');
    }
    s
}

/// Generates modules.dep for the unpacked kernel (once; cached next to it).
fn modules_dep(kernel: &Kernel) -> Result<String> {
    let tree = kernel.cache.join("depmod");
    let rel_dir = tree.join("lib/modules").join(&kernel.release);
    let dep = rel_dir.join("modules.dep");
    if !dep.is_file() {
        let tmp = kernel.cache.join("depmod.tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        let tmp_rel = tmp.join("lib/modules").join(&kernel.release);
        fs::create_dir_all(&tmp_rel).with_context(|| format!("creating {}", tmp_rel.display()))?;
        // depmod writes into the tree it scans; a symlinked `kernel` dir keeps the unpacked
        // package pristine and avoids copying ~400 MB.
        std::os::unix::fs::symlink(kernel.modules_dir.join("kernel"), tmp_rel.join("kernel"))
            .context("linking the module tree for depmod")?;
        for f in [
            "modules.builtin",
            "modules.builtin.modinfo",
            "modules.order",
        ] {
            let src = kernel.modules_dir.join(f);
            if src.exists() {
                fs::copy(&src, tmp_rel.join(f))
                    .with_context(|| format!("copying {}", src.display()))?;
            }
        }
        run(Command::new("depmod")
            .arg("-b")
            .arg(&tmp)
            .arg(&kernel.release))
        .context("running depmod (package kmod)")?;
        if tree.exists() {
            fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
        }
        fs::rename(&tmp, &tree).with_context(|| format!("renaming {}", tmp.display()))?;
    }
    fs::read_to_string(&dep).with_context(|| format!("reading {}", dep.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A cut of the real 6.1.0-56 modules.dep (dependencies listed as depmod does).
    const DEP: &str = "\
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-bio-prison.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/persistent-data/dm-persistent-data.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/libcrc32c.ko
kernel/drivers/md/dm-thin-pool.ko: kernel/drivers/md/persistent-data/dm-persistent-data.ko kernel/drivers/md/dm-bio-prison.ko kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/libcrc32c.ko
kernel/net/llc/llc.ko:
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/802/garp.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/mrp.ko:
kernel/net/8021q/8021q.ko.xz: kernel/net/802/garp.ko kernel/net/802/stp.ko kernel/net/802/mrp.ko kernel/net/llc/llc.ko
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/virt/lib/irqbypass.ko:
kernel/arch/x86/kvm/kvm-amd.ko: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/crypto/ccp/ccp.ko:
";

    fn pos(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|m| m == name)
            .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko"), "kvm_amd");
        assert_eq!(module_name("kernel/net/8021q/8021q.ko.xz"), "8021q");
        assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko.zst"), "overlay");
    }

    #[test]
    fn closure_puts_dependencies_first() {
        let t = DepTable::parse(DEP).unwrap();
        let order = t
            .load_order(
                &["dm_thin_pool", "8021q", "bridge", "kvm-amd"],
                &BTreeSet::new(),
            )
            .unwrap();
        // Each module once.
        let set: BTreeSet<_> = order.iter().collect();
        assert_eq!(set.len(), order.len());
        // Every module after each of its dependencies.
        for m in &order {
            for d in &t.mods[m].1 {
                assert!(pos(&order, d) < pos(&order, m), "{d} after {m}: {order:?}");
            }
        }
        // The soft dependency the notes warn about.
        assert!(pos(&order, "crc32c_generic") < pos(&order, "libcrc32c"));
        assert!(pos(&order, "dm_mod") < pos(&order, "dm_thin_pool"));
        assert!(pos(&order, "llc") < pos(&order, "stp"));
        assert!(pos(&order, "irqbypass") < pos(&order, "kvm"));
        assert!(pos(&order, "kvm") < pos(&order, "kvm_amd"));
        // Nothing unrequested.
        assert!(!order.contains(&"dm_bio_prison_x".to_string()));
        assert_eq!(order.len(), 17);
    }

    #[test]
    fn builtins_are_skipped_and_unknowns_fail() {
        let t = DepTable::parse(DEP).unwrap();
        let builtin: BTreeSet<String> = ["llc".to_string(), "configfs".to_string()].into();
        let order = t.load_order(&["bridge", "configfs"], &builtin).unwrap();
        assert_eq!(order, ["stp", "bridge"]);
        let err = t.load_order(&["nope"], &builtin).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn paths_keep_compression_suffix_for_lookup() {
        let t = DepTable::parse(DEP).unwrap();
        assert_eq!(t.path("8021q"), Some("kernel/net/8021q/8021q.ko.xz"));
        assert!(DepTable::parse("no colon here").is_err());
    }
}
