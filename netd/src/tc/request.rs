//! Sending tc requests and dumps over an rtnetlink handle, turning NACKs into `TcError`s that
//! name the object.

use futures_util::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::TcMessage;
use rtnetlink::Handle;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};

use super::error::TcError;

/// How a "new" request treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Must not exist yet (CREATE|EXCL).
    Create,
    /// Create or change in place (CREATE|REPLACE): live changes.
    Replace,
}

impl Mode {
    fn flags(self) -> u16 {
        match self {
            Mode::Create => NLM_F_CREATE | NLM_F_EXCL,
            Mode::Replace => NLM_F_CREATE | NLM_F_REPLACE,
        }
    }
    fn verb(self) -> &'static str {
        match self {
            Mode::Create => "create",
            Mode::Replace => "replace",
        }
    }
}

/// Sends one request and waits for the kernel's ACK.
async fn ack(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
    op: &'static str,
    object: &str,
) -> Result<(), TcError> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut handle = handle.clone();
    let mut responses = handle.request(req).map_err(|source| TcError::Netlink {
        op,
        object: object.to_string(),
        source,
    })?;
    while let Some(resp) = responses.next().await {
        if let NetlinkPayload::Error(e) = resp.payload
            && let Some(code) = e.code
        {
            let errno = -code.get();
            return Err(TcError::Kernel {
                op,
                object: object.to_string(),
                errno,
                reason: std::io::Error::from_raw_os_error(errno).to_string(),
            });
        }
    }
    tracing::debug!(op, object, "tc request acknowledged");
    Ok(())
}

pub async fn new_qdisc(h: &Handle, m: TcMessage, mode: Mode, object: &str) -> Result<(), TcError> {
    ack(
        h,
        RouteNetlinkMessage::NewQueueDiscipline(m),
        mode.flags(),
        mode.verb(),
        object,
    )
    .await
}

pub async fn new_class(h: &Handle, m: TcMessage, mode: Mode, object: &str) -> Result<(), TcError> {
    ack(
        h,
        RouteNetlinkMessage::NewTrafficClass(m),
        mode.flags(),
        mode.verb(),
        object,
    )
    .await
}

pub async fn new_filter(h: &Handle, m: TcMessage, mode: Mode, object: &str) -> Result<(), TcError> {
    ack(
        h,
        RouteNetlinkMessage::NewTrafficFilter(m),
        mode.flags(),
        mode.verb(),
        object,
    )
    .await
}

/// Deletes a qdisc; one that is already gone (ENOENT, or ENODEV for a vanished device) is not
/// an error: the desired state is reached.
pub async fn del_qdisc(h: &Handle, m: TcMessage, object: &str) -> Result<(), TcError> {
    match ack(
        h,
        RouteNetlinkMessage::DelQueueDiscipline(m),
        0,
        "delete",
        object,
    )
    .await
    {
        Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(()),
        other => other,
    }
}

async fn dump(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    object: &str,
) -> Result<Vec<TcMessage>, TcError> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut handle = handle.clone();
    let mut responses = handle.request(req).map_err(|source| TcError::Netlink {
        op: "dump",
        object: object.to_string(),
        source,
    })?;
    let mut out = Vec::new();
    while let Some(resp) = responses.next().await {
        match resp.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewQueueDiscipline(m)
                | RouteNetlinkMessage::NewTrafficClass(m),
            ) => out.push(m),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                let errno = e.code.map_or(0, |c| -c.get());
                return Err(TcError::Kernel {
                    op: "dump",
                    object: object.to_string(),
                    errno,
                    reason: std::io::Error::from_raw_os_error(errno).to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The qdiscs of one device. The kernel dumps every device's qdiscs; we keep ours.
pub async fn qdiscs(h: &Handle, ifindex: u32) -> Result<Vec<TcMessage>, TcError> {
    let m = TcMessage::with_index(ifindex as i32);
    let all = dump(
        h,
        RouteNetlinkMessage::GetQueueDiscipline(m),
        &format!("qdiscs of ifindex {ifindex}"),
    )
    .await?;
    Ok(all
        .into_iter()
        .filter(|m| m.header.index == ifindex as i32)
        .collect())
}

/// The classes of one device.
pub async fn classes(h: &Handle, ifindex: u32) -> Result<Vec<TcMessage>, TcError> {
    let m = TcMessage::with_index(ifindex as i32);
    let all = dump(
        h,
        RouteNetlinkMessage::GetTrafficClass(m),
        &format!("classes of ifindex {ifindex}"),
    )
    .await?;
    Ok(all
        .into_iter()
        .filter(|m| m.header.index == ifindex as i32)
        .collect())
}
