//! The VMM in-process against this machine's /dev/kvm with the test guest (vmm/guest/):
//! virtio-blk sectors land in the backing file and the host's sector 0 is read back, a frame
//! through virtio-net reaches a network namespace (the tap's IP) and the replies come back,
//! the PIT ticks through the IOAPIC, pause stops the guest and resume continues it, and a
//! snapshot restored into a new VM continues from where it was. The same paths in a jailed
//! VMM process under hostd are tested in hostd/tests/sandbox_vm.rs.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use vmm::{DiskConfig, NetConfig, VmConfig, VmExit, Vmm};

use testkit::guest::{build_test_guest, last_tick, wait_for_text};
use testkit::{TempDir, skip};
use vmm::machine::probe_kvm;

const SECTOR0: &str = "hello from the host, sector zero";

/// A guest image and a 1 MiB disk whose sector 0 holds SECTOR0.
fn guest_and_disk(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let kernel = build_test_guest(dir)?;
    let disk = dir.join("disk.raw");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..SECTOR0.len()].copy_from_slice(SECTOR0.as_bytes());
    std::fs::write(&disk, bytes).map_err(|e| e.to_string())?;
    Ok((kernel, disk))
}

fn ready(test: &str, dir: &TempDir) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    if let Err(why) = probe_kvm() {
        skip(test, &why.to_string());
        return None;
    }
    match guest_and_disk(dir.path()) {
        Ok(x) => Some(x),
        Err(why) => {
            skip(test, &why.to_string());
            None
        }
    }
}

#[test]
fn blk_writes_reach_the_file_and_host_data_reaches_the_guest() {
    let test = "vm_guest::blk_writes_reach_the_file_and_host_data_reaches_the_guest";
    let dir = TempDir::new("vm-blk");
    let Some((kernel, disk)) = ready(test, &dir) else {
        return;
    };
    let mut config = VmConfig::new(&kernel, "cairn.test=blk", 32);
    config.vcpus = 2;
    config.disks.push(DiskConfig {
        path: disk.clone(),
        read_only: false,
    });
    let vmm = Vmm::boot(&config).unwrap_or_else(|e| panic!("boot: {e}"));
    let exit = vmm.wait(Duration::from_secs(20));
    let out = vmm.console_tail(1 << 20);
    drop(vmm);
    assert!(
        matches!(exit, Some(VmExit::Reset(_))),
        "exit {exit:?}: {out}"
    );
    assert!(
        out.contains("cairn-test-guest: cpus=2 ioapic=0xfec00000"),
        "{out}"
    );
    assert!(out.contains("virtio: 0xd0000000 type=blk irq=5"), "{out}");
    assert!(out.contains("blk: capacity=2048"), "{out}");
    assert!(out.contains(&format!("blk: sector0={SECTOR0}")), "{out}");
    assert!(
        out.contains("blk: wrote 8 sectors, flushed, read back ok"),
        "{out}"
    );
    let bytes = std::fs::read(&disk).expect("read the disk back");
    for n in 1..=8usize {
        let want = format!("cairn-guest-sector-{n}\n");
        let sector = &bytes[n * 512..(n + 1) * 512];
        assert!(
            sector.starts_with(want.as_bytes()),
            "sector {n} in the file: {:?}",
            String::from_utf8_lossy(&sector[..32])
        );
    }
}

#[test]
fn net_frame_reaches_a_namespace_and_the_reply_comes_back() {
    let test = "vm_guest::net_frame_reaches_a_namespace_and_the_reply_comes_back";
    if !testkit::is_root() {
        return skip(test, "taps and network namespaces need root");
    }
    let dir = TempDir::new("vm-net");
    let Some((kernel, _)) = ready(test, &dir) else {
        return;
    };
    // The tap lives in a namespace of its own with the peer's address on it: the guest's
    // frames reach that namespace's kernel, which answers ARP and ping.
    let ns = testkit::Netns::new("vmnet");
    let tap = "cvt0";
    ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", tap]);
    ns.ip(&["link", "set", tap, "up"]);
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let mut config = VmConfig::new(
        &kernel,
        "cairn.test=net cairn.ip=10.77.0.2 cairn.peer=10.77.0.1",
        32,
    );
    config.nets.push(NetConfig {
        tap: tap.into(),
        mac,
    });
    // The VMM opens the tap by name, so it is built on a thread inside the namespace.
    let (exit, out) = std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter();
            let vmm = Vmm::boot(&config).unwrap_or_else(|e| panic!("boot: {e}"));
            let exit = vmm.wait(Duration::from_secs(20));
            (exit, vmm.console_tail(1 << 20))
        })
        .join()
        .expect("the VM thread panicked")
    });
    assert!(
        matches!(exit, Some(VmExit::Reset(_))),
        "exit {exit:?}: {out}"
    );
    assert!(out.contains("net: mac=52:54:00:12:34:56"), "{out}");
    let tap_mac = ns
        .ip(&["-o", "link", "show", tap])
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(
        out.contains(&format!("net: arp reply from 10.77.0.1 is-at {tap_mac}")),
        "{out}"
    );
    assert!(
        out.contains("net: ping reply from 10.77.0.1 seq=1"),
        "{out}"
    );
    // The namespace's kernel counted the guest's frames in and its replies out.
    let stats = ns.ip(&["-s", "-j", "link", "show", tap]);
    let v: serde_json::Value = serde_json::from_str(&stats).expect("ip -j output");
    let rx = v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0);
    let tx = v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0);
    assert!(rx >= 2 && tx >= 2, "tap counters rx {rx} tx {tx}: {stats}");
}

