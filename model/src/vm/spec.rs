//! What a client asks for when it creates a VM.

use serde::{Deserialize, Serialize};

use crate::ct::Resources;

/// Longest VM name: it travels in port owners ("vm:NAME"), tap names and directory names.
pub const VM_NAME_MAX: usize = 40;
/// Most vCPUs a VM can have.
pub const MAX_VCPUS: u32 = 8;
/// Most guest RAM a spec may ask for (1 TiB); whether the host has it is hostd's to say.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Longest kernel command line a spec may give: Linux's x86 `COMMAND_LINE_SIZE` is 2048 bytes
/// with the NUL, and the VMM appends its own entries, which hostd checks against the total.
pub const CMDLINE_MAX: usize = 2047;

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
    /// The guest's addresses on `network` (`addr/prefix`): port security lets the guest send
    /// from these only (with none, of a family, it checks only the MAC for that family), and
    /// they are held on the network as a container's are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
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
    #[serde(default, skip_serializing_if = "Resources::is_unset")]
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

/// What `vm.set` changes in a stopped VM's spec: only the members given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Guest RAM in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

impl VmChanges {
    /// `spec` with these changes, checked by the rules `vm.create` applies.
    pub fn apply(&self, spec: &VmSpec) -> Result<VmSpec, InvalidVm> {
        if self.vcpus.is_none() && self.memory_mib.is_none() {
            return Err(InvalidVm {
                problems: vec!["nothing to change: give vcpus, memory_mib or both".into()],
            });
        }
        let mut new = spec.clone();
        if let Some(v) = self.vcpus {
            new.vcpus = v;
        }
        if let Some(m) = self.memory_mib {
            new.memory_mib = m;
        }
        new.validate()?;
        Ok(new)
    }
}

