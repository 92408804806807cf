//! Figures for ci/bench.d/vm_bench.sh (printed, never asserted), with the test guest, the VMM
//! in-process: KVM_CREATE_VM → first serial line p50/p99, VMs booted to their end per second
//! (sequential, so per core), and virtio-blk throughput as the guest sees it beside the host
//! writing and reading the same file (dd-like, alternating rounds in the same run: medians and
//! guest/host ratios; VM_BENCH_BLK_ROUNDS, default 7). The jailed VMM process under hostd
//! is hostd/tests/bench_vm_hostd.rs. `--ignored`; N from VM_BENCH_N (default 100).

use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use testkit::guest::build_test_guest;
use testkit::{TempDir, skip};
use vmm::machine::probe_kvm;
use vmm::{DiskConfig, VmConfig, Vmm};

const TEST: &str = "bench_vm::figures";

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mib_per_s(mib: f64, ms: f64) -> f64 {
    mib / (ms / 1e3)
}

#[test]
#[ignore]
fn figures() {
    if let Err(why) = probe_kvm() {
        return skip(TEST, &why.to_string());
    }
    let n: usize = std::env::var("VM_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = TempDir::new("vm-bench");
    let kernel = match build_test_guest(&dir.0) {
        Ok(k) => k,
        Err(why) => return skip(TEST, &why.to_string()),
    };

    // 1. In-process boots: create → first serial line, and whole VMs per second.
    let mut first = Vec::new();
    let t0 = Instant::now();
    for _ in 0..n {
        let vmm = Vmm::boot(&VmConfig::new(&kernel, "console=ttyS0", 32)).expect("boot");
        let exit = vmm.wait(Duration::from_secs(10));
        assert!(exit.is_some(), "the guest did not end");
        if let Some(t) = vmm.console().lock().ok().and_then(|c| c.first_line_at) {
            first.push(t.duration_since(vmm.created).as_secs_f64() * 1e3);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    first.sort_by(f64::total_cmp);
    println!(
        "cairn-vm: create -> first serial line over {n} boots: p50 {:.2} ms, p99 {:.2} ms",
        pct(&first, 0.5),
        pct(&first, 0.99)
    );
    println!(
        "cairn-vm: {:.1} VMs booted to their end per second (sequential, one core busy)",
        n as f64 / wall
    );

    // 2. virtio-blk as the guest sees it, beside the host on the same file.
    blk_figures(&kernel, &dir);
}

/// Guest and host each write then read the same 64 MiB of the same file in 64 KiB requests,
/// alternating, VM_BENCH_BLK_ROUNDS times (default 7); prints the medians and the guest/host
/// ratios.
fn blk_figures(kernel: &std::path::Path, dir: &TempDir) {
    let rounds: usize = std::env::var("VM_BENCH_BLK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(7);
    let disk = dir.0.join("bench.raw");
    let mib = 64u64;
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len((mib + 2) << 20))
        .expect("bench disk");
    let mut config = VmConfig::new(
        kernel,
        &format!("cairn.test=bench-blk cairn.bench_mib={mib}"),
        64,
    );
    config.disks.push(DiskConfig {
        path: disk.clone(),
        read_only: false,
    });
    let (mut guest_w, mut guest_r, mut host_w, mut host_r) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let vmm = Vmm::boot(&config).expect("boot the bench guest");
        let _ = vmm.wait(Duration::from_secs(60));
        let out = vmm.console_tail(1 << 16);
        drop(vmm);
        for line in out.lines().filter(|l| l.starts_with("bench:")) {
            let ms: Option<f64> = line
                .split_whitespace()
                .rev()
                .nth(1)
                .and_then(|v| v.parse().ok());
            match (line.split_whitespace().nth(1), ms) {
                (Some("write"), Some(ms)) => guest_w.push(mib_per_s(mib as f64, ms)),
                (Some("read"), Some(ms)) => guest_r.push(mib_per_s(mib as f64, ms)),
                _ => println!("cairn-vm: guest {line}"),
            }
        }
        let (w, r) = host_write_read(&disk, mib);
        host_w.push(mib_per_s(mib as f64, w));
        host_r.push(mib_per_s(mib as f64, r));
    }
    if guest_w.is_empty() || guest_r.is_empty() {
        println!("cairn-vm: virtio-blk: the guest printed no figures");
        return;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        pct(v, 0.5)
    };
    let (gw, gr, hw, hr) = (
        median(&mut guest_w),
        median(&mut guest_r),
        median(&mut host_w),
        median(&mut host_r),
    );
    println!(
        "cairn-vm: virtio-blk, {mib} MiB in 64 KiB requests, medians of {rounds} rounds: guest write {gw:.0} MiB/s, host write {hw:.0} MiB/s (guest/host {:.2}); guest read {gr:.0} MiB/s, host read {hr:.0} MiB/s (guest/host {:.2})",
        gw / hw,
        gr / hr
    );
}

/// The host writes (then fdatasyncs) and reads the guest's range of `disk` in 64 KiB
/// requests, dd-like; returns (write ms, read ms).
fn host_write_read(disk: &std::path::Path, mib: u64) -> (f64, f64) {
    let buf = vec![0x5au8; 64 << 10];
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .expect("open");
    let t = Instant::now();
    f.seek(std::io::SeekFrom::Start(1 << 20)).expect("seek");
    for _ in 0..(mib << 4) {
        f.write_all(&buf).expect("write");
    }
    f.sync_data().expect("sync");
    let w = t.elapsed().as_secs_f64() * 1e3;
    let mut rbuf = vec![0u8; 64 << 10];
    let t = Instant::now();
    f.seek(std::io::SeekFrom::Start(1 << 20)).expect("seek");
    for _ in 0..(mib << 4) {
        f.read_exact(&mut rbuf).expect("read");
    }
    (w, t.elapsed().as_secs_f64() * 1e3)
}
