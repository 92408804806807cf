//! hostd's one error type, for containers and VMs alike. Each variant is one kind of failure;
//! [`From<HostError> for CairnError`](HostError) is the one place a kind becomes the D-Bus error
//! apid turns into a fault code. Messages name the field or object and, for kernel failures, the
//! kernel's reason.

use model::dbus::CairnError;

use crate::cgroup::CgroupError;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Bad request; nothing was changed.
    #[error("{0}")]
    InvalidArgs(String),
    #[error("{0}")]
    NotFound(String),
    /// Exists already, or its state forbids the request.
    #[error("{0}")]
    Conflict(String),
    /// The kernel or a peer refused; what the request had done was rolled back.
    #[error("{0}")]
    Failed(String),
    /// The answer would be larger than its cap (say how large, and what the cap is).
    #[error("{0}")]
    TooLarge(String),
    /// Refused for now only (a VM's console input queue is full): the same request may
    /// succeed later.
    #[error("{0}")]
    Busy(String),
    /// A guest's cgroup: limits the kernel cannot take are the request's fault, the rest is
    /// the kernel's.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A peer daemon (netd, stord) answered a request hostd made for a guest; its verdict
    /// keeps its kind.
    #[error("{what}: {source}")]
    Peer {
        what: String,
        #[source]
        source: CairnError,
    },
}

impl HostError {
    /// A kernel/filesystem failure with what we were doing.
    pub fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> HostError {
        HostError::Failed(format!("{what}: {e}"))
    }

    /// A peer daemon's answer to `what` (netd's, stord's), kind kept.
    pub fn peer(what: impl std::fmt::Display) -> impl FnOnce(CairnError) -> HostError {
        move |source| HostError::Peer {
            what: what.to_string(),
            source,
        }
    }
}

pub type HostResult<T> = Result<T, HostError>;

impl From<HostError> for CairnError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::InvalidArgs(m) => CairnError::InvalidArgs(m),
            HostError::NotFound(m) => CairnError::NotFound(m),
            HostError::Conflict(m) => CairnError::Conflict(m),
            HostError::Failed(m) => CairnError::Failed(m),
            HostError::TooLarge(m) => CairnError::TooLarge(m),
            HostError::Busy(m) => CairnError::Busy(m),
            HostError::Cgroup(
                e @ (CgroupError::NoController { .. }
                | CgroupError::Invalid(_)
                | CgroupError::BadName(_)),
            ) => CairnError::InvalidArgs(format!("resources: {e}")),
            HostError::Cgroup(e) => CairnError::Failed(e.to_string()),
            HostError::Peer { what, source } => match source {
                CairnError::InvalidArgs(m) => CairnError::InvalidArgs(format!("{what}: {m}")),
                CairnError::NotFound(m) => CairnError::NotFound(format!("{what}: {m}")),
                CairnError::Conflict(m) => CairnError::Conflict(format!("{what}: {m}")),
                CairnError::Busy(m) => CairnError::Busy(format!("{what}: {m}")),
                CairnError::TooLarge(m) => CairnError::TooLarge(format!("{what}: {m}")),
                CairnError::Failed(m) => CairnError::Failed(format!("{what}: {m}")),
                CairnError::ZBus(e) => CairnError::Failed(format!("{what}: netd: {e}")),
            },
        }
    }
}
