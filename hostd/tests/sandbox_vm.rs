//! The issue's sandbox checks for VMs: under the real `init --sandbox` with netd and hostd on
//! a private bus, hostd starts the test guest in a jailed VMM process: its serial lines reach
//! the console log, its sectors reach the disk file and the host's reach it, its frames reach
//! the sandbox's namespace over netd's bridge and the replies come back; pause/resume;
//! snapshot, then restore into a new VMM process that continues; `kill -9` hostd → the VM
//! keeps running and is re-adopted; `kill -9` of the VMM → reported as crashed; bad input →
//! clear errors with no process or tap left; stop + delete leave nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TempDir, skip};
use model::dbus::{CairnError, Host1Proxy, Storage1Proxy};
use model::storage::VolumeInfo;
use model::vm::{VmInfo, VmState};
use testkit::guest::{build_test_guest, last_tick};
use testkit::sandbox::{Sandbox, bin_dir};
use vmm::machine::probe_kvm;

const TEST: &str = "sandbox_vm::test_guest_in_a_jailed_vmm_under_hostd";
const SECTOR0: &str = "sector zero, written by the host";

async fn info(host: &Host1Proxy<'_>, name: &str) -> VmInfo {
    let json = host.vm_info(name).await.expect("vm_info");
    serde_json::from_str(&json).expect("VmInfo JSON")
}

async fn console(host: &Host1Proxy<'_>, name: &str) -> String {
    host.vm_console(name, 1 << 20).await.unwrap_or_default()
}

