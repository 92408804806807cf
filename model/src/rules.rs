//! The rules a value must follow, each written once. host.toml validation reports a broken rule
//! at the value's `file:line:col` as `{key} {value} in {where} {problem}`; the daemons report it
//! for a request as `{field} {value} {problem}` — the same words from the same function.

use std::fmt::Display;

use crate::config::{Cidr, NAME_MAX, NETWORK_NAME_MAX, is_name};
use crate::storage::PoolKind;
use crate::vm::{CMDLINE_MAX, MAX_MEMORY_MIB, MAX_VCPUS, VM_NAME_MAX, is_mac};

/// `Err` holds what is wrong and what is expected: "is out of range; expected 1 to 8".
pub type Rule = Result<(), String>;

/// One broken rule of a request, named by its field: `vcpus 9 is out of range; expected 1 to 8`.
pub fn problem(field: &str, shown: impl Display, rule: Rule) -> Option<String> {
    rule.err().map(|p| format!("{field} {shown} {p}"))
}

pub fn in_range(n: u64, lo: u64, hi: u64) -> Rule {
    if (lo..=hi).contains(&n) {
        Ok(())
    } else {
        Err(format!("is out of range; expected {lo} to {hi}"))
    }
}

/// Most CPU a guest's limit can name, in % of one host CPU (`cpu.max`).
pub const CPU_LIMIT_MAX: u64 = 100 * 1024;
/// The cgroup weights' range (`cpu.weight`, `io.weight`).
pub const WEIGHT_MAX: u64 = 10_000;
/// The least memory limit a container may have: below it not even its init starts.
pub const CT_MEMORY_MIN: u64 = 4 << 20;
/// The largest memory or swap limit (1 PiB), far above any host, so typos are caught.
pub const MEMORY_LIMIT_MAX: u64 = 1 << 50;
/// Linux's `pid_max` ceiling.
pub const PIDS_MAX: u64 = 4_194_304;

pub fn vcpus(n: u64) -> Rule {
    in_range(n, 1, MAX_VCPUS.into())
}

pub fn cpu_limit(n: u64) -> Rule {
    in_range(n, 1, CPU_LIMIT_MAX)
}

pub fn weight(n: u64) -> Rule {
    in_range(n, 1, WEIGHT_MAX)
}

pub fn pids(n: u64) -> Rule {
    in_range(n, 1, PIDS_MAX)
}

/// A container's memory limit, in bytes.
pub fn ct_memory(bytes: u64) -> Rule {
    if bytes < CT_MEMORY_MIN {
        Err("is too small; expected at least 4 MiB (\"4M\")".into())
    } else if bytes > MEMORY_LIMIT_MAX {
        Err("is too large; expected at most 1 PiB".into())
    } else {
        Ok(())
    }
}

pub fn swap(bytes: u64) -> Rule {
    if bytes > MEMORY_LIMIT_MAX {
        Err("is too large; expected at most 1 PiB".into())
    } else {
        Ok(())
    }
}

/// A VM's RAM, in MiB.
pub fn vm_memory_mib(mib: u64) -> Rule {
    if mib == 0 {
        Err("is no memory; expected at least 1 MiB".into())
    } else if mib > MAX_MEMORY_MIB {
        Err(format!(
            "is more than a VM can have; expected at most {MAX_MEMORY_MIB} MiB (\"1T\")"
        ))
    } else {
        Ok(())
    }
}

/// Host paths: daemons run with `/` as working directory, and a relative path would silently
/// mean something else in the sandbox.
pub fn host_path(s: &str) -> Rule {
    if !s.starts_with('/') {
        Err("is not an absolute path; expected a path starting with '/'".into())
    } else if s.contains('\0') {
        Err("contains a NUL byte; expected a path".into())
    } else {
        Ok(())
    }
}

pub fn cmdline(s: &str) -> Rule {
    if s.len() > CMDLINE_MAX {
        Err(format!(
            "is too long ({} bytes); expected at most {CMDLINE_MAX} bytes",
            s.len()
        ))
    } else if s.bytes().any(|b| b == 0 || b == b'\n' || b == b'\r') {
        Err("is not one line; expected a kernel command line without line breaks".into())
    } else {
        Ok(())
    }
}

pub fn mac(s: &str) -> Rule {
    if is_mac(s) {
        Ok(())
    } else {
        Err(
            "is not a unicast MAC address; expected six hex pairs such as \
             \"52:54:00:12:34:56\" with the first octet even"
                .into(),
        )
    }
}

/// How a command line is shown in a problem: quoted, or by its size when too long to read.
pub fn cmdline_shown(s: &str) -> String {
    if s.len() > CMDLINE_MAX {
        format!("({} bytes)", s.len())
    } else {
        format!("{s:?}")
    }
}

pub fn vm_name(s: &str) -> Rule {
    name_rule(s, VM_NAME_MAX, "vm")
}

/// A name of lowercase letters, digits and hyphens, starting with a letter or digit.
fn name_rule(s: &str, max: usize, what: &str) -> Rule {
    if is_name(s, max) {
        Ok(())
    } else {
        Err(format!(
            "is not a valid {what} name; expected lowercase letters, digits and hyphens, \
             starting with a letter or digit, at most {max} characters"
        ))
    }
}

