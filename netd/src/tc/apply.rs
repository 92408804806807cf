//! Reconciling a device's shaping with the desired limits: read what the kernel has, then
//! create, change in place, or remove. Changes use REPLACE on the existing class so a live
//! limit change never resets the device or the connections through it.

use model::net::Rate;
use rtnetlink::Handle;

use super::decode::{QdiscInfo, decode_all};
use super::encode::{
    self, HTB_CLASS, HTB_HANDLE, HtbClass, INGRESS_HANDLE, IngressAction, TC_H_INGRESS, TC_H_ROOT,
};
use super::error::TcError;
use super::ifb;
use super::psched::Psched;
use super::request::{self, Mode};

/// How the traffic a guest sends (the host port's ingress) is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngressMode {
    /// Redirect to a per-port IFB and shape it with htb: queues instead of dropping, so TCP
    /// sees delay rather than loss and settles at the rate. Needs ifb + act_mirred.
    #[default]
    Ifb,
    /// Police on the ingress qdisc: drops above the rate, no extra device. Needs act_police
    /// (in the appliance's kernel, not on every development host).
    Police,
}

fn bytes_per_sec(rate: &Rate) -> u64 {
    rate.rate_bps / 8
}

async fn qdiscs(handle: &Handle, p: &Psched, ifindex: u32) -> Result<Vec<QdiscInfo>, TcError> {
    decode_all(
        p,
        &request::qdiscs(handle, ifindex).await?,
        "qdisc",
        ifindex,
    )
}

/// Egress shaping of one device with htb. htb rather than tbf: one scheme for ports, IFBs and
/// bridges; its class can be changed in place; and on this machine tbf at 10 Mbit/s caused
/// many TCP retransmits where htb only added queueing delay (MACHINE-NOTES figures).
pub(crate) async fn ensure_htb(
    handle: &Handle,
    ifindex: u32,
    ifname: &str,
    rate: Option<&Rate>,
) -> Result<(), TcError> {
    let p = Psched::kernel();
    let root = qdiscs(handle, &p, ifindex)
        .await?
        .into_iter()
        .find(|q| q.raw_parent == TC_H_ROOT);
    let ours = root
        .as_ref()
        .is_some_and(|q| q.kind == "htb" && q.raw_handle == HTB_HANDLE);
    let qdisc_name = format!("htb qdisc 1: on {ifname}");
    let class_name = format!("htb class 1:1 on {ifname}");
    let Some(rate) = rate else {
        if ours {
            request::del_qdisc(
                handle,
                encode::bare(ifindex, TC_H_ROOT, HTB_HANDLE, 0),
                &qdisc_name,
            )
            .await?;
            tracing::info!(dev = ifname, "removed egress shaping");
        }
        return Ok(());
    };
    let rate_bytes = bytes_per_sec(rate);
    let burst = rate.burst_or_default();
    let class = HtbClass {
        rate_bytes,
        ceil_bytes: rate_bytes,
        burst,
        cburst: burst,
    };
    let msg = encode::htb_class(&p, ifindex, HTB_HANDLE, HTB_CLASS, &class).map_err(|source| {
        TcError::Encode {
            object: class_name.clone(),
            source,
        }
    })?;
    let default_ok = root.as_ref().and_then(|q| q.default_class) == Some(1);
    if ours && default_ok {
        // Live change (or a no-op re-apply): the class keeps its queue and its packets.
        request::new_class(handle, msg, Mode::Replace, &class_name).await?;
        tracing::info!(
            dev = ifname,
            rate_bps = rate.rate_bps,
            burst,
            "egress shaping set"
        );
        return Ok(());
    }
    if ours {
        // Our handle but not our layout (default class changed by hand): start over.
        request::del_qdisc(
            handle,
            encode::bare(ifindex, TC_H_ROOT, HTB_HANDLE, 0),
            &qdisc_name,
        )
        .await?;
    }
    // A foreign root qdisc with a real handle must be replaced; the kernel's default (handle
    // 0: noqueue, pfifo_fast) is simply grafted over.
    let foreign = !ours && root.as_ref().is_some_and(|q| q.raw_handle != 0);
    let mode = if foreign { Mode::Replace } else { Mode::Create };
    request::new_qdisc(
        handle,
        encode::htb_qdisc(ifindex, TC_H_ROOT, HTB_HANDLE, 1),
        mode,
        &qdisc_name,
    )
    .await?;
    request::new_class(handle, msg, Mode::Create, &class_name).await?;
    tracing::info!(
        dev = ifname,
        rate_bps = rate.rate_bps,
        burst,
        "egress shaping created"
    );
    Ok(())
}

/// Ingress limiting of a port: the ingress qdisc `ffff:` with one u32 match-all filter whose
/// action redirects to the IFB (shaped by htb there) or polices.
pub(crate) async fn ensure_ingress(
    handle: &Handle,
    ifindex: u32,
    ifname: &str,
    rate: Option<&Rate>,
    mode: IngressMode,
) -> Result<(), TcError> {
    let p = Psched::kernel();
    let has_ingress = qdiscs(handle, &p, ifindex)
        .await?
        .iter()
        .any(|q| q.raw_parent == TC_H_INGRESS);
    let ingress_name = format!("ingress qdisc ffff: on {ifname}");
    let Some(rate) = rate else {
        if has_ingress {
            request::del_qdisc(
                handle,
                encode::bare(ifindex, TC_H_INGRESS, INGRESS_HANDLE, 0),
                &ingress_name,
            )
            .await?;
            tracing::info!(dev = ifname, "removed ingress limiting");
        }
        return ifb::remove(handle, ifname).await;
    };
    let action = match mode {
        IngressMode::Ifb => {
            // Shape the IFB first, so the redirect never feeds an unshaped device.
            let (ifb_name, ifb_index) = ifb::ensure(handle, ifname).await?;
            ensure_htb(handle, ifb_index, &ifb_name, Some(rate)).await?;
            IngressAction::Redirect {
                ifb_ifindex: ifb_index,
            }
        }
        IngressMode::Police => IngressAction::Police {
            rate_bytes: bytes_per_sec(rate),
            burst: rate.burst_or_default(),
        },
    };
    if !has_ingress {
        request::new_qdisc(
            handle,
            encode::ingress_qdisc(ifindex),
            Mode::Create,
            &ingress_name,
        )
        .await?;
    }
    let filter_name = format!("u32 filter 800::800 prio 1 on {ifname} ingress");
    let msg = encode::u32_match_all(&p, ifindex, &action).map_err(|source| TcError::Encode {
        object: filter_name.clone(),
        source,
    })?;
    // A fixed handle + CREATE without EXCL: the kernel swaps the filter in place when it
    // exists (changing rate or switching mode), else adds it.
    request::new_filter(handle, msg, Mode::Replace, &filter_name).await?;
    if mode == IngressMode::Police {
        // Switched from IFB mode: the redirect is gone, so is the need for the IFB.
        ifb::remove(handle, ifname).await?;
    }
    tracing::info!(
        dev = ifname,
        rate_bps = rate.rate_bps,
        ?mode,
        "ingress limiting set"
    );
    Ok(())
}
