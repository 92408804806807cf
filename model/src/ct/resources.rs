//! A container's resource limits (cgroup v2) and its measured usage.

use serde::{Deserialize, Serialize};

/// Limits; `None` leaves a limit unset (unlimited / the kernel default). All of them can be
/// changed on a running container (`ct.set`), without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in % of one host CPU (`cpu.max`): 50 = half a CPU, 200 = two CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<u32>,
    /// Relative CPU share when CPUs are contended (`cpu.weight`, 1..=10000; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    /// CPUs the container may run on (`cpuset.cpus`), e.g. "0-1" or "0,2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// `memory.max` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// `memory.swap.max` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<u64>,
    /// `pids.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// `io.weight` (1..=10000; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u32>,
}

/// What a container used, read from its cgroup and its network namespace (net_*_bytes: its
/// links but loopback, as the container counts them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_usec: u64,
    pub memory_bytes: u64,
    pub pids: u32,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// Processes the kernel OOM-killed in the container (`memory.events` oom_kill).
    pub oom_kills: u64,
}

impl Resources {
    /// No limit given: every field left to its default.
    pub fn is_unset(&self) -> bool {
        *self == Resources::default()
    }

    /// Every problem, each naming its field, by the rules host.toml follows
    /// (`crate::rules`).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        use crate::rules::{self, problem};
        let mut p = Vec::new();
        let mut check = |field: &str, v: Option<u64>, rule: fn(u64) -> rules::Rule| {
            if let Some(v) = v {
                p.extend(problem(field, v, rule(v)));
            }
        };
        check("cpu_limit", self.cpu_limit.map(u64::from), rules::cpu_limit);
        check("cpu_weight", self.cpu_weight.map(u64::from), rules::weight);
        check("io_weight", self.io_weight.map(u64::from), rules::weight);
        check("memory", self.memory, rules::ct_memory);
        check("swap", self.swap, rules::swap);
        check("pids", self.pids.map(u64::from), rules::pids);
        if let Some(set) = &self.cpuset {
            p.extend(problem(
                "cpuset",
                format_args!("{set:?}"),
                rules::cpuset(set),
            ));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_cpu_lists() {
        assert_eq!(Resources::default().validate(), Ok(()));
        let bad = Resources {
            cpu_limit: Some(0),
            cpu_weight: Some(20_000),
            cpuset: Some("3-1".into()),
            memory: Some(1024),
            ..Resources::default()
        };
        let problems = bad.validate().unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(
            problems[0],
            "cpu_limit 0 is out of range; expected 1 to 102400"
        );
        assert!(crate::rules::cpuset("0-3,5").is_ok());
        assert!(crate::rules::cpuset("a").is_err());
    }
}
