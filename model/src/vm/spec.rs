//! What a client asks for when it creates a VM.

use serde::{Deserialize, Serialize};

use crate::ct::Resources;

/// Longest VM name: it travels in port owners ("vm:NAME"), tap names and directory names.
pub const VM_NAME_MAX: usize = 40;
/// Most vCPUs a VM can have.
pub const MAX_VCPUS: u32 = 8;

/// Everything wrong with a spec, each problem naming its field. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct InvalidVm {
    pub problems: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn one() -> u32 {
    1
}

/// A virtio block device: a stord volume or a raw file on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// A stord volume, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// A raw image file on the host (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// A virtio net device behind a tap that netd makes a port of `network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    pub network: String,
    /// The guest's MAC; derived from the VM name and NIC index when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: String,
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Host path of the kernel: an ELF vmlinux or a bzImage.
    pub kernel: String,
    /// Host path of an initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The kernel command line; the VMM appends the console and virtio-mmio device entries.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicSpec>,
    /// CPU limits of the vCPU threads (cpu_limit %, cpu_weight, cpuset); the memory fields
    /// are not used (the guest's RAM is `memory_mib`).
    #[serde(default)]
    pub resources: Resources,
    /// Start with hostd (host.toml VMs default to true).
    #[serde(default, skip_serializing_if = "is_false")]
    pub autostart: bool,
}

/// `[a-z0-9][a-z0-9-]*`, at most [`VM_NAME_MAX`] bytes.
pub fn is_vm_name(s: &str) -> bool {
    crate::ct::is_ct_name(s) && s.len() <= VM_NAME_MAX
}

/// `aa:bb:cc:dd:ee:ff`, unicast (the first octet's low bit clear).
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

impl VmSpec {
    /// Checks what can be checked without the host (files, volumes and networks are hostd's
    /// to check); every problem is listed, each naming its field.
    pub fn validate(&self) -> Result<(), InvalidVm> {
        let mut problems = Vec::new();
        if !is_vm_name(&self.name) {
            problems.push(format!(
                "name {:?}: use a-z, 0-9 and '-', starting with a letter or digit, at most {VM_NAME_MAX} bytes",
                self.name
            ));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            problems.push(format!("vcpus {}: must be 1 to {MAX_VCPUS}", self.vcpus));
        }
        if self.memory_mib == 0 {
            problems.push("memory_mib 0: a VM needs memory".into());
        }
        if !self.kernel.starts_with('/') {
            problems.push(format!(
                "kernel {:?}: must be an absolute path",
                self.kernel
            ));
        }
        if let Some(initrd) = &self.initrd
            && !initrd.starts_with('/')
        {
            problems.push(format!("initrd {initrd:?}: must be an absolute path"));
        }
        for (i, d) in self.disks.iter().enumerate() {
            match (&d.volume, &d.path) {
                (Some(_), Some(_)) | (None, None) => {
                    problems.push(format!("disks[{i}]: give exactly one of volume and path"))
                }
                (None, Some(p)) if !p.starts_with('/') => {
                    problems.push(format!("disks[{i}].path {p:?}: must be an absolute path"))
                }
                _ => {}
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            if let Some(mac) = &n.mac
                && !is_mac(mac)
            {
                problems.push(format!(
                    "nics[{i}].mac {mac:?}: want a unicast MAC like 52:54:00:12:34:56"
                ));
            }
        }
        if let Err(mut p) = self.resources.validate() {
            problems.append(&mut p);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidVm { problems })
        }
    }
}
