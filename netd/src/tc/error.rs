//! What can go wrong while shaping, naming the object and the kernel's reason.

use super::decode::DecodeError;
use super::encode::EncodeError;

#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// The kernel refused a request; `reason` is the errno text (e.g. "File exists").
    #[error("cannot {op} {object}: {reason}")]
    Kernel {
        op: &'static str,
        object: String,
        errno: i32,
        reason: String,
    },
    /// The netlink socket failed or answered something unexpected.
    #[error("netlink request to {op} {object} failed: {source}")]
    Netlink {
        op: &'static str,
        object: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot encode {object}: {source}")]
    Encode {
        object: String,
        #[source]
        source: EncodeError,
    },
    /// The kernel's dump of a qdisc or class could not be read.
    #[error("cannot read the kernel's {object}: {source}")]
    Decode {
        object: String,
        #[source]
        source: DecodeError,
    },
    /// An interface with the IFB's name exists but is not this port's IFB.
    #[error(
        "interface {ifb} exists but is not the IFB of {port} (its alias is {alias:?}): rename or delete it"
    )]
    IfbConflict {
        ifb: String,
        port: String,
        alias: String,
    },
}

impl TcError {
    /// The kernel's errno (positive), if the kernel answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            TcError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}