/// Polls the console until it holds `want`.
async fn wait_console(
    sb: &Sandbox,
    host: &Host1Proxy<'_>,
    name: &str,
    want: &str,
    within: Duration,
) -> String {
    let start = Instant::now();
    loop {
        let text = console(host, name).await;
        if text.contains(want) {
            return text;
        }
        assert!(
            start.elapsed() < within,
            "console of {name} never showed {want:?}:\n{text}\n{}",
            sb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_state(host: &Host1Proxy<'_>, name: &str, state: VmState, within: Duration) -> VmInfo {
    let start = Instant::now();
    loop {
        if let Ok(json) = host.vm_info(name).await {
            let i: VmInfo = serde_json::from_str(&json).expect("VmInfo JSON");
            if i.state == state {
                return i;
            }
            assert!(
                start.elapsed() < within,
                "{name} never became {state:?}: {i:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// VMM processes (monitor or VMM) of VM `name`: `hostd --vmm RUN/vm/NAME/launch.json`.
fn vmm_processes(name: &str) -> usize {
    let launch = format!("/vm/{name}/launch.json");
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                    args.contains(&&b"--vmm"[..])
                        && args.iter().any(|a| a.ends_with(launch.as_bytes()))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "current_thread")]
async fn test_guest_in_a_jailed_vmm_under_hostd() {
    if !testkit::is_root() {
        return skip(TEST, "jails, taps and the sandbox need root");
    }
    if let Err(why) = probe_kvm() {
        return skip(TEST, &why.to_string());
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why.to_string()),
    };
    let scratch = TempDir::new("hostd-sbx-vm");
    let kernel = match build_test_guest(&scratch.0) {
        Ok(k) => k,
        Err(why) => return skip(TEST, &why.to_string()),
    };
    let disk: PathBuf = scratch.0.join("disk.raw");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..SECTOR0.len()].copy_from_slice(SECTOR0.as_bytes());
    std::fs::write(&disk, bytes).expect("disk");
    let not_kernel = scratch.0.join("not-a-kernel");
    std::fs::write(&not_kernel, b"#!/bin/sh\necho no\n").expect("write");

    let mut sb = Sandbox::start(
        "vm-sbx",
        &testkit::sandbox_config("vm-sandbox", Some("10.60.0")),
        &bins,
    );
    let (conn, table) = sb.ready().await;
    let hostd_pid = table
        .iter()
        .find(|s| s.name == "hostd")
        .map(|s| s.pid)
        .unwrap();
    let host = Host1Proxy::new(&conn).await.unwrap();
    let k = kernel.to_str().unwrap();
    let d = disk.to_str().unwrap();

    // Bad input: clear errors naming what is wrong; nothing created, no process, no tap.
    let bad = [
        (
            serde_json::json!({"name": "b", "memory_mib": 32, "kernel": "/no/such/kernel"}),
            "/no/such/kernel",
        ),
        (
            serde_json::json!({"name": "b", "memory_mib": 32, "kernel": not_kernel}),
            "neither an ELF vmlinux nor a bzImage",
        ),
        (
            serde_json::json!({"name": "b", "memory_mib": 0, "kernel": k}),
            "memory_mib 0",
        ),
        (
            serde_json::json!({"name": "b", "memory_mib": 1u64 << 19, "kernel": k}),
            "more than the host",
        ),
        (
            serde_json::json!({"name": "b", "memory_mib": 32, "kernel": k, "disks": [{"volume": "nopool/vol9"}]}),
            "\"nopool/vol9\": no such volume",
        ),
        (
            serde_json::json!({"name": "b", "memory_mib": 32, "kernel": k, "nics": [{"network": "nonet"}]}),
            "\"nonet\": no such network",
        ),
    ];
    for (spec, want) in bad {
        let e = host.create_vm(&spec.to_string()).await.unwrap_err();
        assert!(
            matches!(e, CairnError::InvalidArgs(ref m) if m.contains(want)),
            "{spec}: {e}"
        );
    }
    assert_eq!(host.list_vms().await.unwrap(), "[]");
    assert_eq!(vmm_processes("b"), 0, "a VMM process was left behind");
    let links = sb.nsenter(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("tap"), "a tap was left behind: {links}");

    // The real thing: 2 vCPUs, a disk, a NIC on the sandbox's bridged network.
    let spec = serde_json::json!({
        "name": "t1", "vcpus": 2, "memory_mib": 32, "kernel": k,
        "cmdline": "cairn.test=blk,net,ticks cairn.ip=10.60.0.9 cairn.peer=10.60.0.1",
        "disks": [{"path": d}],
        "nics": [{"network": "lan", "mac": "52:54:00:aa:bb:01"}],
    });
    host.create_vm(&spec.to_string())
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    let t = Instant::now();
    host.start_vm("t1")
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    let started = t.elapsed();
    let out = wait_console(&sb, &host, "t1", "tick 3\n", Duration::from_secs(30)).await;
    eprintln!(
        "sandbox_vm: start_vm answered in {started:?}; console reached tick 3 in {:?}",
        t.elapsed()
    );
    assert!(
        out.contains("cairn-test-guest: cpus=2 ioapic=0xfec00000"),
        "{out}"
    );
    assert!(out.contains(&format!("blk: sector0={SECTOR0}")), "{out}");
    assert!(
        out.contains("blk: wrote 8 sectors, flushed, read back ok"),
        "{out}"
    );
    assert!(out.contains("net: mac=52:54:00:aa:bb:01"), "{out}");
    assert!(out.contains("net: arp reply from 10.60.0.1 is-at"), "{out}");
    assert!(
        out.contains("net: ping reply from 10.60.0.1 seq=1"),
        "{out}"
    );
    let written = std::fs::read(&disk).unwrap();
    assert!(
        written[512..].starts_with(b"cairn-guest-sector-1\n"),
        "sector 1 not in the file"
    );

    // The jail, seen from the host: only its files, no capabilities, a seccomp filter.
    let i = info(&host, "t1").await;
    assert_eq!(i.state, VmState::Running);
    // A second VM on the same disk is refused while t1 runs: the VMM locks its disks, so no
    // lost record (a killed supervisor, a second init) can put two VMMs on one image.
    let twin = serde_json::json!({"name": "t1twin", "memory_mib": 32, "kernel": k, "disks": [{"path": d}]});
    host.create_vm(&twin.to_string()).await.unwrap();
    let e = host.start_vm("t1twin").await.unwrap_err();
    assert!(
        e.to_string().contains("in use by another VM"),
        "{e}\n{}",
        sb.log()
    );
    assert_eq!(vmm_processes("t1twin"), 0, "the refused VMM is still there");
    host.delete_vm("t1twin").await.unwrap();
    let pid = i.pid.expect("a running VM has a pid");
    let mut root: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .expect("the VMM's root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    assert_eq!(
        root,
        ["dev", "disk0", "kernel", "vmm.sock"],
        "jail root (the console goes to the monitor's pty, not a file in the jail)"
    );
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(i.taps.len(), 1);
    let bridge_ports = sb.nsenter(&["ip", "-o", "link", "show", "master", "lan"]);
    assert!(
        bridge_ports.contains(&i.taps[0]),
        "tap not on the bridge: {bridge_ports}"
    );

    // Attach over the VMM's socket (reached through its root): the console streams.
    let sock = format!("/proc/{pid}/root/vmm.sock");
    let attached = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect vmm.sock");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"{\"op\":\"attach\"}\n").unwrap();
        let mut lines = BufReader::new(s).lines();
        let answer = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let streamed = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        (answer, streamed)
    })
    .await
    .unwrap();
    assert!(attached.0.contains("\"ok\":true"), "{attached:?}");
    assert!(attached.1.starts_with("tick "), "streamed {attached:?}");

    // Pause: no progress; resume: progress. The wrong state is a conflict (105).
    let e = host.resume_vm("t1").await.unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("not paused")),
        "{e}"
    );
    host.pause_vm("t1").await.unwrap();
    assert_eq!(info(&host, "t1").await.state, VmState::Paused);
    let e = host.pause_vm("t1").await.unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("paused already")),
        "{e}"
    );
    let at = last_tick(&console(&host, "t1").await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        last_tick(&console(&host, "t1").await),
        at,
        "progress while paused"
    );
    host.resume_vm("t1").await.unwrap();
    wait_console(
        &sb,
        &host,
        "t1",
        &format!("tick {}\n", at + 2),
        Duration::from_secs(10),
    )
    .await;

    // kill -9 hostd: the VM keeps running, and the restarted hostd re-adopts it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hostd_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let before = last_tick(&console(&host, "t1").await);
    sb.wait_services(&conn, Duration::from_secs(10), |t| {
        t.iter()
            .any(|s| s.name == "hostd" && s.state == "running" && s.pid != hostd_pid)
    })
    .await;
    assert!(alive(pid), "the VMM died with hostd");
    let host = Host1Proxy::new(&conn).await.unwrap();
    let after = wait_state(&host, "t1", VmState::Running, Duration::from_secs(10)).await;
    assert_eq!(after.pid, Some(pid), "re-adopted with another pid");
    wait_console(
        &sb,
        &host,
        "t1",
        &format!("tick {}\n", before + 2),
        Duration::from_secs(10),
    )
    .await;

    // Snapshots that cannot be taken leave no directory behind.
    let nowhere = scratch.0.join("snap-none");
    let e = host
        .snapshot_vm("nope", nowhere.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, CairnError::NotFound(_)), "{e}");
    assert!(!nowhere.exists(), "a refused snapshot left its directory");

    // Snapshot, stop, restore into a new VMM process: the guest continues.
    let snap = scratch.0.join("snap1");
    host.snapshot_vm("t1", snap.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("snapshot: {e}\n{}", sb.log()));
    assert!(snap.join("state.json").is_file() && snap.join("memory").is_file());
    assert_eq!(
        info(&host, "t1").await.state,
        VmState::Running,
        "a snapshot leaves the VM as it was"
    );
    host.pause_vm("t1").await.unwrap();
    let snap2 = scratch.0.join("snap2");
    host.snapshot_vm("t1", snap2.to_str().unwrap())
        .await
        .unwrap();
    let at_snapshot = last_tick(&console(&host, "t1").await);
    // Limits given to the VM's tap (by its owner) come back on the tap of its next run.
    let net = model::dbus::Network1Proxy::new(&conn).await.unwrap();
    net.set_limits("vm:t1", r#"{"egress":{"rate_bps":20000000}}"#)
        .await
        .unwrap_or_else(|e| panic!("SetLimits by owner: {e}\n{}", sb.log()));
    let egress = || async {
        testkit::sandbox::ports(&conn)
            .await
            .into_iter()
            .filter(|p| p.owner == "vm:t1")
            .map(|p| p.limits.and_then(|l| l.egress).map(|r| r.rate_bps))
            .collect::<Vec<_>>()
    };
    assert_eq!(egress().await, [Some(20_000_000)]);
    host.stop_vm("t1", 1).await.unwrap();
    let stopped = info(&host, "t1").await;
    assert_eq!(stopped.state, VmState::Stopped, "{stopped:?}");
    assert!(!alive(pid));
    assert!(
        egress().await.is_empty(),
        "the stopped VM's tap is detached"
    );
    host.restore_vm("t1", snap2.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("restore: {e}\n{}", sb.log()));
    let restored = info(&host, "t1").await;
    assert_eq!(restored.state, VmState::Running);
    assert_eq!(egress().await, [Some(20_000_000)], "the new tap's limits");
    assert_ne!(restored.pid, Some(pid), "a new VMM process");
    let out = wait_console(
        &sb,
        &host,
        "t1",
        &format!("tick {}\n", at_snapshot + 2),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        !out.contains("cairn-test-guest: cmdline"),
        "the restored VM booted again: {out}"
    );
    assert!(
        !out.contains("tick 1\n"),
        "the restored VM started over: {out}"
    );

    // A VMM crash is reported, not hidden.
    let pid2 = restored.pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid2 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let crashed = wait_state(&host, "t1", VmState::Crashed, Duration::from_secs(10)).await;
    let why = crashed.last_exit.unwrap_or_default();
    assert!(why.contains("killed by signal 9"), "{why}");

    // A broken snapshot: the VMM refuses it as bad input; its tap and jail are rolled back.
    let broken = scratch.0.join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("state.json"), b"{\"version\": 1}").unwrap();
    std::fs::write(broken.join("memory"), b"").unwrap();
    let e = host
        .restore_vm("t1", broken.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("state.json")),
        "{e}"
    );
    assert_eq!(vmm_processes("t1"), 0, "a VMM outlived its failed start");
    let links = sb.nsenter(&["ip", "-o", "link", "show"]);
    assert!(
        !links.contains("tap"),
        "a failed start left its tap: {links}"
    );

    // Console input longer than the UART's 64-byte FIFO arrives whole (the rest used to be
    // dropped): the guest reads a 100-byte line and prints it back.
    let echo = serde_json::json!({
        "name": "echo", "memory_mib": 32, "kernel": k, "cmdline": "cairn.test=echo,ticks",
    });
    host.create_vm(&echo.to_string()).await.unwrap();
    host.start_vm("echo").await.unwrap();
    wait_console(&sb, &host, "echo", "echo: ready\n", Duration::from_secs(30)).await;
    let line: String = (0..100u8).map(|i| char::from(b'a' + i % 26)).collect();
    host.vm_console_input("echo", &format!("{line}\n"))
        .await
        .unwrap_or_else(|e| panic!("console input: {e}"));
    wait_console(
        &sb,
        &host,
        "echo",
        &format!("echo: {line} (100 bytes)\n"),
        Duration::from_secs(30),
    )
    .await;
    // It reads nothing more: 64 KiB are queued, and what does not fit then is refused whole,
    // as busy (try again later), not cut.
    host.vm_console_input("echo", &"x".repeat(65536))
        .await
        .unwrap_or_else(|e| panic!("64 KiB of console input: {e}"));
    match host.vm_console_input("echo", &"y".repeat(100)).await {
        Err(CairnError::Busy(m)) => assert!(m.contains("room for 64 bytes"), "{m}"),
        other => panic!("console input past the queue: {other:?}"),
    }
    host.stop_vm("echo", 1).await.unwrap();
    // A snapshot of a VM that does not run is refused before anything is made; the parents
    // of its directory were left behind (only the directory itself was removed).
    let deep = scratch.0.join("deep");
    let e = host
        .snapshot_vm("echo", deep.join("er/snap").to_str().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("not running")),
        "{e}"
    );
    assert!(!deep.exists(), "a refused snapshot left directories behind");
    host.delete_vm("echo").await.unwrap();

    // Stop + delete: nothing left.
    host.delete_vm("t1")
        .await
        .unwrap_or_else(|e| panic!("delete: {e}\n{}", sb.log()));
    assert_eq!(host.list_vms().await.unwrap(), "[]");
    let links = sb.nsenter(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("tap"), "a tap was left behind: {links}");
    assert_eq!(vmm_processes("t1"), 0, "a VMM process was left behind");
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", sb.pid())).unwrap_or_default();
    assert!(!mounts.contains("/vm/t1/"), "jail mounts left: {mounts}");
}

