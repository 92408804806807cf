//! The VMM against this machine's /dev/kvm: boots the test guest (vmm/guest/, built
//! here with `vmm/guest/build.sh`) through the Linux ELF boot path and reads its serial
//! line; bad input (missing kernel, a non-ELF, 0 MiB, more than the host) gives clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vmm::{VmConfig, VmError, VmExit, Vmm};

use testkit::skip;
use vmm::machine::probe_kvm;

const CMDLINE: &str = "console=ttyS0 cairn.test=1";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vm_boot-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn build_guest(dir: &Path) -> Result<PathBuf, String> {
    testkit::guest::build_test_guest(dir)
}

/// Assembles and links `source` with the test guest's linker script into `out`.
fn assemble(source: &Path, out: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let out = out.to_path_buf();
    let status = Command::new("gcc")
        .args([
            "-nostdlib",
            "-static",
            "-no-pie",
            "-Wl,--build-id=none",
            "-Wl,-T",
        ])
        .arg(src.join("linker.ld"))
        .arg("-o")
        .arg(&out)
        .arg(source)
        .status()
        .map_err(|e| format!("cannot run gcc: {e}"))?;
    if !status.success() {
        return Err(format!("gcc failed: {status}"));
    }
    Ok(out)
}

fn boot(kernel: &Path, mem_mib: u32) -> Result<Vmm, VmError> {
    Vmm::boot(&VmConfig::new(kernel, CMDLINE, mem_mib))
}

#[test]
fn boots_test_guest_and_reads_its_cmdline() {
    let test = "vm_boot::boots_test_guest_and_reads_its_cmdline";
    if let Err(why) = probe_kvm() {
        return skip(test, &why.to_string());
    }
    let dir = scratch("boot");
    let kernel = match build_guest(&dir) {
        Ok(k) => k,
        Err(why) => return skip(test, &why.to_string()),
    };
    let vmm = boot(&kernel, 32).unwrap_or_else(|e| panic!("boot failed: {e}"));
    let exit = vmm.wait(Duration::from_secs(20));
    let serial = vmm.console_tail(1 << 20);
    let first = vmm
        .console()
        .lock()
        .ok()
        .and_then(|c| c.first_line_at)
        .map(|t| t.duration_since(vmm.created));
    let elapsed = vmm.created.elapsed();
    drop(vmm);
    let line = format!("cairn-test-guest: cmdline={CMDLINE}");
    assert!(
        serial.contains(&line),
        "serial output {serial:?} lacks {line:?} (exit {exit:?})"
    );
    assert!(
        serial.contains("cairn-test-guest: cpus=1 ioapic=0xfec00000"),
        "exit {exit:?}: {serial}"
    );
    assert!(serial.contains("cairn-test-guest: done"), "{serial}");
    assert!(
        matches!(exit, Some(VmExit::Reset(_))),
        "exit {exit:?}; serial {serial}"
    );
    let first = first.expect("a complete serial line");
    eprintln!(
        "vm_boot: KVM_CREATE_VM -> first serial line {:.3} ms, guest end {:.3} ms",
        first.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = scratch("bad");
    // These are checked before /dev/kvm is opened, or need only a VM to fail in the loader.
    let missing = dir.join("no-such-kernel");
    let err = boot(&missing.clone(), 32).expect_err("missing kernel");
    assert!(matches!(err, VmError::KernelMissing { .. }), "{err}");
    assert!(err.to_string().contains("no-such-kernel"), "{err}");

    let err = boot(&missing.clone(), 0).expect_err("0 MiB");
    assert!(matches!(err, VmError::MemoryZero), "{err}");
    assert!(err.to_string().contains("got 0"), "{err}");

    let err = boot(&missing, u32::MAX).expect_err("more than the host");
    assert!(matches!(err, VmError::MemoryTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("more than the host"), "{err}");

    let test = "vm_boot::bad_input_gives_clear_errors(non-ELF)";
    if let Err(why) = probe_kvm() {
        let _ = std::fs::remove_dir_all(dir);
        return skip(test, &why.to_string());
    }
    let not_elf = dir.join("not-an-elf");
    std::fs::write(&not_elf, b"#!/bin/sh\necho this is not a kernel\n").expect("write");
    let err = boot(&not_elf, 32).expect_err("non-ELF");
    assert!(matches!(err, VmError::KernelNotElf { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("not an x86_64 ELF vmlinux or bzImage"),
        "{err}"
    );

    let empty = dir.join("empty");
    std::fs::write(&empty, b"").expect("write");
    let err = boot(&empty, 32).expect_err("empty file");
    assert!(matches!(err, VmError::KernelNotElf { .. }), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn spinning_guest_is_stopped_at_the_deadline() {
    let test = "vm_boot::spinning_guest_is_stopped_at_the_deadline";
    if let Err(why) = probe_kvm() {
        return skip(test, &why.to_string());
    }
    let dir = scratch("spin");
    let source = dir.join("spin.S");
    std::fs::write(
        &source,
        ".code64\n.section .text.entry, \"ax\"\n.globl _start\n_start: jmp _start\n",
    )
    .expect("write spin.S");
    let kernel = match assemble(&source, &dir.join("spin")) {
        Ok(k) => k,
        Err(why) => return skip(test, &why.to_string()),
    };
    let started = std::time::Instant::now();
    let deadline = std::time::Duration::from_millis(200);
    let vmm = boot(&kernel, 32).unwrap_or_else(|e| panic!("boot failed: {e}"));
    assert_eq!(vmm.wait(deadline), None, "a guest that never ends");
    assert_eq!(vmm.shutdown(), Some(VmExit::Stopped));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Debian's bzImage as image/ caches it, if it is there.
fn debian_bzimage() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
        .join("cairn/kernel");
    std::fs::read_dir(cache).ok()?.flatten().find_map(|e| {
        std::fs::read_dir(e.path().join("root/boot"))
            .ok()?
            .flatten()
            .map(|f| f.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
    })
}

#[test]
fn loads_a_debian_bzimage_with_its_setup_header_and_initrd() {
    let test = "vm_boot::loads_a_debian_bzimage_with_its_setup_header_and_initrd";
    // Loading only: under this machine's KVM a bzImage sits in its decompressor for minutes
    // (every ring-0 instruction is emulated); the appliance e2e boots Linux for real.
    let Some(bz) = debian_bzimage() else {
        return skip(
            test,
            "no Debian kernel in ~/.cache/cairn/kernel yet (image build downloads it)",
        );
    };
    let ranges = vmm::vstate::memory::layout(256).expect("layout");
    let mem = vmm::vstate::memory::create(&ranges).expect("memory");
    let k = vmm::boot::load_kernel(&mem, &bz).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(k.entry.0, vmm::boot::HIMEM_START + 0x200, "64-bit entry");
    let hdr = k.setup_header.expect("a bzImage has a setup header");
    let version = hdr.version;
    assert!(version >= 0x20c, "boot protocol {version:#x}");
    let dir = scratch("bz");
    let initrd = dir.join("initrd");
    std::fs::write(&initrd, vec![7u8; 3 << 20]).expect("initrd");
    let (addr, size) = vmm::boot::load_initrd(&mem, &initrd, k.end).expect("initrd");
    assert_eq!(size, 3 << 20);
    assert_eq!(addr % 4096, 0);
    assert!(addr >= k.end && addr + size <= 256 << 20);
    let _ = std::fs::remove_dir_all(dir);
}