/// A stord volume: `POOL/NAME`, each part a name.
pub fn volume_name(s: &str) -> Rule {
    match s.split_once('/') {
        Some((pool, name)) if is_name(pool, NAME_MAX) && is_name(name, NAME_MAX) => Ok(()),
        _ => Err(format!(
            "is not a volume; expected POOL/NAME, each of lowercase letters, digits and hyphens, \
             starting with a letter or digit, at most {NAME_MAX} characters"
        )),
    }
}

pub fn pool_name(s: &str) -> Rule {
    name_rule(s, NAME_MAX, "pool")
}

const HOLDS_NO_FILES: &str =
    "which holds block devices, not files; expected a dir or nfs pool for a template";

/// A template is files (its tarball and unpacked rootfs): only pools that hold files (dir,
/// nfs) can keep one; thin and iscsi pools hold block devices.
pub fn template_pool_kind(kind: PoolKind) -> Rule {
    match kind {
        PoolKind::Dir | PoolKind::Nfs => Ok(()),
        PoolKind::Thin => Err(format!("is a thin pool, {HOLDS_NO_FILES}")),
        PoolKind::Iscsi => Err(format!("is an iscsi pool, {HOLDS_NO_FILES}")),
    }
}

pub fn network_name(s: &str) -> Rule {
    name_rule(s, NETWORK_NAME_MAX, "network")
}

/// `cpuset.cpus` syntax: `0-3`, `0,2`, `0-1,4`.
pub fn cpuset(s: &str) -> Rule {
    let ok = !s.is_empty()
        && s.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let lo = ends.next().and_then(|n| n.parse::<u32>().ok());
            match (lo, ends.next()) {
                (Some(_), None) => true,
                (Some(lo), Some(hi)) => hi.parse::<u32>().is_ok_and(|hi| hi >= lo),
                _ => false,
            }
        });
    if ok {
        Ok(())
    } else {
        Err("is not a CPU list; expected a list such as \"0-3\" or \"0,2\"".into())
    }
}

/// A disk is a stord volume or a raw image file, never both.
pub const ONE_DISK_SOURCE: &str =
    "needs exactly one of volume (a stord volume) and path (a raw image file on the host)";

/// A guest's address on a network that has a subnet lies inside it, with the subnet's prefix.
pub fn address_in_subnet(addr: Cidr, subnet: Cidr, network: &str) -> Rule {
    if !subnet.contains(addr.addr) {
        Err(format!(
            "lies outside subnet {subnet} of network {network:?}"
        ))
    } else if addr.prefix != subnet.prefix {
        Err(format!(
            "has prefix /{} but network {network:?} has subnet {subnet}; expected \"{}/{}\"",
            addr.prefix, addr.addr, subnet.prefix
        ))
    } else {
        Ok(())
    }
}

/// Each address is held once on a network: `holder` is who holds it already, if anyone
/// (`container "web2"`, `the host`).
pub fn address_free(holder: Option<&str>) -> Rule {
    match holder {
        Some(h) => Err(format!(
            "is already held by {h}; expected each address once on a network"
        )),
        None => Ok(()),
    }
}

/// Containers and VMs share one namespace: both become guests with that name in the API, in
/// cgroup paths and port owners. `other` is the guest of the other kind that has the name.
pub fn guest_name_free(other: Option<&str>) -> Rule {
    match other {
        Some(o) => Err(format!(
            "has the same name as {o}; containers and vms share one namespace"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_their_words() {
        assert_eq!(
            problem("vcpus", 9, vcpus(9)).as_deref(),
            Some("vcpus 9 is out of range; expected 1 to 8")
        );
        assert_eq!(problem("vcpus", 8, vcpus(8)), None);
        assert!(vm_name(&"a".repeat(VM_NAME_MAX)).is_ok());
        assert!(vm_name(&"a".repeat(VM_NAME_MAX + 1)).is_err());
        assert!(cpuset("0-1,4").is_ok() && cpuset("3-1").is_err() && cpuset("").is_err());
        assert!(host_path("/a").is_ok() && host_path("a").is_err() && host_path("/a\0").is_err());
        assert!(vm_memory_mib(0).is_err() && vm_memory_mib(MAX_MEMORY_MIB + 1).is_err());
        assert!(ct_memory(CT_MEMORY_MIN - 1).is_err() && ct_memory(CT_MEMORY_MIN).is_ok());
        assert_eq!(cmdline_shown(&"x".repeat(CMDLINE_MAX + 1)), "(2048 bytes)");
        assert!(pool_name("fast").is_ok() && pool_name("../x").is_err());
        assert!(template_pool_kind(PoolKind::Dir).is_ok());
        assert!(template_pool_kind(PoolKind::Nfs).is_ok());
        assert_eq!(
            problem("pool", "\"t\"", template_pool_kind(PoolKind::Thin)).as_deref(),
            Some(
                "pool \"t\" is a thin pool, which holds block devices, not files; expected a dir \
                 or nfs pool for a template"
            )
        );
        assert!(template_pool_kind(PoolKind::Iscsi).is_err());
    }
}