/// A VM's disk on a stord volume (a dir pool): the guest reads and writes it, the VM holds
/// it from vm.create to vm.delete (stord refuses to delete it meanwhile), and a VM on a
/// volume that does not exist is refused with nothing held.
#[tokio::test(flavor = "current_thread")]
async fn a_vm_on_a_stord_volume_holds_it() {
    let test = "sandbox_vm::a_vm_on_a_stord_volume_holds_it";
    if !testkit::is_root() {
        return skip(test, "jails and the sandbox need root");
    }
    if let Err(why) = probe_kvm() {
        return skip(test, &why.to_string());
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(test, &why.to_string()),
    };
    let scratch = TempDir::new("hostd-sbx-volume");
    let kernel = match build_test_guest(&scratch.0) {
        Ok(k) => k,
        Err(why) => return skip(test, &why.to_string()),
    };
    let mut sb = Sandbox::start(
        "vm-volume",
        &testkit::sandbox_config("vm-volume", None),
        &bins,
    );
    let (conn, _) = sb.ready().await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    let storage = Storage1Proxy::new(&conn).await.unwrap();
    let pool = serde_json::json!({"name": "p", "kind": "dir", "path": scratch.0.join("pool")});
    storage.create_pool(&pool.to_string()).await.unwrap();
    let made: VolumeInfo = serde_json::from_str(
        &storage
            .create_volume(&serde_json::json!({"volume": "p/boot", "size": "1M"}).to_string())
            .await
            .unwrap(),
    )
    .unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&made.path)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, SECTOR0.as_bytes(), 0).unwrap();

    let k = kernel.to_str().unwrap();
    let spec = serde_json::json!({
        "name": "onvol", "memory_mib": 32, "kernel": k, "cmdline": "cairn.test=blk,ticks",
        "disks": [{"volume": "p/boot"}],
    });
    host.create_vm(&spec.to_string())
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", sb.log()));
    let held: VolumeInfo =
        serde_json::from_str(&storage.volume_info("p/boot").await.unwrap()).unwrap();
    assert_eq!(held.used_by, ["vm:onvol"]);
    let e = storage.delete_volume("p/boot").await.unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("in use by vm:onvol")),
        "{e}"
    );

    host.start_vm("onvol")
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    let out = wait_console(&sb, &host, "onvol", "tick 2\n", Duration::from_secs(30)).await;
    assert!(out.contains(&format!("blk: sector0={SECTOR0}")), "{out}");
    assert!(
        out.contains("blk: wrote 8 sectors, flushed, read back ok"),
        "{out}"
    );
    let written = std::fs::read(&made.path).unwrap();
    assert!(
        written[512..].starts_with(b"cairn-guest-sector-1\n"),
        "sector 1 not on the volume"
    );

    host.stop_vm("onvol", 1).await.unwrap();
    host.delete_vm("onvol").await.unwrap();
    let free: VolumeInfo =
        serde_json::from_str(&storage.volume_info("p/boot").await.unwrap()).unwrap();
    assert!(free.used_by.is_empty(), "{free:?}");
    storage.delete_volume("p/boot").await.unwrap();

    // A VM on a volume that is not there: refused, nothing held, nothing made.
    let e = host.create_vm(&spec.to_string()).await.unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("no such volume")),
        "{e}"
    );
    assert_eq!(host.list_vms().await.unwrap(), "[]");
}

