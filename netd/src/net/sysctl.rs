//! Per-interface sysctls under /proc/sys/net (routed networks: proxy ARP/NDP, forwarding,
//! strict reverse-path filtering). /proc/sys/net belongs to the network namespace of the task
//! that opens it, so these follow netd's namespace like its rtnetlink socket does.

use std::path::PathBuf;

use super::error::NetError;
use super::kernel::Kernel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

pub fn path(family: Family, ifname: &str, key: &str) -> PathBuf {
    let f = match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    };
    PathBuf::from(format!("/proc/sys/net/{f}/conf/{ifname}/{key}"))
}

/// Writes `value` unless the sysctl already holds it; a write counts as a change request.
pub fn ensure(
    k: &Kernel,
    family: Family,
    ifname: &str,
    key: &str,
    value: &str,
) -> Result<(), NetError> {
    let p = path(family, ifname, key);
    let what = || format!("set {} = {value}", p.display());
    let current = std::fs::read_to_string(&p).map_err(|e| NetError::io(what(), e))?;
    if current.trim() == value {
        return Ok(());
    }
    k.count();
    std::fs::write(&p, value).map_err(|e| NetError::io(what(), e))
}

/// What a routed network needs on a link that carries guests' traffic: answer ARP/NDP for the
/// addresses routed elsewhere (proxy), forward, and — on a port — drop packets whose source is
/// not routed back through it (strict rp_filter), which is the anti-spoofing.
pub fn routed_link(k: &Kernel, ifname: &str, port: bool, v6: bool) -> Result<(), NetError> {
    ensure(k, Family::V4, ifname, "forwarding", "1")?;
    ensure(k, Family::V4, ifname, "proxy_arp", "1")?;
    if port {
        ensure(k, Family::V4, ifname, "rp_filter", "1")?;
        // The kernel uses the larger of conf/all and conf/<port>: a loose (2) "all" would let a
        // guest spoof any address the host can route. Changing "all" would touch every link,
        // so it is reported, not changed.
        let all = std::fs::read_to_string(path(Family::V4, "all", "rp_filter")).unwrap_or_default();
        if all.trim() == "2" {
            tracing::warn!(
                port = ifname,
                "net.ipv4.conf.all.rp_filter = 2 (loose) weakens anti-spoofing on routed ports"
            );
        }
    }
    if v6 {
        // IPv6 routes between interfaces only with the global switch on as well.
        ensure(k, Family::V6, "all", "forwarding", "1")?;
        ensure(k, Family::V6, ifname, "forwarding", "1")?;
        ensure(k, Family::V6, ifname, "proxy_ndp", "1")?;
    }
    Ok(())
}
