//! Benchmark (ignored by default; run by ci/bench.d/netd_reconcile.sh): reconcile of 100
//! bridged networks from empty and the idempotent re-run, 10 ports per network, AttachPort
//! latency. Prints figures only. Needs root; everything lives in throwaway namespaces.

mod common;

use std::time::{Duration, Instant};

use common::Netns;
use model::net::PortSpec;
use netd::net::Reconciler;
use netd::net::kernel::Kernel;

const NETWORKS: usize = 100;
const PORTS_PER_NETWORK: usize = 10;
/// Of each network's ports, this many are veths into a guest namespace, the rest taps.
const VETHS_PER_NETWORK: usize = 2;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

#[test]
#[ignore = "benchmark: ci/bench.d/netd_reconcile.sh"]
fn bench_reconcile_and_attach() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP bench_reconcile_and_attach: needs root");
        return;
    }
    let host = Netns::new("netd-bench");
    let guest = Netns::new("netd-benchg");
    let config: Vec<model::config::Network> = (0..NETWORKS)
        .map(|i| model::config::Network {
            name: format!("n{i:03}"),
            kind: model::config::NetworkKind::Bridged,
            uplink: None,
            vlan: None,
            bond: Vec::new(),
            bond_mode: None,
            subnet: model::config::parse_cidr(&format!("10.{}.{}.0/24", 100 + i / 200, i % 200))
                .ok(),
            address: model::config::parse_cidr(&format!("10.{}.{}.1/24", 100 + i / 200, i % 200))
                .ok(),
        })
        .collect();
    let guest_path = guest.path().display().to_string();
    host.run(async || {
        let k = Kernel::new(netd::link::connect().expect("rtnetlink"), Default::default());
        let mut r = Reconciler::new(k, None, &config);
        let t = Instant::now();
        let first = r.reconcile().await;
        let empty_ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(first.failed.is_empty(), "{:?}", first.failed);
        println!("reconcile {NETWORKS} networks from empty: {empty_ms:.1} ms ({} change requests)", first.changes);

        let mut tap_lat = Vec::new();
        let mut veth_lat = Vec::new();
        for n in 0..NETWORKS {
            for p in 0..PORTS_PER_NETWORK {
                let veth = p < VETHS_PER_NETWORK;
                let spec = PortSpec {
                    network: format!("n{n:03}"),
                    owner: format!("ct:{n}-{p}"),
                    kind: if veth { model::net::PortKind::Veth } else { model::net::PortKind::Tap },
                    netns: veth.then(|| guest_path.clone()),
                    guest_ifname: veth.then(|| format!("e{n}-{p}")),
                    mac: None,
                    vlan: None,
                    tagged_vlans: Vec::new(),
                    addresses: if veth {
                        vec![format!("10.{}.{}.{}/24", 100 + n / 200, n % 200, 10 + p)]
                    } else {
                        Vec::new()
                    },
                    limits: None,
                    port_security: true,
                };
                let t = Instant::now();
                r.attach_port(spec).await.expect("AttachPort");
                if veth { veth_lat.push(t.elapsed()) } else { tap_lat.push(t.elapsed()) }
            }
        }
        tap_lat.sort();
        veth_lat.sort();
        println!(
            "AttachPort tap  ({} ports): p50 {:.2} ms, p99 {:.2} ms",
            tap_lat.len(),
            pct(&tap_lat, 0.5),
            pct(&tap_lat, 0.99)
        );
        println!(
            "AttachPort veth ({} ports, guest end in a netns, address set there): p50 {:.2} ms, p99 {:.2} ms",
            veth_lat.len(),
            pct(&veth_lat, 0.5),
            pct(&veth_lat, 0.99)
        );
        let t = Instant::now();
        let again = r.reconcile().await;
        let rerun_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "reconcile re-run, {NETWORKS} networks × {PORTS_PER_NETWORK} ports: {rerun_ms:.1} ms ({} change requests, {} failed)",
            again.changes,
            again.failed.len()
        );
    });
}
