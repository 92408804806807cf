//! Sandbox tests of the management interface against the real kernel: fresh network namespaces
//! joined by a veth pair, and busybox's udhcpd as the DHCP server peer. The fixture uses `ip`;
//! the code under test talks rtnetlink itself. Needs root; skips otherwise.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

mod common;

use common::{Netns, TempDir, have_udhcpd, root_or_skip, start_udhcpd, udhcpd_log, veth_between};
use model::config::{Host, Ipv4Cidr, Management, MgmtAddress};
use netd::mgmt::{self, MgmtStatus, Source, dhcp, static_addr};
use tokio::sync::watch;

fn host(interface: &str, address: MgmtAddress, dns: Vec<IpAddr>) -> Host {
    Host {
        hostname: "cairn-test".into(),
        timezone: "UTC".into(),
        dns,
        management: Management {
            interface: interface.into(),
            address,
        },
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<MgmtStatus>,
    secs: u64,
    what: &str,
    pred: impl FnMut(&MgmtStatus) -> bool,
) -> MgmtStatus {
    let waited = tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(pred))
        .await
        .map(|r| r.map(|s| s.clone()));
    match waited {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("the DHCP client stopped while waiting for {what}"),
        Err(_) => panic!(
            "timed out after {secs} s waiting for {what}: {:?}",
            *rx.borrow()
        ),
    }
}