#[tokio::test(flavor = "current_thread")]
async fn host_toml_vms_are_created_and_autostarted() {
    let test = "sandbox_vm::host_toml_vms_are_created_and_autostarted";
    if !testkit::is_root() {
        return skip(test, "the sandbox needs root");
    }
    if let Err(why) = probe_kvm() {
        return skip(test, &why.to_string());
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(test, &why.to_string()),
    };
    let scratch = TempDir::new("hostd-sbx-vmtoml");
    let kernel = match build_test_guest(&scratch.0) {
        Ok(k) => k,
        Err(why) => return skip(test, &why.to_string()),
    };
    let mut config = testkit::sandbox_config("vm-toml", None);
    config.push_str(&format!(
        r#"
[[vm]]
name = "auto"
memory = "32M"
kernel = "{k}"
cmdline = "cairn.test=ticks"

[[vm]]
name = "manual"
memory = "32M"
kernel = "{k}"
autostart = false
"#,
        k = kernel.display()
    ));
    let mut sb = Sandbox::start("vm-toml", &config, &bins);
    let (conn, _) = sb.ready().await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    wait_state(&host, "auto", VmState::Running, Duration::from_secs(20)).await;
    wait_console(&sb, &host, "auto", "tick 1\n", Duration::from_secs(20)).await;
    assert_eq!(info(&host, "manual").await.state, VmState::Created);
    host.stop_vm("auto", 0).await.unwrap();
    // Declared in host.toml: not the API's to delete (the next start would create them again).
    for name in ["auto", "manual"] {
        let e = host.delete_vm(name).await.unwrap_err();
        assert!(
            matches!(e, CairnError::Conflict(ref m) if m.contains("comes from host.toml")),
            "{name}: {e}"
        );
        assert_eq!(info(&host, name).await.name, name, "still there");
    }
}

