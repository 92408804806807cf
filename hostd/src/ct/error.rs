//! The one error type of the container side; each variant maps to one `CairnError` kind, and the
//! message names the field or object and, for kernel failures, the kernel's reason.

#[derive(Debug, thiserror::Error)]
pub enum CtError {
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
}

impl CtError {
    /// A kernel/filesystem failure with what we were doing.
    pub fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> CtError {
        CtError::Failed(format!("{what}: {e}"))
    }
}

pub type CtResult<T> = Result<T, CtError>;
