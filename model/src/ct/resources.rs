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

/// What a container used, read from its cgroup and its network port.
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

    /// Every problem, each naming its field and the allowed range.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut range = |field: &str, v: Option<u64>, lo: u64, hi: u64| {
            if let Some(v) = v
                && !(lo..=hi).contains(&v)
            {
                problems.push(format!("{field} = {v} is out of range {lo}..={hi}"));
            }
        };
        range("cpu_limit", self.cpu_limit.map(u64::from), 1, 100 * 1024);
        range("cpu_weight", self.cpu_weight.map(u64::from), 1, 10_000);
        range("io_weight", self.io_weight.map(u64::from), 1, 10_000);
        range("memory", self.memory, 4 << 20, 1 << 50);
        range("swap", self.swap, 0, 1 << 50);
        range("pids", self.pids.map(u64::from), 1, 4_194_304);
        if let Some(set) = &self.cpuset
            && !is_cpu_list(set)
        {
            problems.push(format!(
                "cpuset = {set:?} is not a CPU list like \"0-3\" or \"0,2\""
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn is_cpu_list(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let lo = ends.next().and_then(|n| n.parse::<u32>().ok());
            match (lo, ends.next()) {
                (Some(_), None) => true,
                (Some(lo), Some(hi)) => hi.parse::<u32>().is_ok_and(|hi| hi >= lo),
                _ => false,
            }
        })
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
        assert!(problems[0].starts_with("cpu_limit = 0"));
        assert!(is_cpu_list("0-3,5"));
        assert!(!is_cpu_list("a"));
    }
}