#[test]
fn static_address_and_default_route_are_idempotent() {
    if !root_or_skip("static_address_and_default_route_are_idempotent") {
        return;
    }
    let ns = Netns::new("netd-st");
    // Both ends in one namespace; the peer must be up for the link to get a carrier.
    ns.ip(&["link", "add", "mg0", "type", "veth", "peer", "name", "mg0p"]);
    ns.ip(&["link", "set", "mg0p", "up"]);
    let cidr = Ipv4Cidr {
        addr: Ipv4Addr::new(10, 88, 0, 10),
        prefix: 24,
    };
    let gw = Ipv4Addr::new(10, 88, 0, 1);

    ns.run(async || {
        let handle = netd::link::connect().expect("rtnetlink");
        assert!(
            static_addr::apply(&handle, "mg0", cidr, Some(gw))
                .await
                .expect("first apply")
        );
        assert!(
            !static_addr::apply(&handle, "mg0", cidr, Some(gw))
                .await
                .expect("second apply")
        );
        let err = static_addr::apply(&handle, "nosuch0", cidr, None).await;
        assert!(
            matches!(
                err,
                Err(mgmt::MgmtError::Link(
                    netd::link::LinkError::NoSuchLink { .. }
                ))
            ),
            "{err:?}"
        );
    });

    let link = ns.ip(&["link", "show", "mg0"]);
    assert!(link.contains(",UP"), "mg0 is not up: {link}");
    let addrs = ns.ip(&["-4", "addr", "show", "dev", "mg0"]);
    assert_eq!(addrs.matches("inet 10.88.0.10/24").count(), 1, "{addrs}");
    let routes = ns.ip(&["-4", "route", "show", "default"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("via 10.88.0.1 dev mg0"), "{routes}");

    // The daemon's entry point: the address is there when `start` returns, the configured DNS
    // servers are in resolv.conf, and the status says where the address came from.
    let run_dir = TempDir::new("netd-st-run");
    let dns: Vec<IpAddr> = vec![
        "192.0.2.53".parse().expect("ip"),
        "2001:db8::53".parse().expect("ip"),
    ];
    let h = host(
        "mg0",
        MgmtAddress::Static {
            address: cidr,
            gateway: Some(gw),
        },
        dns,
    );
    let status = ns.run(async || {
        let handle = netd::link::connect().expect("rtnetlink");
        let (rx, task) = mgmt::start(&handle, &h, run_dir.0.clone()).await;
        assert!(task.is_none(), "a static address needs no background task");
        rx.borrow().clone()
    });
    assert_eq!(status.source, Source::Static);
    assert_eq!(status.address_cidr(), "10.88.0.10/24");
    assert_eq!(status.gateway, Some(gw));
    let resolv = std::fs::read_to_string(run_dir.0.join("resolv.conf")).expect("resolv.conf");
    assert!(
        resolv.contains("nameserver 192.0.2.53\nnameserver 2001:db8::53\n"),
        "{resolv}"
    );
    assert_eq!(
        ns.ip(&["-4", "addr", "show", "dev", "mg0"]),
        addrs,
        "a re-apply changed addresses"
    );
}

/// The whole DHCP life cycle against busybox udhcpd with a 6 s lease: DISCOVER → ACK gives the
/// address, the default route and resolv.conf; renewals at T1; and, once the server is gone,
/// expiry removes the address and the route.
#[test]
fn dhcp_lease_is_applied_renewed_and_removed_on_expiry() {
    if !root_or_skip("dhcp_lease_is_applied_renewed_and_removed_on_expiry") {
        return;
    }
    if !have_udhcpd() {
        eprintln!("skipping: busybox (udhcpd) is not installed");
        return;
    }
    let server_ns = Netns::new("netd-dhs");
    let client_ns = Netns::new("netd-dhc");
    veth_between(&client_ns, "dc0", &server_ns, "ds0", "10.77.0.1/24");
    let dir = TempDir::new("netd-dhcp");
    let mut server = Some(start_udhcpd(&server_ns, "ds0", "10.77.0", 6, &dir));
    let server_log = || udhcpd_log(&dir);

    let run_dir = TempDir::new("netd-dhcp-run");
    let cfg = dhcp::DhcpConfig {
        interface: "dc0".into(),
        hostname: Some("cairn-test".into()),
        dns_override: Vec::new(),
        run_dir: run_dir.0.clone(),
    };
    let client_ns_ref = &client_ns;
    let server_ref = &mut server;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client_ns.run(async || {
            let handle = netd::link::connect().expect("rtnetlink");
            let (tx, mut rx) = watch::channel(MgmtStatus::new("dc0"));
            let task = tokio::spawn({
                let handle = handle.clone();
                async move { dhcp::run(&handle, &cfg, &tx).await }
            });
            // Abort the client when this scope ends, even on a failed assertion.
            struct Abort(tokio::task::JoinHandle<Result<(), mgmt::MgmtError>>);
            impl Drop for Abort {
                fn drop(&mut self) {
                    self.0.abort();
                }
            }
            let _task = Abort(task);

            let bound = wait_for(&mut rx, 20, "a lease", |s| s.address.is_some()).await;
            eprintln!("bound: {bound:?}");
            assert_eq!(bound.source, Source::Dhcp);
            assert_eq!(bound.gateway, Some(Ipv4Addr::new(10, 77, 0, 1)));
            let cidr = bound.address_cidr();
            assert!(
                cidr.starts_with("10.77.0.1") && cidr.ends_with("/24"),
                "{cidr}"
            );

            let addrs = client_ns_ref.ip(&["-4", "addr", "show", "dev", "dc0"]);
            assert!(addrs.contains(&format!("inet {cidr}")), "{addrs}");
            // The kernel counts the lease down itself, so an address outlives no lease.
            assert!(
                addrs.contains("valid_lft") && !addrs.contains("valid_lft forever"),
                "{addrs}"
            );
            let routes = client_ns_ref.ip(&["-4", "route", "show", "default"]);
            assert!(routes.contains("via 10.77.0.1 dev dc0"), "{routes}");
            let resolv =
                std::fs::read_to_string(run_dir.0.join("resolv.conf")).expect("resolv.conf");
            assert!(
                resolv.contains("nameserver 10.77.0.53\nnameserver 10.77.0.54\n"),
                "{resolv}"
            );

            // T1 is 3 s: two renewals within 10 s, same address.
            let renewed = wait_for(&mut rx, 10, "two renewals", |s| s.leases_bound >= 3).await;
            assert_eq!(renewed.address_cidr(), cidr, "renewal changed the address");

            // Without a server neither renewal nor rebinding gets an answer: at expiry (≤ 6 s
            // after the last ACK) the address and the default route go.
            drop(server_ref.take());
            let lost = wait_for(&mut rx, 12, "lease expiry", |s| s.address.is_none()).await;
            assert_eq!(lost.source, Source::None);
            let addrs = client_ns_ref.ip(&["-4", "addr", "show", "dev", "dc0"]);
            assert!(
                !addrs.contains("inet "),
                "address left after expiry: {addrs}"
            );
            let routes = client_ns_ref.ip(&["-4", "route", "show", "default"]);
            assert!(
                routes.trim().is_empty(),
                "default route left after expiry: {routes}"
            );
        })
    }));
    eprintln!("udhcpd log:\n{}", server_log());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
