//! What hostd reports about containers and templates.

use serde::{Deserialize, Serialize};

use super::{Resources, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Made (overlay dirs, spec) but never started.
    Created,
    Running,
    /// Every process frozen (cgroup freezer).
    Paused,
    /// Its init exited (see `exit_code`) or it was stopped.
    Stopped,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerInfo {
    pub name: String,
    pub template: String,
    pub state: ContainerState,
    /// The container's init as the host sees it (running or paused only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How the last run ended: the exit status, or 128 + signal number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub hostname: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The host-side link of the container's eth0 (netd's port name), while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    pub privileged: bool,
    /// Started when the host boots.
    #[serde(default)]
    pub autostart: bool,
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Unix time (seconds) of create and of the last start.
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The imported tarball's digest, `sha256:<hex>`.
    pub sha256: String,
    /// Bytes of file data in the unpacked rootfs.
    pub size_bytes: u64,
    /// The stord pool (dir or nfs) whose directory holds the template under `templates/NAME/`;
    /// absent: hostd's state holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_lowercase_and_optional_fields_are_left_out() {
        let info = ContainerInfo {
            name: "a".into(),
            template: "t".into(),
            state: ContainerState::Running,
            pid: Some(42),
            exit_code: None,
            hostname: "a".into(),
            addresses: vec![],
            port: None,
            privileged: false,
            autostart: false,
            resources: Resources::default(),
            usage: None,
            created: 1,
            started: Some(2),
        };
        let json = serde_json::to_string(&info).unwrap();
        assert!(json.contains(r#""state":"running""#), "{json}");
        assert!(
            !json.contains("exit_code") && !json.contains("usage"),
            "{json}"
        );
        let back: ContainerInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, info);
        for s in [
            ContainerState::Created,
            ContainerState::Paused,
            ContainerState::Stopped,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