const UNSEEN: &str = "sandbox_vm::a_vm_that_died_while_hostd_and_netd_were_down_leaves_no_tap";

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
}

/// The names of the ports netd has for `owner`.
async fn ports_of(conn: &zbus::Connection, owner: &str) -> Vec<String> {
    testkit::sandbox::ports(conn)
        .await
        .into_iter()
        .filter(|p| p.owner == owner)
        .map(|p| p.name)
        .collect()
}

/// hostd and netd killed, then the VMM and its monitor killed while they are down: no exit
/// record, and a tap that outlives its VMM. The restarted hostd tells netd which guests run,
/// so the tap goes; the VM starts again and its delete leaves nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_vm_that_died_while_hostd_and_netd_were_down_leaves_no_tap() {
    if !testkit::is_root() {
        return skip(UNSEEN, "jails, taps and the sandbox need root");
    }
    if let Err(why) = probe_kvm() {
        return skip(UNSEEN, &why.to_string());
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(UNSEEN, &why.to_string()),
    };
    let scratch = TempDir::new("hostd-sbx-vm-unseen");
    let kernel = match build_test_guest(&scratch.0) {
        Ok(k) => k,
        Err(why) => return skip(UNSEEN, &why.to_string()),
    };
    let mut sb = Sandbox::start(
        "vm-unseen",
        &testkit::sandbox_config("vm-unseen", Some("10.61.0")),
        &bins,
    );
    let (conn, table) = sb.ready().await;
    let pid_of = |name: &str| {
        table
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.pid)
            .unwrap()
    };
    let (hostd_pid, netd_pid) = (pid_of("hostd"), pid_of("netd"));
    let host = Host1Proxy::new(&conn).await.unwrap();
    let spec = serde_json::json!({
        "name": "u1", "memory_mib": 32, "kernel": kernel,
        "cmdline": "cairn.test=ticks",
        "nics": [{"network": "lan", "mac": "52:54:00:aa:bb:02"}],
    });
    host.create_vm(&spec.to_string()).await.unwrap();
    host.start_vm("u1")
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    wait_console(&sb, &host, "u1", "tick 2\n", Duration::from_secs(30)).await;
    let vmm = info(&host, "u1").await.pid.expect("a running VM has a pid");
    let monitor: u32 = status_field(vmm, "PPid").parse().expect("the VMM's parent");
    let tap = ports_of(&conn, "vm:u1").await;
    assert_eq!(tap.len(), 1, "{tap:?}");

    kill9(hostd_pid);
    kill9(netd_pid);
    kill9(monitor);
    kill9(vmm);
    sb.wait_services(&conn, Duration::from_secs(15), |t| {
        ["hostd", "netd"].iter().all(|n| {
            t.iter().any(|s| {
                s.name == *n && s.state == "running" && s.pid != hostd_pid && s.pid != netd_pid
            })
        })
    })
    .await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    let start = Instant::now();
    while !ports_of(&conn, "vm:u1").await.is_empty()
        || sb.nsenter(&["ip", "-o", "link", "show"]).contains(&tap[0])
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the dead VM's tap {} is still there:\n{}",
            tap[0],
            sb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(vmm_processes("u1"), 0);
    let i = info(&host, "u1").await;
    assert_ne!(i.state, VmState::Running, "{i:?}");

    host.start_vm("u1")
        .await
        .unwrap_or_else(|e| panic!("start after the unseen death: {e}\n{}", sb.log()));
    wait_console(&sb, &host, "u1", "tick 2\n", Duration::from_secs(30)).await;
    assert_eq!(ports_of(&conn, "vm:u1").await.len(), 1);
    host.stop_vm("u1", 1).await.unwrap();
    host.delete_vm("u1")
        .await
        .unwrap_or_else(|e| panic!("delete: {e}\n{}", sb.log()));
    assert!(ports_of(&conn, "vm:u1").await.is_empty());
    let links = sb.nsenter(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("tap"), "a tap was left behind: {links}");
    assert_eq!(vmm_processes("u1"), 0, "a VMM process was left behind");
}

