//! Bandwidth shaping of ports and networks with tc: htb on the host side of a port for what
//! the guest receives, and an IFB (or a policer) on the port's ingress for what it sends.
//!
//! rtnetlink has no builders for htb, tbf or police, so [`encode`] writes those messages
//! itself; [`decode`] reads the kernel's dump back. Limits come from the guest's point of view
//! (`model::net::Limits`): the guest's *ingress* is the host-side port's *egress*.
//!
//! Layout on a port `cpX` with both directions limited (IngressMode::Ifb, the default):
//! ```text
//! cpX  root 1: htb default 1 ── class 1:1 rate=ceil=<ingress limit>   (guest receives)
//! cpX  ingress ffff: ── u32 match-all 800::800 ── mirred redirect → ciX
//! ciX  (ifb, alias "cairn-ifb:cpX") root 1: htb ── 1:1 rate=ceil=<egress limit> (guest sends)
//! ```
//!
//! Network aggregate: the same scheme applied to the bridge device. Its egress carries what
//! the host routes or NATs into the network (towards the guests), its ingress what guests send
//! to the host. Frames bridged between two ports, or between a port and an enslaved uplink,
//! never pass the bridge device's own queues: those are shaped per port.

mod apply;
pub mod decode;
pub mod encode;
mod error;
mod ifb;
pub mod psched;
mod request;

#[cfg(test)]
mod encode_tests;
#[cfg(test)]
mod fuzz_tests;

use model::net::Limits;
use rtnetlink::Handle;
use tracing::Instrument;

pub use apply::IngressMode;
pub use decode::QdiscInfo;
pub use error::TcError;
pub use ifb::ifb_name;

/// Sets a port's limits (IFB mode for the guest's egress). Idempotent and live: re-applying
/// changes nothing, a changed rate is replaced in place, a direction set to `None` loses its
/// shaping.
pub async fn apply_port_limits(
    handle: &Handle,
    host_ifindex: u32,
    host_ifname: &str,
    limits: &Limits,
) -> Result<(), TcError> {
    // The limits choose how the guest's egress is enforced: policed, or shaped through an IFB.
    let mode = if limits.police {
        IngressMode::Police
    } else {
        IngressMode::default()
    };
    apply_port_limits_with(handle, host_ifindex, host_ifname, limits, mode).await
}

/// [`apply_port_limits`] with an explicit way of limiting what the guest sends.
pub async fn apply_port_limits_with(
    handle: &Handle,
    host_ifindex: u32,
    host_ifname: &str,
    limits: &Limits,
    mode: IngressMode,
) -> Result<(), TcError> {
    let span = tracing::info_span!("shaping", dev = host_ifname);
    async {
        apply::ensure_htb(handle, host_ifindex, host_ifname, limits.ingress.as_ref()).await?;
        apply::ensure_ingress(
            handle,
            host_ifindex,
            host_ifname,
            limits.egress.as_ref(),
            mode,
        )
        .await
    }
    .instrument(span)
    .await
}

/// Removes all of a port's shaping, its IFB included. Safe on a port without any.
pub async fn clear_port_limits(
    handle: &Handle,
    host_ifindex: u32,
    host_ifname: &str,
) -> Result<(), TcError> {
    apply_port_limits(handle, host_ifindex, host_ifname, &Limits::default()).await
}

/// Limits a whole network on its bridge device (see the module docs for what that covers);
/// `Limits::default()` removes it.
pub async fn apply_network_aggregate(
    handle: &Handle,
    bridge_ifindex: u32,
    bridge_ifname: &str,
    limits: &Limits,
) -> Result<(), TcError> {
    apply_port_limits(handle, bridge_ifindex, bridge_ifname, limits).await
}

/// The qdiscs and classes of a device as the kernel reports them.
pub async fn read_qdiscs(handle: &Handle, ifindex: u32) -> Result<Vec<QdiscInfo>, TcError> {
    let p = psched::Psched::kernel();
    let mut out = decode::decode_all(
        &p,
        &request::qdiscs(handle, ifindex).await?,
        "qdisc",
        ifindex,
    )?;
    out.extend(decode::decode_all(
        &p,
        &request::classes(handle, ifindex).await?,
        "class",
        ifindex,
    )?);
    Ok(out)
}
