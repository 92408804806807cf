//! Figures for ci/bench.d/ct_bench.sh (printed, never asserted): create+start → init running
//! p50/p99 over N busybox containers on a bridged netd network (netns + veth included), stop +
//! delete time, host memory per running container (monitor + container processes RSS, and the
//! kernel's Slab growth), and the disk a new container uses. `--ignored`; N from CT_BENCH_N.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, busybox_tarball, containers_possible, skip};
use model::ct::ContainerInfo;
use model::dbus::Host1Proxy;
use testkit::sandbox::{Sandbox, bin_dir};

const TEST: &str = "bench_ct::create_start_stop_delete";

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    testkit::status_kib(pid, "VmRSS:")
}

/// Proportional set size: shared pages (the hostd binary every monitor maps) divided among
/// the processes that share them — the fair per-container share.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "a benchmark: run by ci/bench.d/ct_bench.sh"]
async fn create_start_stop_delete() {
    if !containers_possible(TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why),
    };
    let n: usize = std::env::var("CT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(1, 250);
    let scratch = TempDir::new("hostd-bench-tpl");
    let (tarball, digest) = busybox_tarball(&scratch.0);
    if let Ok(out) = std::env::var("CT_BENCH_ROOTFS") {
        // The same rootfs for crun, made by the same builder.
        testkit::template::busybox_rootfs(std::path::Path::new(&out)).expect("rootfs for crun");
    }
    let config = &testkit::sandbox_config("ct-bench", Some("10.60.0"));
    let mut sb = Sandbox::start("ct-bench", config, &bins);
    let (conn, _) = sb.ready().await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    host.import_template("busybox", tarball.to_str().unwrap(), &digest)
        .await
        .unwrap();
    let slab0 = meminfo("Slab:");
    let avail0 = meminfo("MemAvailable:");
    let mut create = Vec::new();
    let mut start = Vec::new();
    for i in 0..n {
        let spec = serde_json::json!({
            "name": format!("b{i}"), "template": "busybox", "network": "lan",
            "addresses": [format!("10.60.0.{}/24", 2 + i)],
        });
        let t = Instant::now();
        host.create_container(&spec.to_string()).await.unwrap();
        create.push(t.elapsed());
        let t = Instant::now();
        host.start_container(&format!("b{i}"))
            .await
            .unwrap_or_else(|e| panic!("start b{i}: {e}\n{}", sb.log()));
        start.push(t.elapsed());
    }
    // Let every init settle (busybox runs its sysinit lines) before measuring memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slab1 = meminfo("Slab:");
    let avail1 = meminfo("MemAvailable:");
    let infos: Vec<ContainerInfo> =
        serde_json::from_str(&host.list_containers().await.unwrap()).unwrap();
    let mut monitor_rss = 0;
    let mut monitor_pss = 0;
    let mut ct_rss = 0;
    let mut ct_pss = 0;
    for info in &infos {
        let Some(pid) = info.pid else { continue };
        if let Some(m) = ppid(pid) {
            monitor_rss += rss_kib(m);
            monitor_pss += pss_kib(m);
        }
        // The container's processes: its init and whatever the init started.
        let procs = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/unified/cairn.slice/ct-{}/cgroup.procs",
            info.name
        ))
        .unwrap_or_default();
        for p in procs.lines().filter_map(|l| l.trim().parse().ok()) {
            ct_rss += rss_kib(p);
            ct_pss += pss_kib(p);
        }
    }
    let upper = sb.state.join("hostd/containers/b0/upper");
    let du = std::process::Command::new("du")
        .args(["-sk"])
        .arg(&upper)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_default();
    let du_all = std::process::Command::new("du")
        .args(["-sk"])
        .arg(sb.state.join("hostd/containers/b0"))
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_default();
    let mut stop = Vec::new();
    let mut delete = Vec::new();
    for i in 0..n {
        let name = format!("b{i}");
        let t = Instant::now();
        host.stop_container(&name, 0).await.unwrap();
        stop.push(t.elapsed());
        let t = Instant::now();
        host.delete_container(&name).await.unwrap();
        delete.push(t.elapsed());
    }
    for v in [&mut create, &mut start, &mut stop, &mut delete] {
        v.sort();
    }
    let nf = n as f64;
    println!("cairn: containers {n} (busybox init, netns + veth on a bridge, id-mapped userns)");
    println!(
        "cairn create: p50 {:.1} ms p99 {:.1} ms",
        pct(&create, 0.5),
        pct(&create, 0.99)
    );
    println!(
        "cairn start → init running: p50 {:.1} ms p99 {:.1} ms",
        pct(&start, 0.5),
        pct(&start, 0.99)
    );
    println!(
        "cairn stop (kill): p50 {:.1} ms p99 {:.1} ms; delete: p50 {:.1} ms p99 {:.1} ms",
        pct(&stop, 0.5),
        pct(&stop, 0.99),
        pct(&delete, 0.5),
        pct(&delete, 0.99)
    );
    println!(
        "cairn memory per running container: monitor RSS {:.0} KiB (PSS {:.0}), container \
         processes RSS {:.0} KiB (PSS {:.0}), kernel Slab +{:.0} KiB, MemAvailable -{:.0} KiB",
        monitor_rss as f64 / nf,
        monitor_pss as f64 / nf,
        ct_rss as f64 / nf,
        ct_pss as f64 / nf,
        slab1.saturating_sub(slab0) as f64 / nf,
        avail0.saturating_sub(avail1) as f64 / nf
    );
    let per = (monitor_pss + ct_pss + slab1.saturating_sub(slab0)) as f64 / nf;
    if per > 0.0 {
        println!(
            "cairn estimate: {:.0} idle busybox containers fit in this host's {} MiB available \
             memory at {per:.0} KiB each (monitor PSS + container PSS + Slab)",
            avail0 as f64 / per,
            avail0 / 1024
        );
    }
    println!("cairn disk of a new running container: upper {du} KiB, whole dir {du_all} KiB");
    drop(sb);
}