const INIT_DEATH: &str = "sandbox_vm::a_killed_or_stopped_sandbox_init_leaves_no_guest_running";

/// Every process below `root` (its descendants by parent pid), with its start time, so a
/// reused pid is not mistaken for a survivor.
fn descendants(root: u32) -> Vec<(u32, u64)> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for &pid in &all {
            if !found.contains(&pid) && parent(pid).is_some_and(|p| found.contains(&p)) {
                found.push(pid);
                grew = true;
            }
        }
    }
    found
        .into_iter()
        .filter(|&p| p != root)
        .filter_map(|p| vmm::launcher::start_time(p).map(|t| (p, t)))
        .collect()
}

/// init killed with -9, and stopped with SIGTERM: nothing of the sandbox runs on — not the
/// bus, the daemons, the guests' monitors, a container or a VMM (a monitor ends its guest
/// when init dies). The next init on the same state finds the guests stopped, and they
/// start again: one VMM on the disk, never two.
#[tokio::test(flavor = "current_thread")]
async fn a_killed_or_stopped_sandbox_init_leaves_no_guest_running() {
    if !common::containers_possible(INIT_DEATH) {
        return;
    }
    if let Err(why) = probe_kvm() {
        return skip(INIT_DEATH, &why.to_string());
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(INIT_DEATH, &why.to_string()),
    };
    let scratch = TempDir::new("hostd-sbx-init-death");
    let kernel = match build_test_guest(&scratch.0) {
        Ok(k) => k,
        Err(why) => return skip(INIT_DEATH, &why.to_string()),
    };
    let (tarball, digest) = common::busybox_tarball(&scratch.0);
    for (signal, tag) in [
        (nix::sys::signal::Signal::SIGKILL, "kill9"),
        (nix::sys::signal::Signal::SIGTERM, "term"),
    ] {
        let disk = scratch.0.join(format!("{tag}.raw"));
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let mut sb = Sandbox::start(
            &format!("init-{tag}"),
            &testkit::sandbox_config(&format!("init-{tag}"), Some("10.63.0")),
            &bins,
        );
        let (conn, _) = sb.ready().await;
        let host = Host1Proxy::new(&conn).await.unwrap();
        host.import_template("busybox", tarball.to_str().unwrap(), &digest)
            .await
            .unwrap_or_else(|e| panic!("import: {e}\n{}", sb.log()));
        let ct =
            r#"{"name":"c1","template":"busybox","network":"lan","addresses":["10.63.0.10/24"]}"#;
        host.create_container(ct).await.unwrap();
        host.start_container("c1")
            .await
            .unwrap_or_else(|e| panic!("{tag}: ct start: {e}\n{}", sb.log()));
        let vm = serde_json::json!({
            "name": "v1", "memory_mib": 32, "kernel": kernel,
            "cmdline": "cairn.test=blk,ticks", "disks": [{"path": disk}],
            "nics": [{"network": "lan", "mac": "52:54:00:aa:bb:03"}],
        });
        host.create_vm(&vm.to_string()).await.unwrap();
        host.start_vm("v1")
            .await
            .unwrap_or_else(|e| panic!("{tag}: vm start: {e}\n{}", sb.log()));
        wait_console(&sb, &host, "v1", "tick 2\n", Duration::from_secs(30)).await;
        let vmm = info(&host, "v1").await.pid.expect("the VMM's pid");
        let procs = descendants(sb.pid());
        assert!(procs.iter().any(|(p, _)| *p == vmm), "{tag}: {procs:?}");
        drop(host);
        drop(conn);

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(sb.pid() as i32), signal).unwrap();
        let start = Instant::now();
        while sb.child.try_wait().ok().flatten().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{tag}: init did not end"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let start = Instant::now();
        loop {
            let left: Vec<(u32, u64)> = procs
                .iter()
                .copied()
                .filter(|&(p, t)| vmm::launcher::start_time(p) == Some(t) && alive(p))
                .collect();
            if left.is_empty() {
                break;
            }
            let names: Vec<String> = left
                .iter()
                .map(|(p, _)| {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    format!("{p} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
                })
                .collect();
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{tag}: these outlived the sandbox's init:\n{}\n{}",
                names.join("\n"),
                sb.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The next init: the guests were stopped, and start again on their own disk.
        sb.respawn(&bins);
        let (conn, _) = sb.ready().await;
        let host = Host1Proxy::new(&conn).await.unwrap();
        let v1 = info(&host, "v1").await;
        assert_ne!(v1.state, VmState::Running, "{tag}: {v1:?}");
        host.start_vm("v1")
            .await
            .unwrap_or_else(|e| panic!("{tag}: vm start on the next init: {e}\n{}", sb.log()));
        wait_console(&sb, &host, "v1", "tick 2\n", Duration::from_secs(30)).await;
        assert_eq!(
            vmm_processes("v1"),
            2,
            "{tag}: one monitor and one VMM for v1"
        );
        host.start_container("c1")
            .await
            .unwrap_or_else(|e| panic!("{tag}: ct start on the next init: {e}\n{}", sb.log()));
        host.stop_vm("v1", 1).await.unwrap();
        host.stop_container("c1", 1).await.unwrap();
    }
}

const LIAR: &str = "sandbox_vm::a_vm_sending_from_an_address_or_mac_not_its_own_is_dropped";

/// The spoof drops netd counted on the port of `owner`.
async fn drops_of(conn: &zbus::Connection, owner: &str) -> Option<u64> {
    testkit::sandbox::ports(conn)
        .await
        .into_iter()
        .find(|p| p.owner == owner)
        .and_then(|p| p.spoof_drops)
}

/// Port security for VMs, as for containers: a VM's NIC sends only from its MAC and its
/// `addresses`. The test guest pings the host from its own address (answered, nothing
/// dropped), from an address not its own, and from a MAC not its own (no answer; the frames
/// are dropped and counted at its port). A NIC's addresses are held on the network.
#[tokio::test(flavor = "current_thread")]
async fn a_vm_sending_from_an_address_or_mac_not_its_own_is_dropped() {
    if !testkit::is_root() {
        return skip(LIAR, "jails, taps and the sandbox need root");
    }
    if let Err(why) = probe_kvm() {
        return skip(LIAR, &why.to_string());
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(LIAR, &why.to_string()),
    };
    let scratch = TempDir::new("hostd-sbx-vm-liar");
    let kernel = match build_test_guest(&scratch.0) {
        Ok(k) => k,
        Err(why) => return skip(LIAR, &why.to_string()),
    };
    let mut sb = Sandbox::start(
        "vm-liar",
        &testkit::sandbox_config("vm-liar", Some("10.64.0")),
        &bins,
    );
    let (conn, _) = sb.ready().await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    let vm = |name: &str, n: u8, own: &str, extra: &str| {
        serde_json::json!({
            "name": name, "memory_mib": 32, "kernel": kernel,
            "cmdline": format!("cairn.test=net,ticks cairn.peer=10.64.0.1 {extra}"),
            "nics": [{"network": "lan", "mac": format!("52:54:00:aa:bb:{n:02x}"),
                      "addresses": [own]}],
        })
        .to_string()
    };
    let cases = [
        ("honest", 4, "10.64.0.9/24", "cairn.ip=10.64.0.9", true),
        ("liar-ip", 5, "10.64.0.10/24", "cairn.ip=10.64.0.66", false),
        (
            "liar-mac",
            6,
            "10.64.0.11/24",
            "cairn.ip=10.64.0.11 cairn.mac=52:54:00:de:ad:01",
            false,
        ),
    ];
    for (name, n, own, extra, answered) in cases {
        host.create_vm(&vm(name, n, own, extra))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        host.start_vm(name)
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}\n{}", sb.log()));
        let owner = format!("vm:{name}");
        if answered {
            let out = wait_console(&sb, &host, name, "tick 1\n", Duration::from_secs(30)).await;
            assert!(
                out.contains("net: ping reply from 10.64.0.1"),
                "{name}: {out}"
            );
            assert_eq!(drops_of(&conn, &owner).await, Some(0), "{name}");
        } else {
            let out = wait_console(&sb, &host, name, "net: FAILED", Duration::from_secs(30)).await;
            assert!(out.contains("no arp reply"), "{name}: {out}");
            let drops = drops_of(&conn, &owner).await.unwrap_or(0);
            assert!(drops > 0, "{name}: nothing dropped at its port");
        }
        host.stop_vm(name, 1).await.unwrap();
    }
    // The honest VM still talks after its neighbours lied.
    host.start_vm("honest").await.unwrap();
    let out = wait_console(&sb, &host, "honest", "tick 1\n", Duration::from_secs(30)).await;
    assert!(
        out.matches("net: ping reply from 10.64.0.1").count() >= 1,
        "{out}"
    );

    // A NIC's address is held: not twice, not the host's, not outside the subnet.
    let e = host
        .create_vm(&vm("twin", 7, "10.64.0.9/24", ""))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("VM \"honest\" nic 0")),
        "{e}"
    );
    let e = host
        .create_vm(&vm("hostaddr", 8, "10.64.0.1/24", ""))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::Conflict(ref m) if m.contains("the host")),
        "{e}"
    );
    let e = host
        .create_vm(&vm("outside", 9, "10.99.0.9/24", ""))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("nics[0].addresses[0]")),
        "{e}"
    );
    let e = host
        .create_vm(&vm("garbage", 10, "10.64.0.300/24", ""))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CairnError::InvalidArgs(ref m) if m.contains("nics[0].addresses[0]")),
        "{e}"
    );
}

