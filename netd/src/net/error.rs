//! What can go wrong with networks and ports. Each variant maps to one D-Bus error kind
//! (`model::dbus::CairnError`), and each message names the object and, for the kernel, its
//! reason (the errno text).

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The request itself is wrong; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Exists already, or its state forbids the request.
    #[error("{0}")]
    Conflict(String),
    /// The kernel refused; what this apply had created is rolled back.
    #[error("{what}: {reason}")]
    Kernel { what: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    pub fn kernel(what: impl Into<String>, e: &rtnetlink::Error) -> NetError {
        NetError::Kernel {
            what: what.into(),
            reason: reason(e),
        }
    }

    /// A shaping failure; the tc module's message already names the device and the errno.
    pub fn tc(what: impl Into<String>, e: crate::tc::TcError) -> NetError {
        match e {
            crate::tc::TcError::IfbConflict { .. } => {
                NetError::Conflict(format!("{}: {e}", what.into()))
            }
            e => NetError::Kernel {
                what: what.into(),
                reason: e.to_string(),
            },
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> NetError {
        NetError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The kernel's errno for a failed request, positive (e.g. `libc::EEXIST`).
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The errno as the C library words it ("Operation not supported (os error 95)"), or
/// rtnetlink's own description when the failure was not the kernel's.
pub fn reason(e: &rtnetlink::Error) -> String {
    match errno(e) {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    }
}

impl From<NetError> for model::dbus::CairnError {
    fn from(e: NetError) -> Self {
        use model::dbus::CairnError;
        let msg = e.to_string();
        match e {
            NetError::Invalid(_) => CairnError::InvalidArgs(msg),
            NetError::NotFound(_) => CairnError::NotFound(msg),
            NetError::Conflict(_) => CairnError::Conflict(msg),
            NetError::Kernel { .. } | NetError::Io { .. } => CairnError::Failed(msg),
        }
    }
}
