//! Figures for ci/bench.d/vm_bench.sh (printed, never asserted): the jailed VMM process under
//! hostd with the test guest — start_vm → first console line, and the VMM process's RSS beside
//! the guest's touched memory. The in-process figures are vmm/tests/bench_vm.rs. `--ignored`.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, skip};
use model::dbus::Host1Proxy;
use testkit::guest::build_test_guest;
use testkit::sandbox::{Sandbox, bin_dir};
use testkit::status_kib;
use vmm::machine::probe_kvm;

const TEST: &str = "bench_vm_hostd::figures";

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
#[ignore]
fn figures() {
    if let Err(why) = probe_kvm() {
        return skip(TEST, &why.to_string());
    }
    let dir = TempDir::new("vm-bench-hostd");
    let kernel = match build_test_guest(&dir.0) {
        Ok(k) => k,
        Err(why) => return skip(TEST, &why),
    };
    if !testkit::is_root() {
        return skip(TEST, "the hostd part needs root");
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why.to_string()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut sb = Sandbox::start("vm-bench", &testkit::sandbox_config("vm-bench", None), &bins);
        let (conn, _) = sb.ready().await;
        let host = Host1Proxy::new(&conn).await.expect("Host1");
        let runs = 10;
        let mut starts = Vec::new();
        let mut rss = Vec::new();
        for i in 0..runs {
            let spec = serde_json::json!({
                "name": format!("b{i}"), "memory_mib": 128,
                "kernel": kernel.to_str().unwrap(), "cmdline": "cairn.test=ticks",
            });
            host.create_vm(&spec.to_string()).await.expect("create");
            let t = Instant::now();
            host.start_vm(&format!("b{i}")).await.expect("start");
            loop {
                let c = host.vm_console(&format!("b{i}"), 4096).await.unwrap_or_default();
                if c.contains('\n') {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(10), "no console line");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            starts.push(t.elapsed().as_secs_f64() * 1e3);
            let info: model::vm::VmInfo =
                serde_json::from_str(&host.vm_info(&format!("b{i}")).await.unwrap()).unwrap();
            if let Some(pid) = info.pid {
                rss.push((status_kib(pid, "VmRSS:"), status_kib(pid, "RssAnon:")));
            }
        }
        starts.sort_by(f64::total_cmp);
        println!(
            "cairn-vm: hostd start_vm -> first console line (jailed VMM process, {runs} VMs): p50 {:.1} ms, p99 {:.1} ms",
            pct(&starts, 0.5),
            pct(&starts, 0.99)
        );
        if let Some((vm_rss, anon)) = rss.first() {
            println!(
                "cairn-vm: VMM process RSS {vm_rss} KiB (anonymous {anon} KiB, which holds the few guest pages the test guest touches of its 128 MiB)"
            );
        }
        for i in 0..runs {
            let _ = host.stop_vm(&format!("b{i}"), 0).await;
            let _ = host.delete_vm(&format!("b{i}")).await;
        }
    });
}