const FLOOD: &str = "sandbox_vm::a_vm_flooding_its_console_leaves_a_bounded_rotated_log";

/// A VM that writes 2200 KiB to its serial console (more than the two files may hold; a byte
/// is a port exit, ~12 µs each on this machine's KVM, so not more): its monitor keeps at most
/// twice the cap on disk (console.log and console.log.1), the newest lines intact, as for
/// containers.
#[tokio::test(flavor = "current_thread")]
async fn a_vm_flooding_its_console_leaves_a_bounded_rotated_log() {
    if !testkit::is_root() {
        return skip(FLOOD, "jails and the sandbox need root");
    }
    if let Err(why) = probe_kvm() {
        return skip(FLOOD, &why.to_string());
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(FLOOD, &why.to_string()),
    };
    let scratch = TempDir::new("hostd-sbx-vm-flood");
    let kernel = match build_test_guest(&scratch.0) {
        Ok(k) => k,
        Err(why) => return skip(FLOOD, &why.to_string()),
    };
    let mut sb = Sandbox::start("vm-flood", &testkit::sandbox::minimal_config(), &bins);
    let (conn, _) = sb.ready().await;
    let host = Host1Proxy::new(&conn).await.unwrap();
    let spec = serde_json::json!({
        "name": "flood", "memory_mib": 32, "kernel": kernel,
        "cmdline": "cairn.test=flood,ticks cairn.flood_kib=2200",
    });
    host.create_vm(&spec.to_string()).await.unwrap();
    let t = Instant::now();
    host.start_vm("flood").await.unwrap();
    let out = wait_console(
        &sb,
        &host,
        "flood",
        "flood: done\n",
        Duration::from_secs(180),
    )
    .await;
    eprintln!("sandbox_vm: 2200 KiB of console in {:?}", t.elapsed());
    // 2200 KiB of 64-byte lines: the last is number 35199, whole.
    assert!(
        out.contains("flood 0000035199 ......"),
        "{}",
        &out[out.len().saturating_sub(300)..]
    );
    let run = format!("/proc/{}/root/run/cairn/vm/flood", sb.pid());
    let size = |f: &str| {
        std::fs::metadata(format!("{run}/{f}"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let (current, rotated) = (size("console.log"), size("console.log.1"));
    let cap = vmm::launcher::console::CONSOLE_LOG_CAP;
    assert!(
        2200 * 1024 > 2 * cap,
        "the flood must be more than both files hold"
    );
    assert!(
        current <= cap && rotated <= cap,
        "console.log {current}, console.log.1 {rotated}"
    );
    assert!(rotated > 0, "nothing was rotated: console.log {current}");
    host.stop_vm("flood", 1).await.unwrap();
}