#[test]
fn pause_stops_the_guest_and_snapshot_restore_continues_it() {
    let test = "vm_guest::pause_stops_the_guest_and_snapshot_restore_continues_it";
    let dir = TempDir::new("vm-snap");
    let Some((kernel, disk)) = ready(test, &dir) else {
        return;
    };
    let mut config = VmConfig::new(&kernel, "cairn.test=ticks", 32);
    config.disks.push(DiskConfig {
        path: disk,
        read_only: true,
    });
    let mut vmm = Vmm::boot(&config).unwrap_or_else(|e| panic!("boot: {e}"));
    let (ok, out) = wait_for_text(Duration::from_secs(20), "tick 3\n", || {
        vmm.console_tail(1 << 20)
    });
    assert!(ok, "no ticks: {out}");

    vmm.pause().expect("pause");
    let paused_at = last_tick(&vmm.console_tail(1 << 20));
    std::thread::sleep(Duration::from_millis(500));
    let still = last_tick(&vmm.console_tail(1 << 20));
    assert_eq!(paused_at, still, "the guest made progress while paused");
    vmm.resume().expect("resume");
    let want = format!("tick {}\n", still + 2);
    let (ok, out) = wait_for_text(Duration::from_secs(10), &want, || vmm.console_tail(1 << 20));
    assert!(ok, "no progress after resume (want {want:?}): {out}");

    let snap = dir.path().join("snap");
    std::fs::create_dir(&snap).expect("snapshot dir");
    let snap_dir = std::fs::File::open(&snap).expect("open the snapshot dir");
    vmm.pause().expect("pause for the snapshot");
    vmm.snapshot(snap_dir.as_fd()).expect("snapshot");
    let at_snapshot = last_tick(&vmm.console_tail(1 << 20));
    assert!(
        vmm.is_paused(),
        "a paused VM stays paused after its snapshot"
    );
    assert_eq!(vmm.shutdown(), Some(VmExit::Stopped));

    let (state, memory) = vmm::machine::open_snapshot(&snap).expect("open the snapshot");
    let restored = Vmm::restore(&config, &state, memory, false).expect("restore");
    let want = format!("tick {}\n", at_snapshot + 2);
    let (ok, out) = wait_for_text(Duration::from_secs(10), &want, || {
        restored.console_tail(1 << 20)
    });
    assert!(
        ok,
        "the restored guest did not continue from tick {at_snapshot}: {out}"
    );
    assert!(
        !out.contains("tick 1\n"),
        "the restored guest started over instead of continuing: {out}"
    );
    assert!(
        !out.contains("cairn-test-guest: cmdline"),
        "it booted again: {out}"
    );
}

#[test]
fn eight_vcpus_and_memory_above_the_32bit_gap() {
    let test = "vm_guest::eight_vcpus_and_memory_above_the_32bit_gap";
    let dir = TempDir::new("vm-big");
    let Some((kernel, _)) = ready(test, &dir) else {
        return;
    };
    // 8 GiB is mapped, not touched: the layout splits around the MMIO gap below 4 GiB.
    let mem_mib = 8192;
    if vmm::vstate::memory::host_memory_bytes().is_some_and(|b| b < (mem_mib as u64) << 20) {
        return skip(test, "this host has less than 8 GiB of memory");
    }
    let mut config = VmConfig::new(&kernel, "console=ttyS0", mem_mib);
    config.vcpus = 8;
    let vmm = Vmm::boot(&config).unwrap_or_else(|e| panic!("boot: {e}"));
    let exit = vmm.wait(Duration::from_secs(20));
    let out = vmm.console_tail(1 << 20);
    assert!(
        matches!(exit, Some(VmExit::Reset(_))),
        "exit {exit:?}: {out}"
    );
    assert!(
        out.contains("cairn-test-guest: cpus=8 ioapic=0xfec00000"),
        "{out}"
    );
    // The top of RAM is there, past the gap: write through the VMM and read it back.
    let top = (1u64 << 32) + ((mem_mib as u64) << 20) - vmm::vstate::memory::MMIO_GAP_START - 8;
    let mut b = [0u8; 8];
    vmm.read_guest(top, &mut b)
        .expect("the last bytes of RAM are mapped");
}