impl VmSpec {
    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }

    /// Checks what can be checked without the host (files, volumes and networks are hostd's
    /// to check), by the rules host.toml's `[[vm]]` follows (`crate::rules`); every problem is
    /// listed, each naming its field.
    pub fn validate(&self) -> Result<(), InvalidVm> {
        use crate::rules::{self, problem};
        let q = |s: &str| format!("{s:?}");
        let mut p: Vec<String> = Vec::new();
        p.extend(problem("name", q(&self.name), rules::vm_name(&self.name)));
        p.extend(problem(
            "vcpus",
            self.vcpus,
            rules::vcpus(self.vcpus.into()),
        ));
        p.extend(problem(
            "memory_mib",
            self.memory_mib,
            rules::vm_memory_mib(self.memory_mib),
        ));
        p.extend(problem(
            "kernel",
            q(&self.kernel),
            rules::host_path(&self.kernel),
        ));
        if let Some(initrd) = &self.initrd {
            p.extend(problem("initrd", q(initrd), rules::host_path(initrd)));
        }
        p.extend(problem(
            "cmdline",
            rules::cmdline_shown(&self.cmdline),
            rules::cmdline(&self.cmdline),
        ));
        for (i, d) in self.disks.iter().enumerate() {
            match (&d.volume, &d.path) {
                (Some(_), Some(_)) | (None, None) => {
                    p.push(format!("disks[{i}] {}", rules::ONE_DISK_SOURCE))
                }
                (None, Some(path)) => p.extend(problem(
                    &format!("disks[{i}].path"),
                    q(path),
                    rules::host_path(path),
                )),
                (Some(v), None) => p.extend(problem(
                    &format!("disks[{i}].volume"),
                    q(v),
                    rules::volume_name(v),
                )),
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            p.extend(problem(
                &format!("nics[{i}].network"),
                q(&n.network),
                rules::network_name(&n.network),
            ));
            for (j, a) in n.addresses.iter().enumerate() {
                if let Err(e) = crate::config::parse_cidr(a) {
                    p.push(format!(
                        "nics[{i}].addresses[{j}] {a:?} is not an address with prefix like \
                         \"10.0.0.5/24\": {e}"
                    ));
                }
            }
            let Some(mac) = &n.mac else { continue };
            if let Some(bad) = problem(&format!("nics[{i}].mac"), q(mac), rules::mac(mac)) {
                p.push(bad);
            } else if let Some(first) = self.nics[..i].iter().position(|o| {
                o.mac
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(mac))
            }) {
                p.push(format!(
                    "nics[{i}].mac {mac:?} is already used by nics[{first}]; expected each MAC once"
                ));
            }
        }
        if let Err(problems) = self.resources.validate() {
            p.extend(problems.into_iter().map(|m| format!("resources.{m}")));
        }
        for (field, set) in [
            ("memory", self.resources.memory.is_some()),
            ("swap", self.resources.swap.is_some()),
        ] {
            if set {
                p.push(format!(
                    "resources.{field} is not used for VMs; the guest's RAM is memory_mib"
                ));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(InvalidVm { problems: p })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> VmSpec {
        VmSpec {
            name: "deb".into(),
            vcpus: 2,
            memory_mib: 1024,
            kernel: "/var/lib/cairn/kernels/vmlinux".into(),
            initrd: Some("/var/lib/cairn/kernels/initrd.img".into()),
            cmdline: "console=ttyS0 reboot=k panic=1".into(),
            disks: vec![
                DiskSpec {
                    volume: None,
                    path: Some("/var/lib/cairn/disks/deb.raw".into()),
                    read_only: false,
                },
                DiskSpec {
                    volume: Some("local/data".into()),
                    path: None,
                    read_only: true,
                },
            ],
            nics: vec![
                NicSpec {
                    network: "lan".into(),
                    mac: Some("52:54:00:12:34:56".into()),
                    addresses: vec!["10.0.0.5/24".into(), "fd00::5/64".into()],
                },
                NicSpec {
                    network: "dmz".into(),
                    mac: None,
                    addresses: Vec::new(),
                },
            ],
            resources: Resources {
                cpu_limit: Some(150),
                cpu_weight: Some(200),
                ..Resources::default()
            },
            autostart: true,
        }
    }

    fn problems(spec: &VmSpec) -> Vec<String> {
        spec.validate()
            .err()
            .map(|e| e.problems)
            .unwrap_or_default()
    }

    #[test]
    fn a_good_spec_passes() {
        assert_eq!(good().validate(), Ok(()));
        assert_eq!(good().memory_bytes(), 1 << 30);
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let spec = VmSpec {
            name: "Bad_Name".into(),
            vcpus: 0,
            memory_mib: 0,
            kernel: "vmlinux".into(),
            initrd: Some("initrd.img".into()),
            cmdline: "a\nb".into(),
            disks: vec![
                DiskSpec {
                    volume: Some("v".into()),
                    path: Some("/x".into()),
                    read_only: false,
                },
                DiskSpec {
                    volume: None,
                    path: None,
                    read_only: false,
                },
                DiskSpec {
                    volume: None,
                    path: Some("disk.raw".into()),
                    read_only: false,
                },
                DiskSpec {
                    volume: Some("Vol".into()),
                    path: None,
                    read_only: false,
                },
            ],
            nics: vec![
                NicSpec {
                    network: "a-network-name-too-long".into(),
                    mac: Some("01:00:5e:00:00:01".into()),
                    addresses: Vec::new(),
                },
                NicSpec {
                    network: "lan".into(),
                    mac: Some("52:54:00:aa:bb:cc".into()),
                    addresses: vec!["10.0.0.5".into()],
                },
                NicSpec {
                    network: "lan".into(),
                    mac: Some("52:54:00:AA:BB:CC".into()),
                    addresses: Vec::new(),
                },
            ],
            resources: Resources {
                cpu_limit: Some(0),
                memory: Some(1 << 30),
                ..Resources::default()
            },
            autostart: false,
        };
        let p = problems(&spec);
        let fields: Vec<&str> = p
            .iter()
            .map(|m| m.split([' ', ':']).next().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            [
                "name",
                "vcpus",
                "memory_mib",
                "kernel",
                "initrd",
                "cmdline",
                "disks[0]",
                "disks[1]",
                "disks[2].path",
                "disks[3].volume",
                "nics[0].network",
                "nics[0].mac",
                "nics[1].addresses[0]",
                "nics[2].mac",
                "resources.cpu_limit",
                "resources.memory",
            ],
            "{p:#?}"
        );
        assert!(p[2].contains("is no memory"), "{}", p[2]);
        assert!(p[3].contains("absolute path"), "{}", p[3]);
        assert!(p[12].contains("has no prefix length"), "{}", p[12]);
        assert!(p[13].contains("is already used by nics[1]"), "{}", p[13]);
        // Display joins them, for faults and logs.
        let shown = spec.validate().unwrap_err().to_string();
        assert!(shown.starts_with("name \"Bad_Name\""), "{shown}");
        assert_eq!(shown, p.join("; "));
    }

    #[test]
    fn ranges_and_limits() {
        let mut s = good();
        s.vcpus = MAX_VCPUS;
        s.memory_mib = MAX_MEMORY_MIB;
        s.cmdline = "x".repeat(CMDLINE_MAX);
        assert_eq!(s.validate(), Ok(()));
        s.vcpus = MAX_VCPUS + 1;
        s.memory_mib = MAX_MEMORY_MIB + 1;
        s.cmdline.push('x');
        s.kernel = "/boot/vm\0linux".into();
        s.name = "a".repeat(VM_NAME_MAX + 1);
        s.resources.swap = Some(0);
        let p = problems(&s);
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p[0].starts_with("name"), "{}", p[0]);
        assert_eq!(p[1], "vcpus 9 is out of range; expected 1 to 8");
        assert!(p[2].starts_with("memory_mib 1048577"), "{}", p[2]);
        assert!(p[3].contains("NUL"), "{}", p[3]);
        assert!(
            p[4].starts_with("cmdline (2048 bytes) is too long"),
            "{}",
            p[4]
        );
        assert!(p[5].starts_with("resources.swap"), "{}", p[5]);
    }

    #[test]
    fn macs() {
        assert!(is_mac("52:54:00:12:34:56"));
        assert!(is_mac("02:AB:cd:00:00:01"));
        assert!(!is_mac("01:00:5e:00:00:01"), "multicast");
        assert!(!is_mac("52:54:00:12:34"));
        assert!(!is_mac("52-54-00-12-34-56"));
        assert!(!is_mac("52:54:00:12:34:5g"));
        assert!(!is_mac("52:54:00:12:34:567"));
        assert!(!is_mac(""));
    }

    #[test]
    fn json_round_trip_with_defaults_left_out() {
        let spec = good();
        let json = serde_json::to_string(&spec).unwrap_or_default();
        let back: VmSpec = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(back, spec);

        let minimal: VmSpec = serde_json::from_str(r#"{"name":"a","memory_mib":64,"kernel":"/k"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(minimal.vcpus, 1, "vcpus defaults to 1");
        assert!(minimal.disks.is_empty() && minimal.nics.is_empty() && !minimal.autostart);
        assert_eq!(minimal.validate(), Ok(()));
        let json = serde_json::to_string(&minimal).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"name":"a","vcpus":1,"memory_mib":64,"kernel":"/k"}"#
        );
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        for (json, field) in [
            (
                r#"{"name":"a","memory_mib":64,"kernel":"/k","memory":1}"#,
                "memory",
            ),
            (
                r#"{"name":"a","memory_mib":64,"kernel":"/k","disks":[{"file":"/x"}]}"#,
                "file",
            ),
            (
                r#"{"name":"a","memory_mib":64,"kernel":"/k","nics":[{"network":"l","ip":"x"}]}"#,
                "ip",
            ),
            (
                r#"{"name":"a","memory_mib":64,"kernel":"/k","resources":{"cpu":1}}"#,
                "cpu",
            ),
        ] {
            let err = serde_json::from_str::<VmSpec>(json)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains(&format!("unknown field `{field}`")),
                "{json}: {err}"
            );
        }
        let err = serde_json::from_str::<VmSpec>(r#"{"name":"a","kernel":"/k"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("missing field `memory_mib`"), "{err}");
    }

    #[test]
    fn vm_info_round_trip() {
        use crate::vm::{VmInfo, VmState};
        let info = VmInfo {
            name: "deb".into(),
            state: VmState::Running,
            pid: Some(42),
            last_exit: None,
            taps: vec!["vm-deb-0".into()],
            macs: vec!["52:54:00:12:34:56".into()],
            spec: good(),
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        assert!(json.contains(r#""state":"running""#), "{json}");
        assert!(!json.contains("last_exit"), "{json}");
        let back: VmInfo = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, info);
        for s in [
            VmState::Created,
            VmState::Paused,
            VmState::Stopped,
            VmState::Crashed,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap_or_default(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
