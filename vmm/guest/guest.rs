//! cairn-test-guest: Cairn's VMM test guest, a freestanding x86_64 program entered like a Linux
//! vmlinux through the 64-bit boot protocol (long mode, first GiB identity-mapped with 2 MiB
//! pages, %rsi = zero page, GDT code 0x08 / data 0x10, empty IDT, interrupts off).
//!
//! It prints its command line, parses the Intel MP table, probes the virtio-mmio devices
//! announced with `virtio_mmio.device=<size>@<base>:<irq>`, runs the tasks listed in
//! `cairn.test=` (blk, net, ticks, bench-blk) and resets the machine through the i8042.
//! The exact output contract is in README.md next to this file.
//!
//! Ring-0 work is kept small on purpose: on this machine's PVM KVM every ring-0 instruction
//! goes through KVM's instruction emulator (~1 µs each, ~1 µs per rep-string iteration too,
//! and no SSE arithmetic: build.sh compiles without SSE). So: no big fill/copy loops, only
//! 4 KiB of .bss zeroed at entry (buffers live in .bss.noinit), waits sleep in `hlt`, and no
//! software interrupts (`int n` fails in ring 0 here).

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::panic::PanicInfo;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, AtomicU64, Ordering};

// ---------------------------------------------------------------------------------------------
// Entry, string functions, interrupt and exception stubs.
// ---------------------------------------------------------------------------------------------

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    cli
    cld
    lea     rsp, [rip + cairn_stack_top]
    mov     r12, rsi
    /* Zero .bss (small: the big buffers and the stack live in .bss.noinit, which nothing
       needs zeroed). rep stosq: the emulator still takes ~1 us per iteration. */
    lea     rdi, [rip + __bss_start]
    lea     rcx, [rip + __bss_end]
    sub     rcx, rdi
    shr     rcx, 3
    xor     eax, eax
    rep     stosq
    mov     rax, cr4
    or      rax, 0x600
    mov     cr4, rax
    mov     rdi, r12
    call    cairn_main
1:  cli
    hlt
    jmp     1b

    /* Under the ring-0 emulation each rep iteration costs ~1 us: move 8 bytes at a time. */
    .section .text.mem, "ax"
    .global memcpy
memcpy:
    mov     rax, rdi
    mov     rcx, rdx
    shr     rcx, 3
    rep     movsq
    mov     rcx, rdx
    and     rcx, 7
    rep     movsb
    ret

    .global memmove
memmove:
    mov     rax, rdi
    mov     rcx, rdx
    cmp     rdi, rsi
    jbe     2f
    lea     rsi, [rsi + rdx - 1]
    lea     rdi, [rdi + rdx - 1]
    std
    rep     movsb
    cld
    ret
2:  jmp     memcpy

    .global memset
memset:
    mov     r9, rdi
    movzx   eax, sil
    mov     r8, 0x0101010101010101
    imul    rax, r8
    mov     rcx, rdx
    shr     rcx, 3
    rep     stosq
    mov     rcx, rdx
    and     rcx, 7
    rep     stosb
    mov     rax, r9
    ret

    .global memcmp
    .global bcmp
memcmp:
bcmp:
    xor     eax, eax
    mov     rcx, rdx
    test    rcx, rcx
    jz      3f
    repe    cmpsb
    je      3f
    movzx   eax, byte ptr [rdi - 1]
    movzx   ecx, byte ptr [rsi - 1]
    sub     eax, ecx
3:  ret

    /* Referenced by the precompiled libcore's unwind tables; never called (panic=abort). */
    .global rust_eh_personality
rust_eh_personality:
    ud2

    .section .text.irq, "ax"
    .macro IRQSTUB name, vec
    .global \name
\name:
    push    rax
    push    rcx
    push    rdx
    push    rsi
    push    rdi
    push    r8
    push    r9
    push    r10
    push    r11
    mov     edi, \vec
    call    cairn_irq
    pop     r11
    pop     r10
    pop     r9
    pop     r8
    pop     rdi
    pop     rsi
    pop     rdx
    pop     rcx
    pop     rax
    iretq
    .endm

    IRQSTUB cairn_irq_timer, 0x20
    IRQSTUB cairn_irq_dev0, 0x30
    IRQSTUB cairn_irq_dev1, 0x31
    IRQSTUB cairn_irq_dev2, 0x32
    IRQSTUB cairn_irq_dev3, 0x33
    IRQSTUB cairn_irq_dev4, 0x34
    IRQSTUB cairn_irq_dev5, 0x35
    IRQSTUB cairn_irq_dev6, 0x36
    IRQSTUB cairn_irq_dev7, 0x37

    .global cairn_irq_spurious
cairn_irq_spurious:
    iretq

    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
cairn_exc\n:
    push    0
    push    \n
    jmp     cairn_exc_common
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
cairn_exc\n:
    push    \n
    jmp     cairn_exc_common
    .endr
cairn_exc_common:
    mov     rdi, [rsp]
    mov     rsi, [rsp + 16]
    and     rsp, -16
    call    cairn_exception
4:  cli
    hlt
    jmp     4b

    .section .rodata.cairn_tables, "a"
    .balign 8
    .global cairn_exc_table
cairn_exc_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad   cairn_exc\n
    .endr
    .global cairn_dev_table
cairn_dev_table:
    .quad   cairn_irq_dev0, cairn_irq_dev1, cairn_irq_dev2, cairn_irq_dev3
    .quad   cairn_irq_dev4, cairn_irq_dev5, cairn_irq_dev6, cairn_irq_dev7

    .section .bss.noinit.stack, "aw", @nobits
    .balign 16
    .skip   65536
cairn_stack_top:
"#
);

extern "C" {
    fn cairn_irq_timer();
    fn cairn_irq_spurious();
    static cairn_exc_table: [u64; 32];
    static cairn_dev_table: [u64; 8];
}

// ---------------------------------------------------------------------------------------------
// Low-level helpers: port I/O, MMIO, serial output, reset.
// ---------------------------------------------------------------------------------------------

fn outb(port: u16, v: u8) {
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) }
}

/// `rep outsb`: all of `buf` to one port, which KVM hands the VMM as one exit.
fn outsb(port: u16, buf: &[u8]) {
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") buf.as_ptr() => _,
             inout("rcx") buf.len() => _, options(nostack, preserves_flags, readonly))
    }
}

fn inb(port: u16) -> u8 {
    let v: u8;
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) }
    v
}

fn r8(a: u64) -> u8 {
    unsafe { read_volatile(a as *const u8) }
}
fn r16(a: u64) -> u16 {
    unsafe { read_volatile(a as *const u16) }
}
fn r32(a: u64) -> u32 {
    unsafe { read_volatile(a as *const u32) }
}
fn w32(a: u64, v: u32) {
    unsafe { write_volatile(a as *mut u32, v) }
}

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

const COM1: u16 = 0x3f8;

fn putc(c: u8) {
    let mut n = 0u32;
    while inb(COM1 + 5) & 0x20 == 0 && n < 100_000 {
        n += 1;
    }
    outb(COM1, c);
}

fn puts(s: &[u8]) {
    for &c in s {
        putc(c);
    }
}

fn put_dec(mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    puts(&buf[i..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `0x` + lowercase hex without leading zeros.
fn put_hex(v: u64) {
    puts(b"0x");
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = HEX[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    puts(&buf[i..]);
}

fn put_ip(ip: [u8; 4]) {
    for (i, b) in ip.iter().enumerate() {
        if i > 0 {
            putc(b'.');
        }
        put_dec(u64::from(*b));
    }
}

fn put_mac(m: &[u8]) {
    for (i, b) in m.iter().take(6).enumerate() {
        if i > 0 {
            putc(b':');
        }
        putc(HEX[(b >> 4) as usize]);
        putc(HEX[(b & 15) as usize]);
    }
}

/// Pulses the CPU reset line through the i8042 (the VMM ends the VM); if still running,
/// halts forever with interrupts off.
fn reset() -> ! {
    unsafe { asm!("cli", options(nomem, nostack)) };
    outb(0x64, 0xfe);
    loop {
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    puts(b"cairn-test-guest: panic\n");
    reset()
}

#[no_mangle]
extern "C" fn cairn_exception(vector: u64, rip: u64) -> ! {
    puts(b"cairn-test-guest: exception ");
    put_dec(vector);
    puts(b" rip=");
    put_hex(rip);
    putc(b'\n');
    reset()
}

// ---------------------------------------------------------------------------------------------
// Paging for MMIO above the identity-mapped first GiB.
// ---------------------------------------------------------------------------------------------

#[repr(C, align(4096))]
struct PageDirs([[u64; 512]; 4]);
#[link_section = ".bss.noinit"]
static mut PAGE_DIRS: PageDirs = PageDirs([[0; 512]; 4]);
static mut PD_USED: usize = 0;

/// Makes `addr` (physical = virtual) accessible, uncached. False if it cannot be mapped.
fn map_mmio(addr: u64) -> bool {
    let gib = addr >> 30;
    if gib == 0 {
        return true; // the boot identity map covers it already
    }
    if gib >= 512 {
        return false;
    }
    unsafe {
        let cr3: u64;
        asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        let pml4 = cr3 & 0x000f_ffff_ffff_f000;
        let pml4e = read_volatile(pml4 as *const u64);
        if pml4e & 1 == 0 {
            return false;
        }
        let pdpt = pml4e & 0x000f_ffff_ffff_f000;
        let slot = (pdpt + 8 * gib) as *mut u64;
        if read_volatile(slot) & 1 != 0 {
            return true;
        }
        if PD_USED >= 4 {
            return false;
        }
        let pd = (&raw mut PAGE_DIRS.0[PD_USED]) as *mut u64;
        PD_USED += 1;
        for i in 0..512u64 {
            // present | writable | PWT | PCD | 2 MiB page
            write_volatile(pd.add(i as usize), ((gib << 30) + (i << 21)) | 0x9b);
        }
        // present | writable | PWT | PCD
        write_volatile(slot, pd as u64 | 0x1b);
        asm!("mov cr3, {}", in(reg) cr3, options(nostack));
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Command line.
// ---------------------------------------------------------------------------------------------

const MAX_DEVS: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Blk,
    Net,
    Other(u32),
}

#[derive(Clone, Copy)]
struct Dev {
    base: u64,
    irq: u32,
    kind: Kind,
}

struct Cfg<'a> {
    tests: &'a [u8],
    ip: Option<[u8; 4]>,
    peer: Option<[u8; 4]>,
    /// Sends from this MAC instead of the device's (`cairn.mac=`): a guest that lies, for the
    /// host's port security to catch.
    mac: Option<[u8; 6]>,
    ticks: Option<u64>,
    bench_mib: u64,
    flood_kib: u64,
    devs: [Dev; MAX_DEVS],
    ndev: usize,
}

/// Parses a number like the kernel's simple_strtoull(.., 0) for hex/decimal; returns it and
/// the rest of the input.
fn parse_num(s: &[u8]) -> Option<(u64, &[u8])> {
    let (radix, mut s) = if s.len() > 2 && s[0] == b'0' && (s[1] == b'x' || s[1] == b'X') {
        (16, &s[2..])
    } else {
        (10, s)
    };
    let mut v: u64 = 0;
    let mut any = false;
    while let Some(&c) = s.first() {
        let d = match c {
            b'0'..=b'9' => u64::from(c - b'0'),
            b'a'..=b'f' if radix == 16 => u64::from(c - b'a' + 10),
            b'A'..=b'F' if radix == 16 => u64::from(c - b'A' + 10),
            _ => break,
        };
        v = v.wrapping_mul(radix).wrapping_add(d);
        any = true;
        s = &s[1..];
    }
    if any {
        Some((v, s))
    } else {
        None
    }
}

/// The kernel's memparse: a number with an optional K/M/G/T suffix.
fn parse_size(s: &[u8]) -> Option<(u64, &[u8])> {
    let (v, rest) = parse_num(s)?;
    let shift = match rest.first() {
        Some(b'k' | b'K') => 10,
        Some(b'm' | b'M') => 20,
        Some(b'g' | b'G') => 30,
        Some(b't' | b'T') => 40,
        _ => return Some((v, rest)),
    };
    Some((v << shift, &rest[1..]))
}

fn parse_ip(s: &[u8]) -> Option<[u8; 4]> {
    let mut ip = [0u8; 4];
    let mut rest = s;
    for (i, b) in ip.iter_mut().enumerate() {
        if i > 0 {
            rest = rest.strip_prefix(b".")?;
        }
        let (v, r) = parse_num(rest)?;
        if v > 255 {
            return None;
        }
        *b = v as u8;
        rest = r;
    }
    if rest.is_empty() {
        Some(ip)
    } else {
        None
    }
}

/// `aa:bb:cc:dd:ee:ff`
fn parse_mac(s: &[u8]) -> Option<[u8; 6]> {
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    if s.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, m) in mac.iter_mut().enumerate() {
        let at = i * 3;
        if i > 0 && s[at - 1] != b':' {
            return None;
        }
        *m = hex(s[at])? << 4 | hex(s[at + 1])?;
    }
    Some(mac)
}

/// `virtio_mmio.device=<size>@<base>:<irq>[:<id>]`
fn parse_virtio(s: &[u8]) -> Option<(u64, u32)> {
    let (_size, rest) = parse_size(s)?;
    let rest = rest.strip_prefix(b"@")?;
    let (base, rest) = parse_size(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (irq, _) = parse_num(rest)?;
    Some((base, irq as u32))
}

fn parse_cmdline(cl: &[u8]) -> Cfg<'_> {
    let mut cfg = Cfg {
        tests: b"",
        ip: None,
        peer: None,
        mac: None,
        ticks: None,
        bench_mib: 64,
        flood_kib: 4096,
        devs: [Dev {
            base: 0,
            irq: 0,
            kind: Kind::None,
        }; MAX_DEVS],
        ndev: 0,
    };
    for tok in cl.split(|&c| c == b' ' || c == b'\t' || c == b'\n') {
        if let Some(v) = tok.strip_prefix(b"virtio_mmio.device=") {
            if let Some((base, irq)) = parse_virtio(v) {
                if cfg.ndev < MAX_DEVS {
                    cfg.devs[cfg.ndev] = Dev {
                        base,
                        irq,
                        kind: Kind::None,
                    };
                    cfg.ndev += 1;
                }
            }
        } else if let Some(v) = tok.strip_prefix(b"cairn.test=") {
            cfg.tests = v;
        } else if let Some(v) = tok.strip_prefix(b"cairn.ip=") {
            cfg.ip = parse_ip(v);
        } else if let Some(v) = tok.strip_prefix(b"cairn.peer=") {
            cfg.peer = parse_ip(v);
        } else if let Some(v) = tok.strip_prefix(b"cairn.mac=") {
            cfg.mac = parse_mac(v);
        } else if let Some(v) = tok.strip_prefix(b"cairn.ticks=") {
            cfg.ticks = parse_num(v).map(|(n, _)| n);
        } else if let Some(v) = tok.strip_prefix(b"cairn.flood_kib=") {
            if let Some((n, _)) = parse_num(v) {
                cfg.flood_kib = n;
            }
        } else if let Some(v) = tok.strip_prefix(b"cairn.bench_mib=") {
            if let Some((n, _)) = parse_num(v) {
                cfg.bench_mib = n;
            }
        }
    }
    cfg
}

// ---------------------------------------------------------------------------------------------
// Intel MP table (MP spec 1.4).
// ---------------------------------------------------------------------------------------------

struct Mp {
    cpus: u32,
    ioapic: u64,
    lapic: u64,
    /// IOAPIC pin of ISA IRQ 0 (the PIT) and its MP flags (polarity, trigger).
    timer_pin: u32,
    timer_flags: u16,
}

fn checksum_ok(addr: u64, len: u64) -> bool {
    let mut sum = 0u8;
    for i in 0..len {
        sum = sum.wrapping_add(r8(addr + i));
    }
    sum == 0
}

fn scan_mpf(start: u64, len: u64) -> Option<u64> {
    let sig = u32::from_le_bytes(*b"_MP_");
    let mut a = start & !15;
    while a + 16 <= start + len {
        if r32(a) == sig {
            let l = u64::from(r8(a + 8)) * 16;
            if l >= 16 && checksum_ok(a, l) {
                return Some(a);
            }
        }
        a += 16;
    }
    None
}

fn find_mp() -> Option<Mp> {
    let ebda = u64::from(r16(0x40e)) << 4;
    let base_kib = u64::from(r16(0x413));
    let mut mpf = None;
    if ebda >= 0x500 && ebda < 0xa0000 {
        mpf = scan_mpf(ebda, 1024);
    }
    if mpf.is_none() {
        let top = if base_kib >= 64 && base_kib <= 640 {
            base_kib * 1024
        } else {
            0xa0000
        };
        mpf = scan_mpf(top - 1024, 1024);
    }
    if mpf.is_none() {
        mpf = scan_mpf(0xf0000, 0x10000);
    }
    let mpf = mpf?;
    let cfg = u64::from(r32(mpf + 4));
    if cfg == 0 || cfg >= (1 << 30) || r32(cfg) != u32::from_le_bytes(*b"PCMP") {
        return None;
    }
    let len = u64::from(r16(cfg + 4));
    if len < 44 || !checksum_ok(cfg, len) {
        return None;
    }
    let count = r16(cfg + 34);
    let mut mp = Mp {
        cpus: 0,
        ioapic: 0,
        lapic: u64::from(r32(cfg + 36)),
        timer_pin: 2,
        timer_flags: 0,
    };
    let mut isa_buses = [0u64; 4];
    let mut any_isa = false;
    let mut timer_found = false;
    let end = cfg + len;
    let mut p = cfg + 44;
    for _ in 0..count {
        if p >= end {
            break;
        }
        match r8(p) {
            0 => {
                mp.cpus += 1;
                p += 20;
            }
            1 => {
                let id = r8(p + 1);
                if r8(p + 2) == b'I' && r8(p + 3) == b'S' && r8(p + 4) == b'A' {
                    isa_buses[(id >> 6) as usize] |= 1 << (id & 63);
                    any_isa = true;
                }
                p += 8;
            }
            2 => {
                if mp.ioapic == 0 {
                    mp.ioapic = u64::from(r32(p + 4));
                }
                p += 8;
            }
            3 => {
                let (itype, flags, bus, irq, pin) =
                    (r8(p + 1), r16(p + 2), r8(p + 4), r8(p + 5), r8(p + 7));
                let isa = !any_isa || isa_buses[(bus >> 6) as usize] & (1 << (bus & 63)) != 0;
                if itype == 0 && isa && irq == 0 && !timer_found {
                    mp.timer_pin = u32::from(pin);
                    mp.timer_flags = flags;
                    timer_found = true;
                }
                p += 8;
            }
            4 => p += 8,
            _ => break, // unknown entry type: its length is unknown
        }
    }
    Some(mp)
}

// ---------------------------------------------------------------------------------------------
// Interrupts: IDT, LAPIC, IOAPIC, PIT.
// ---------------------------------------------------------------------------------------------

const VEC_TIMER: u8 = 0x20;
const VEC_DEV0: u8 = 0x30;
const VEC_SPURIOUS: u8 = 0xff;
const PIT_HZ: u64 = 100;

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

static TICKS: AtomicU64 = AtomicU64::new(0);
static TICK_LINES: AtomicU64 = AtomicU64::new(0);
static LAPIC: AtomicU64 = AtomicU64::new(0xfee0_0000);
static DEV_BASE: [AtomicU64; MAX_DEVS] = [const { AtomicU64::new(0) }; MAX_DEVS];

#[no_mangle]
extern "C" fn cairn_irq(vector: u64) {
    if vector == u64::from(VEC_TIMER) {
        TICKS.store(TICKS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    } else {
        let i = (vector as usize).wrapping_sub(VEC_DEV0 as usize);
        if i < MAX_DEVS {
            let base = DEV_BASE[i].load(Ordering::Relaxed);
            if base != 0 {
                let st = r32(base + 0x60);
                if st != 0 {
                    w32(base + 0x64, st);
                }
            }
        }
    }
    w32(LAPIC.load(Ordering::Relaxed) + 0xb0, 0);
}

fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Sleeps until the next interrupt. Interrupts are only ever enabled here, so the handlers
/// can only interrupt this point; the asm clobbers every caller-saved register (incl. SSE).
fn wait_irq() {
    unsafe { asm!("sti", "hlt", "cli", clobber_abi("C")) }
}

fn set_gate(vector: u8, handler: u64) {
    unsafe {
        let idt = &raw mut IDT.0;
        let lo = (handler & 0xffff)
            | (0x08 << 16)
            | (0x8e00u64 << 32)
            | (((handler >> 16) & 0xffff) << 48);
        (*idt)[2 * vector as usize] = lo;
        (*idt)[2 * vector as usize + 1] = handler >> 32;
    }
}

fn ioapic_write(base: u64, reg: u32, val: u32) {
    w32(base, reg);
    w32(base + 0x10, val);
}

fn ioapic_read(base: u64, reg: u32) -> u32 {
    w32(base, reg);
    r32(base + 0x10)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IrqState {
    Untried,
    Working,
    Broken,
}

struct Ctx<'a> {
    cfg: Cfg<'a>,
    mp: Option<Mp>,
    irq: IrqState,
    tsc_per_ms: u64,
    blk: Option<Blk>,
    net: Option<Net>,
}

/// Loads our IDT: the 32 exception vectors, the timer, the virtio vectors and the spurious one.
fn setup_idt() {
    unsafe {
        let exc = &*(&raw const cairn_exc_table);
        for (v, &h) in exc.iter().enumerate() {
            set_gate(v as u8, h);
        }
        let devs = &*(&raw const cairn_dev_table);
        for (i, &h) in devs.iter().enumerate() {
            set_gate(VEC_DEV0 + i as u8, h);
        }
    }
    set_gate(VEC_TIMER, cairn_irq_timer as *const () as u64);
    set_gate(VEC_SPURIOUS, cairn_irq_spurious as *const () as u64);
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr {
        limit: 256 * 16 - 1,
        base: (&raw const IDT) as u64,
    };
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack)) };
}

/// Sets up the LAPIC, IOAPIC routes (PIT and the virtio devices) and the PIT at 100 Hz,
/// once; true if timer interrupts arrive.
fn ensure_irq(ctx: &mut Ctx) -> bool {
    if ctx.irq != IrqState::Untried {
        return ctx.irq == IrqState::Working;
    }
    ctx.irq = IrqState::Broken;
    let (ioapic, lapic, pin, flags) = match &ctx.mp {
        Some(mp) => (
            if mp.ioapic != 0 { mp.ioapic } else { 0xfec0_0000 },
            if mp.lapic != 0 { mp.lapic } else { 0xfee0_0000 },
            mp.timer_pin,
            mp.timer_flags,
        ),
        None => (0xfec0_0000, 0xfee0_0000, 2, 0),
    };
    if !map_mmio(ioapic) || !map_mmio(lapic) {
        return false;
    }
    LAPIC.store(lapic, Ordering::Relaxed);

    // Mask both 8259s.
    outb(0x21, 0xff);
    outb(0xa1, 0xff);

    // LAPIC: globally enabled (IA32_APIC_BASE bit 11), software-enabled with the spurious
    // vector, TPR 0, LINT0 masked (the 8259 is not used).
    unsafe {
        let (lo, hi): (u32, u32);
        asm!("rdmsr", in("ecx") 0x1bu32, out("eax") lo, out("edx") hi, options(nomem, nostack));
        if lo & 0x800 == 0 {
            asm!("wrmsr", in("ecx") 0x1bu32, in("eax") lo | 0x800, in("edx") hi, options(nomem, nostack));
        }
    }
    w32(lapic + 0xf0, 0x100 | u32::from(VEC_SPURIOUS));
    w32(lapic + 0x80, 0);
    w32(lapic + 0x350, 0x1_0000);
    let apic_id = r32(lapic + 0x20) >> 24;

    // IOAPIC: PIT pin and the virtio pins, edge/active-high unless the MP table says otherwise.
    let max_pin = (ioapic_read(ioapic, 1) >> 16) & 0xff;
    let route = |pin: u32, vector: u8, mp_flags: u16| {
        if pin > max_pin {
            return;
        }
        let mut low = u32::from(vector);
        if mp_flags & 3 == 3 {
            low |= 1 << 13; // active low
        }
        if (mp_flags >> 2) & 3 == 3 {
            low |= 1 << 15; // level
        }
        ioapic_write(ioapic, 0x11 + 2 * pin, apic_id << 24);
        ioapic_write(ioapic, 0x10 + 2 * pin, low);
    };
    for i in 0..ctx.cfg.ndev {
        let d = ctx.cfg.devs[i];
        if matches!(d.kind, Kind::Blk | Kind::Net) {
            DEV_BASE[i].store(d.base, Ordering::Relaxed);
            route(d.irq, VEC_DEV0 + i as u8, 0);
        }
    }
    route(pin, VEC_TIMER, flags);

    // PIT channel 0: mode 2 (rate generator), lobyte/hibyte, 100 Hz.
    let divisor = (1_193_182 / PIT_HZ) as u16;
    outb(0x43, 0x34);
    outb(0x40, divisor as u8);
    outb(0x40, (divisor >> 8) as u8);

    // Wait (polling, bounded by the TSC) for the first two ticks.
    let start = ticks();
    let t0 = rdtsc();
    loop {
        unsafe { asm!("sti", "nop", "nop", "cli", clobber_abi("C")) };
        if ticks() >= start + 2 {
            ctx.irq = IrqState::Working;
            return true;
        }
        if rdtsc().wrapping_sub(t0) > 6_000_000_000 {
            return false;
        }
    }
}

/// TSC cycles per millisecond, measured over 20 PIT ticks (200 ms).
fn calibrate_tsc(ctx: &mut Ctx) -> u64 {
    if ctx.tsc_per_ms == 0 {
        let t = ticks();
        while ticks() == t {
            wait_irq();
        }
        let start = ticks();
        let c0 = rdtsc();
        while ticks() < start + 20 {
            wait_irq();
        }
        let c1 = rdtsc();
        ctx.tsc_per_ms = ((c1 - c0) / (20 * 1000 / PIT_HZ)).max(1);
    }
    ctx.tsc_per_ms
}

// ---------------------------------------------------------------------------------------------
// virtio-mmio (version 2) and split virtqueues.
// ---------------------------------------------------------------------------------------------

const QSIZE: usize = 256;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C, align(4096))]
struct Ring {
    desc: [Desc; QSIZE],
    avail_flags: u16,
    avail_idx: u16,
    avail_ring: [u16; QSIZE],
    used_event: u16,
    _pad: u16,
    used_flags: u16,
    used_idx: u16,
    used_ring: [[u32; 2]; QSIZE],
    avail_event: u16,
}

const RING_ZERO: Ring = Ring {
    desc: [Desc {
        addr: 0,
        len: 0,
        flags: 0,
        next: 0,
    }; QSIZE],
    avail_flags: 0,
    avail_idx: 0,
    avail_ring: [0; QSIZE],
    used_event: 0,
    _pad: 0,
    used_flags: 0,
    used_idx: 0,
    used_ring: [[0; 2]; QSIZE],
    avail_event: 0,
};

#[link_section = ".bss.noinit"]
static mut BLK_RING: Ring = RING_ZERO;
#[link_section = ".bss.noinit"]
static mut NET_RX_RING: Ring = RING_ZERO;
#[link_section = ".bss.noinit"]
static mut NET_TX_RING: Ring = RING_ZERO;

struct Vq {
    ring: *mut Ring,
    size: u16,
    avail: u16,
    last_used: u16,
    base: u64,
    index: u32,
}

impl Vq {
    fn setup(base: u64, index: u32, ring: *mut Ring) -> Result<Vq, &'static str> {
        w32(base + 0x30, index);
        if r32(base + 0x44) != 0 {
            return Err("queue already in use");
        }
        let max = r32(base + 0x34);
        if max == 0 {
            return Err("queue not available");
        }
        let mut size = QSIZE as u32;
        while size > max {
            size /= 2;
        }
        // The ring lives in .bss.noinit: zero what the device reads before we write it.
        unsafe {
            (*ring).avail_flags = 0;
            (*ring).avail_idx = 0;
            (*ring).used_flags = 0;
            (*ring).used_idx = 0;
        }
        let r = ring as u64;
        let avail = unsafe { (&raw mut (*ring).avail_flags) as u64 };
        let used = unsafe { (&raw mut (*ring).used_flags) as u64 };
        w32(base + 0x38, size);
        w32(base + 0x80, r as u32);
        w32(base + 0x84, (r >> 32) as u32);
        w32(base + 0x90, avail as u32);
        w32(base + 0x94, (avail >> 32) as u32);
        w32(base + 0xa0, used as u32);
        w32(base + 0xa4, (used >> 32) as u32);
        w32(base + 0x44, 1);
        Ok(Vq {
            ring,
            size: size as u16,
            avail: 0,
            last_used: 0,
            base,
            index,
        })
    }

    fn set_desc(&mut self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        unsafe {
            (*self.ring).desc[i as usize] = Desc {
                addr,
                len,
                flags,
                next,
            };
        }
    }

    fn push(&mut self, head: u16) {
        unsafe {
            let slot = (self.avail % self.size) as usize;
            write_volatile(&raw mut (*self.ring).avail_ring[slot], head);
            fence(Ordering::SeqCst);
            self.avail = self.avail.wrapping_add(1);
            write_volatile(&raw mut (*self.ring).avail_idx, self.avail);
        }
    }

    /// Puts `head` in the next avail slot without publishing it (see `publish`).
    fn add_avail(&mut self, head: u16) {
        unsafe {
            let slot = (self.avail % self.size) as usize;
            write_volatile(&raw mut (*self.ring).avail_ring[slot], head);
        }
        self.avail = self.avail.wrapping_add(1);
    }

    /// Writes `head` at avail position `avail + ahead` without publishing it.
    fn set_avail_ahead(&mut self, ahead: u16, head: u16) {
        unsafe {
            let slot = (self.avail.wrapping_add(ahead) % self.size) as usize;
            write_volatile(&raw mut (*self.ring).avail_ring[slot], head);
        }
    }

    /// Publishes `n` heads that are already in the avail ring.
    fn publish_prefilled(&mut self, n: u16) {
        self.avail = self.avail.wrapping_add(n);
        self.publish();
    }

    /// Makes every head added with `add_avail` visible to the device at once.
    fn publish(&mut self) {
        fence(Ordering::SeqCst);
        unsafe { write_volatile(&raw mut (*self.ring).avail_idx, self.avail) };
    }

    /// With EVENT_IDX: interrupt once `n` more elements are used (ignored without it).
    fn want_interrupt_after(&mut self, n: u16) {
        unsafe {
            write_volatile(
                &raw mut (*self.ring).used_event,
                self.last_used.wrapping_add(n).wrapping_sub(1),
            );
        }
        fence(Ordering::SeqCst);
    }

    /// Takes `n` used elements at once if the device has returned that many (their ids and
    /// lengths unread: the caller knows which requests they are).
    fn take_used(&mut self, n: u16) -> bool {
        let used = unsafe { read_volatile(&raw const (*self.ring).used_idx) };
        if used.wrapping_sub(self.last_used) < n {
            return false;
        }
        fence(Ordering::SeqCst);
        self.last_used = self.last_used.wrapping_add(n);
        true
    }

    fn notify(&self) {
        fence(Ordering::SeqCst);
        w32(self.base + 0x50, self.index);
    }

    fn pop(&mut self) -> Option<(u16, u32)> {
        unsafe {
            let used = read_volatile(&raw const (*self.ring).used_idx);
            if used == self.last_used {
                return None;
            }
            fence(Ordering::SeqCst);
            let slot = (self.last_used % self.size) as usize;
            let e = read_volatile(&raw const (*self.ring).used_ring[slot]);
            self.last_used = self.last_used.wrapping_add(1);
            Some((e[0] as u16, e[1]))
        }
    }
}

/// Waits for the next used element: at once if the VMM completed it synchronously, else
/// sleeping in hlt (bounded by `timeout_ms`), or spinning (bounded by the TSC) if there are
/// no timer interrupts.
fn wait_used(ctx: &mut Ctx, q: &mut Vq, timeout_ms: u64) -> Option<(u16, u32)> {
    if let Some(e) = q.pop() {
        return Some(e);
    }
    q.want_interrupt_after(1);
    if ensure_irq(ctx) {
        let deadline = ticks() + timeout_ms * PIT_HZ / 1000 + 1;
        loop {
            if let Some(e) = q.pop() {
                return Some(e);
            }
            if ticks() >= deadline {
                return None;
            }
            wait_irq();
        }
    }
    let t0 = rdtsc();
    loop {
        if let Some(e) = q.pop() {
            return Some(e);
        }
        if rdtsc().wrapping_sub(t0) > timeout_ms * 3_000_000 {
            return None;
        }
        unsafe { asm!("pause", options(nomem, nostack)) };
    }
}

/// Like `wait_used`, for `n` used elements at once; polls the used ring `spin` times before
/// it sleeps (a device served off the vCPU completes while the guest waits, and an interrupt
/// only comes once the device has drained the whole ring).
fn wait_used_n(ctx: &mut Ctx, q: &mut Vq, n: u16, spin: u32, timeout_ms: u64) -> bool {
    for _ in 0..spin {
        if q.take_used(n) {
            return true;
        }
        unsafe { asm!("pause", options(nomem, nostack)) };
    }
    q.want_interrupt_after(n);
    if q.take_used(n) {
        return true;
    }
    if ensure_irq(ctx) {
        let deadline = ticks() + timeout_ms * PIT_HZ / 1000 + 1;
        while !q.take_used(n) {
            if ticks() >= deadline {
                return false;
            }
            wait_irq();
        }
        return true;
    }
    let t0 = rdtsc();
    while !q.take_used(n) {
        if rdtsc().wrapping_sub(t0) > timeout_ms * 3_000_000 {
            return false;
        }
        unsafe { asm!("pause", options(nomem, nostack)) };
    }
    true
}

const S_ACK: u32 = 1;
const S_DRIVER: u32 = 2;
const S_DRIVER_OK: u32 = 4;
const S_FEATURES_OK: u32 = 8;
const S_FAILED: u32 = 0x80;

/// Status reset → ACKNOWLEDGE → DRIVER → features (VERSION_1 plus `want_lo` ∩ offered) →
/// FEATURES_OK. Returns the accepted low feature bits.
fn virtio_begin(base: u64, want_lo: u32) -> Result<u32, &'static str> {
    w32(base + 0x70, 0);
    let mut n = 0;
    while r32(base + 0x70) != 0 && n < 1000 {
        n += 1;
    }
    w32(base + 0x70, S_ACK);
    w32(base + 0x70, S_ACK | S_DRIVER);
    w32(base + 0x14, 1);
    let hi = r32(base + 0x10);
    w32(base + 0x14, 0);
    let lo = r32(base + 0x10);
    if hi & 1 == 0 {
        w32(base + 0x70, S_FAILED);
        return Err("device lacks VIRTIO_F_VERSION_1");
    }
    w32(base + 0x24, 0);
    w32(base + 0x20, lo & want_lo);
    w32(base + 0x24, 1);
    w32(base + 0x20, 1);
    w32(base + 0x70, S_ACK | S_DRIVER | S_FEATURES_OK);
    if r32(base + 0x70) & S_FEATURES_OK == 0 {
        w32(base + 0x70, S_FAILED);
        return Err("features not accepted");
    }
    Ok(lo & want_lo)
}

fn virtio_driver_ok(base: u64) {
    w32(base + 0x70, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
}

fn first_dev(ctx: &Ctx, kind: Kind) -> Option<u64> {
    ctx.cfg.devs[..ctx.cfg.ndev]
        .iter()
        .find(|d| d.kind == kind)
        .map(|d| d.base)
}

// ---------------------------------------------------------------------------------------------
// virtio-blk.
// ---------------------------------------------------------------------------------------------

const BLK_T_IN: u32 = 0;
const BLK_T_OUT: u32 = 1;
const BLK_T_FLUSH: u32 = 4;
const BLK_F_FLUSH: u32 = 1 << 9;
/// VIRTIO_RING_F_EVENT_IDX: the bench asks for one interrupt per group of requests.
const RING_F_EVENT_IDX: u32 = 1 << 29;
const BENCH_SLOTS: usize = QSIZE / 3;
/// Polls of the used ring before the bench sleeps for an interrupt.
const BENCH_SPIN: u32 = 0;
const BENCH_REQ: usize = 64 * 1024;

#[repr(C)]
#[derive(Clone, Copy)]
struct BlkHdr {
    typ: u32,
    reserved: u32,
    sector: u64,
}

#[repr(C, align(4096))]
struct SectorBuf([u8; 4096]);
#[repr(C, align(4096))]
struct BenchBuf([u8; BENCH_REQ]);

#[link_section = ".bss.noinit"]
static mut BLK_HDRS: [BlkHdr; BENCH_SLOTS] = [BlkHdr {
    typ: 0,
    reserved: 0,
    sector: 0,
}; BENCH_SLOTS];
#[link_section = ".bss.noinit"]
static mut BLK_STATUS: [u8; BENCH_SLOTS] = [0; BENCH_SLOTS];
#[link_section = ".bss.noinit"]
static mut WBUF: SectorBuf = SectorBuf([0; 4096]);
#[link_section = ".bss.noinit"]
static mut RBUF: SectorBuf = SectorBuf([0; 4096]);
#[link_section = ".bss.noinit"]
static mut BENCH: BenchBuf = BenchBuf([0; BENCH_REQ]);

struct Blk {
    q: Vq,
    capacity: u64,
}

fn blk_open(ctx: &mut Ctx) -> Result<(), &'static str> {
    if ctx.blk.is_some() {
        return Ok(());
    }
    let base = first_dev(ctx, Kind::Blk).ok_or("no block device")?;
    virtio_begin(base, BLK_F_FLUSH | RING_F_EVENT_IDX)?;
    let q = Vq::setup(base, 0, &raw mut BLK_RING).inspect_err(|_| w32(base + 0x70, S_FAILED))?;
    let capacity = loop {
        let gen = r32(base + 0xfc);
        let lo = u64::from(r32(base + 0x100));
        let hi = u64::from(r32(base + 0x104));
        if r32(base + 0xfc) == gen {
            break (hi << 32) | lo;
        }
    };
    virtio_driver_ok(base);
    ctx.blk = Some(Blk { q, capacity });
    Ok(())
}

/// Fills slot `s` (descriptors 3s..3s+2) with a request and returns its head.
fn blk_prepare(q: &mut Vq, s: usize, typ: u32, sector: u64, buf: u64, len: u32) -> u16 {
    let d = (3 * s) as u16;
    unsafe {
        (*(&raw mut BLK_HDRS))[s] = BlkHdr {
            typ,
            reserved: 0,
            sector,
        };
        (*(&raw mut BLK_STATUS))[s] = 0xff;
        let hdr = (&raw const BLK_HDRS[s]) as u64;
        let status = (&raw const BLK_STATUS[s]) as u64;
        q.set_desc(d, hdr, 16, VRING_DESC_F_NEXT, d + 1);
        if len == 0 {
            q.set_desc(d + 1, status, 1, VRING_DESC_F_WRITE, 0);
        } else {
            let wflag = if typ == BLK_T_IN { VRING_DESC_F_WRITE } else { 0 };
            q.set_desc(d + 1, buf, len, VRING_DESC_F_NEXT | wflag, d + 2);
            q.set_desc(d + 2, status, 1, VRING_DESC_F_WRITE, 0);
        }
    }
    d
}

fn slot_status(s: usize) -> u8 {
    unsafe { read_volatile(&raw const BLK_STATUS[s]) }
}

/// One synchronous request; Err(status) with 0xff meaning no completion.
fn blk_request(ctx: &mut Ctx, typ: u32, sector: u64, buf: u64, len: u32) -> Result<(), u8> {
    let mut blk = ctx.blk.take().ok_or(0xffu8)?;
    let head = blk_prepare(&mut blk.q, 0, typ, sector, buf, len);
    blk.q.push(head);
    blk.q.notify();
    let done = wait_used(ctx, &mut blk.q, 5000);
    ctx.blk = Some(blk);
    done.ok_or(0xffu8)?;
    match slot_status(0) {
        0 => Ok(()),
        s => Err(s),
    }
}

fn blk_failed(what: &[u8], status: Option<u8>) {
    puts(b"blk: FAILED ");
    puts(what);
    if let Some(s) = status {
        if s == 0xff {
            puts(b" (no completion)");
        } else {
            puts(b" (status ");
            put_dec(u64::from(s));
            puts(b")");
        }
    }
    putc(b'\n');
}

fn task_blk(ctx: &mut Ctx) {
    if let Err(e) = blk_open(ctx) {
        return blk_failed(e.as_bytes(), None);
    }
    let capacity = ctx.blk.as_ref().map_or(0, |b| b.capacity);
    puts(b"blk: capacity=");
    put_dec(capacity);
    putc(b'\n');
    if capacity < 9 {
        return blk_failed(b"capacity below 9 sectors", None);
    }

    let rbuf = (&raw mut RBUF) as *mut u8;
    let wbuf = (&raw mut WBUF) as *mut u8;
    if let Err(s) = blk_request(ctx, BLK_T_IN, 0, rbuf as u64, 512) {
        return blk_failed(b"read sector 0", Some(s));
    }
    let rdata: &[u8; 4096] = unsafe { &*(&raw const RBUF.0) };
    let sector0 = &rdata[..64];
    let n = sector0
        .iter()
        .position(|&c| c == 0 || c == b'\n')
        .unwrap_or(64);
    puts(b"blk: sector0=");
    puts(&sector0[..n]);
    putc(b'\n');

    // Sectors 1..=8: "cairn-guest-sector-<n>\n" (21 bytes) repeated 24 times, 8 NULs of
    // padding; built with doubling copies (each one rep movsb), not byte loops.
    let w = unsafe { &mut (*(&raw mut WBUF.0)) };
    for n in 1..=8u8 {
        let sec = &mut w[(n as usize - 1) * 512..n as usize * 512];
        let line: &[u8] = b"cairn-guest-sector-";
        sec[..19].copy_from_slice(line);
        sec[19] = b'0' + n;
        sec[20] = b'\n';
        let mut have = 21;
        while have < 504 {
            let k = have.min(504 - have);
            sec.copy_within(0..k, have);
            have += k;
        }
        sec[504..].fill(0);
    }
    if let Err(s) = blk_request(ctx, BLK_T_OUT, 1, wbuf as u64, 4096) {
        return blk_failed(b"write sectors 1-8", Some(s));
    }
    if let Err(s) = blk_request(ctx, BLK_T_FLUSH, 0, 0, 0) {
        return blk_failed(b"flush", Some(s));
    }
    // Poison the first byte of each sector (no 4 KiB fill: ring-0 work is slow).
    for n in 0..8 {
        unsafe { (*(&raw mut RBUF.0))[n * 512] = 0xff };
    }
    if let Err(s) = blk_request(ctx, BLK_T_IN, 1, rbuf as u64, 4096) {
        return blk_failed(b"read back sectors 1-8", Some(s));
    }
    let same = unsafe { *(&raw const RBUF.0) == *(&raw const WBUF.0) };
    if !same {
        return blk_failed(b"read-back data differs from what was written", None);
    }
    puts(b"blk: wrote 8 sectors, flushed, read back ok\n");
}

fn task_bench(ctx: &mut Ctx) {
    let fail = |what: &[u8]| {
        puts(b"bench: FAILED ");
        puts(what);
        putc(b'\n');
    };
    if let Err(e) = blk_open(ctx) {
        return fail(e.as_bytes());
    }
    let mib = ctx.cfg.bench_mib;
    let capacity = ctx.blk.as_ref().map_or(0, |b| b.capacity);
    if 2048 + mib * 2048 > capacity {
        return fail(b"disk too small");
    }
    if !ensure_irq(ctx) {
        return fail(b"no timer interrupts (cannot calibrate the TSC)");
    }
    let per_ms = calibrate_tsc(ctx);
    let Some(mut blk) = ctx.blk.take() else {
        return;
    };
    // Two groups of slots: the guest refills one while the device works on the other. A
    // group is an eighth of the ring, so two groups of three-descriptor requests fit and the
    // avail ring's pattern of heads repeats: it is written once per phase, and a request then
    // costs the guest two stores and a load. (On PVM every ring-0 instruction is emulated,
    // ~1 µs: the driver's own work would otherwise hide the device's.)
    let group = (blk.q.size as usize / 8).clamp(1, BENCH_SLOTS / 2);
    let total = mib * (1024 * 1024 / BENCH_REQ as u64);
    let buf = (&raw mut BENCH) as u64;
    let per_req = BENCH_REQ as u64 / 512;
    let hdrs = (&raw mut BLK_HDRS) as *mut BlkHdr;
    let status = (&raw mut BLK_STATUS) as *mut u8;
    for (typ, name) in [(BLK_T_OUT, &b"write"[..]), (BLK_T_IN, &b"read"[..])] {
        for s in 0..2 * group {
            blk_prepare(&mut blk.q, s, typ, 0, buf, BENCH_REQ as u32);
        }
        for i in 0..blk.q.size {
            let s = (i as usize / group) % 2 * group + i as usize % group;
            blk.q.set_avail_ahead(i, (3 * s) as u16);
        }
        let t0 = rdtsc();
        let mut submitted = 0u64;
        let mut ok = true;
        // Requests in flight per group, in submission order (the device serves them in order).
        let mut inflight = [0usize; 2];
        let submit = |q: &mut Vq, g: usize, first: u64, k: usize| {
            let mut sector = 2048 + first * per_req;
            for s in g * group..g * group + k {
                // s < 2 * group <= BENCH_SLOTS.
                unsafe {
                    write_volatile(&raw mut (*hdrs.add(s)).sector, sector);
                    write_volatile(status.add(s), 0xff);
                }
                sector += per_req;
            }
            if k == group {
                q.publish_prefilled(k as u16);
            } else {
                // A short last group: its heads by hand (nothing of this phase follows it).
                for s in g * group..g * group + k {
                    q.add_avail((3 * s) as u16);
                }
                q.publish();
            }
            q.notify();
        };
        for (g, slot) in inflight.iter_mut().enumerate() {
            let k = (total - submitted).min(group as u64) as usize;
            if k > 0 {
                submit(&mut blk.q, g, submitted, k);
                *slot = k;
                submitted += k as u64;
            }
        }
        let mut g = 0;
        while ok && inflight[g] > 0 {
            let k = inflight[g];
            let done = wait_used_n(ctx, &mut blk.q, k as u16, BENCH_SPIN, 10_000);
            let mut bad = 0u8;
            for s in g * group..g * group + k {
                bad |= unsafe { read_volatile(status.add(s)) };
            }
            ok = done && bad == 0;
            inflight[g] = 0;
            let next = (total - submitted).min(group as u64) as usize;
            if ok && next > 0 {
                submit(&mut blk.q, g, submitted, next);
                inflight[g] = next;
                submitted += next as u64;
            }
            g ^= 1;
        }
        // A write counts once it is durable, as the host's peer figure (fdatasync) does.
        if ok && typ == BLK_T_OUT {
            let head = blk_prepare(&mut blk.q, 0, BLK_T_FLUSH, 0, 0, 0);
            blk.q.add_avail(head);
            blk.q.publish();
            blk.q.notify();
            ok = wait_used_n(ctx, &mut blk.q, 1, BENCH_SPIN, 10_000) && slot_status(0) == 0;
        }
        let ms = (rdtsc() - t0) / per_ms;
        if !ok {
            puts(b"bench: FAILED ");
            puts(name);
            puts(b" request\n");
            break;
        }
        puts(b"bench: ");
        puts(name);
        putc(b' ');
        put_dec(mib);
        puts(b" MiB in ");
        put_dec(ms);
        puts(b" ms\n");
    }
    ctx.blk = Some(blk);
}

// ---------------------------------------------------------------------------------------------
// virtio-net: ARP and ICMP echo.
// ---------------------------------------------------------------------------------------------

const NET_F_MAC: u32 = 1 << 5;
const NET_HDR: usize = 12;
const BUF: usize = 2048;
const RX_BUFS: usize = 16;

#[repr(C, align(4096))]
struct NetBufs<const N: usize>([[u8; BUF]; N]);
#[link_section = ".bss.noinit"]
static mut RXBUF: NetBufs<RX_BUFS> = NetBufs([[0; BUF]; RX_BUFS]);
#[link_section = ".bss.noinit"]
static mut TXBUF: NetBufs<2> = NetBufs([[0; BUF]; 2]);

struct Net {
    rx: Vq,
    tx: Vq,
    mac: [u8; 6],
    tx_next: usize,
}

enum Event {
    ArpReply([u8; 6]),
    EchoReply(u16),
}

fn net_open(ctx: &mut Ctx) -> Result<(), &'static str> {
    let base = first_dev(ctx, Kind::Net).ok_or("no net device")?;
    virtio_begin(base, NET_F_MAC)?;
    let rx = Vq::setup(base, 0, &raw mut NET_RX_RING).inspect_err(|_| w32(base + 0x70, S_FAILED))?;
    let tx = Vq::setup(base, 1, &raw mut NET_TX_RING).inspect_err(|_| w32(base + 0x70, S_FAILED))?;
    let mut mac = [0u8; 6];
    for (i, m) in mac.iter_mut().enumerate() {
        *m = r8(base + 0x100 + i as u64);
    }
    let mac = ctx.cfg.mac.unwrap_or(mac);
    virtio_driver_ok(base);
    let mut net = Net {
        rx,
        tx,
        mac,
        tx_next: 0,
    };
    let n = (net.rx.size as usize).min(RX_BUFS);
    for i in 0..n {
        let addr = unsafe { (&raw mut RXBUF.0[i]) as u64 };
        net.rx.set_desc(i as u16, addr, BUF as u32, VRING_DESC_F_WRITE, 0);
        net.rx.push(i as u16);
    }
    net.rx.notify();
    ctx.net = Some(net);
    Ok(())
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends the frame that `build` writes into a zeroed TX buffer (after the 12-byte virtio-net
/// header); `build` returns the frame length.
fn net_send(ctx: &mut Ctx, build: impl FnOnce(&mut [u8]) -> usize) -> bool {
    let Some(mut net) = ctx.net.take() else {
        return false;
    };
    let i = net.tx_next;
    net.tx_next ^= 1;
    let buf = unsafe { &mut (*(&raw mut TXBUF.0))[i] };
    buf[..NET_HDR + 64].fill(0);
    let len = build(&mut buf[NET_HDR..]).max(60);
    let addr = buf.as_ptr() as u64;
    net.tx.set_desc(i as u16, addr, (NET_HDR + len) as u32, 0, 0);
    net.tx.push(i as u16);
    net.tx.notify();
    let ok = wait_used(ctx, &mut net.tx, 1000).is_some();
    ctx.net = Some(net);
    ok
}

fn arp_frame(f: &mut [u8], oper: u16, mac: &[u8; 6], ip: [u8; 4], dmac: &[u8; 6], tmac: &[u8; 6], tip: [u8; 4]) -> usize {
    f[0..6].copy_from_slice(dmac);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, oper as u8]);
    f[22..28].copy_from_slice(mac);
    f[28..32].copy_from_slice(&ip);
    f[32..38].copy_from_slice(tmac);
    f[38..42].copy_from_slice(&tip);
    42
}

const PING_ID: u16 = 0x4341;
const PING_PAYLOAD: &[u8; 32] = b"cairn-test-guest ping payload 32";

fn echo_frame(f: &mut [u8], mac: &[u8; 6], ip: [u8; 4], pmac: &[u8; 6], peer: [u8; 4]) -> usize {
    f[0..6].copy_from_slice(pmac);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_hdr = &mut f[14..34];
    ip_hdr[..12].copy_from_slice(&[0x45, 0, 0, 60, 0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip_hdr[12..16].copy_from_slice(&ip);
    ip_hdr[16..20].copy_from_slice(&peer);
    let c = csum(ip_hdr);
    ip_hdr[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut f[34..74];
    icmp[..8].copy_from_slice(&[8, 0, 0, 0, (PING_ID >> 8) as u8, PING_ID as u8, 0, 1]);
    icmp[8..40].copy_from_slice(PING_PAYLOAD);
    let c = csum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    74
}

/// Handles received frames until an event arrives or `deadline` (in ticks) passes; answers
/// ARP requests for our address meanwhile.
fn net_wait(ctx: &mut Ctx, ip: [u8; 4], peer: [u8; 4], deadline: u64, want_arp: bool) -> Option<Event> {
    loop {
        let mut event = None;
        let mut reply_to: Option<([u8; 6], [u8; 4])> = None;
        {
            let net = ctx.net.as_mut()?;
            let mut reposted = false;
            while let Some((id, len)) = net.rx.pop() {
                let id = id as usize % RX_BUFS;
                let buf = unsafe { &(*(&raw const RXBUF.0))[id] };
                let len = (len as usize).min(BUF);
                if len > NET_HDR + 14 {
                    let f = &buf[NET_HDR..len];
                    let ethertype = u16::from_be_bytes([f[12], f[13]]);
                    if ethertype == 0x0806 && f.len() >= 42 && f[14..20] == [0, 1, 8, 0, 6, 4] {
                        let oper = u16::from_be_bytes([f[20], f[21]]);
                        let mut sha = [0u8; 6];
                        sha.copy_from_slice(&f[22..28]);
                        let spa = [f[28], f[29], f[30], f[31]];
                        let tpa = [f[38], f[39], f[40], f[41]];
                        if oper == 1 && tpa == ip {
                            reply_to = Some((sha, spa));
                        } else if oper == 2 && spa == peer && want_arp && event.is_none() {
                            event = Some(Event::ArpReply(sha));
                        }
                    } else if ethertype == 0x0800 && f.len() >= 34 {
                        let ihl = usize::from(f[14] & 15) * 4;
                        let src = [f[26], f[27], f[28], f[29]];
                        let icmp = 14 + ihl;
                        if f[23] == 1 && src == peer && f.len() >= icmp + 8 && f[icmp] == 0 {
                            let id = u16::from_be_bytes([f[icmp + 4], f[icmp + 5]]);
                            let seq = u16::from_be_bytes([f[icmp + 6], f[icmp + 7]]);
                            if id == PING_ID && !want_arp && event.is_none() {
                                event = Some(Event::EchoReply(seq));
                            }
                        }
                    }
                }
                net.rx.push(id as u16);
                reposted = true;
                if reply_to.is_some() || event.is_some() {
                    break;
                }
            }
            if reposted {
                net.rx.notify();
            }
        }
        if let Some((tmac, tip)) = reply_to {
            let mac = ctx.net.as_ref()?.mac;
            net_send(ctx, |f| arp_frame(f, 2, &mac, ip, &tmac, &tmac, tip));
        }
        if event.is_some() {
            return event;
        }
        if reply_to.is_some() {
            continue;
        }
        if ticks() >= deadline {
            return None;
        }
        wait_irq();
    }
}

fn task_net(ctx: &mut Ctx) {
    let fail = |what: &[u8]| {
        puts(b"net: FAILED ");
        puts(what);
        putc(b'\n');
    };
    if ctx.net.is_none() {
        if let Err(e) = net_open(ctx) {
            return fail(e.as_bytes());
        }
    }
    let mac = ctx.net.as_ref().map_or([0; 6], |n| n.mac);
    puts(b"net: mac=");
    put_mac(&mac);
    putc(b'\n');
    let (Some(ip), Some(peer)) = (ctx.cfg.ip, ctx.cfg.peer) else {
        return fail(b"cairn.ip= and cairn.peer= are needed");
    };
    if !ensure_irq(ctx) {
        return fail(b"no timer interrupts");
    }
    let wait = 5 * PIT_HZ;

    if !net_send(ctx, |f| arp_frame(f, 1, &mac, ip, &[0xff; 6], &[0; 6], peer)) {
        return fail(b"arp request not sent");
    }
    let deadline = ticks() + wait;
    let pmac = match net_wait(ctx, ip, peer, deadline, true) {
        Some(Event::ArpReply(m)) => m,
        _ => return fail(b"no arp reply"),
    };
    puts(b"net: arp reply from ");
    put_ip(peer);
    puts(b" is-at ");
    put_mac(&pmac);
    putc(b'\n');

    if !net_send(ctx, |f| echo_frame(f, &mac, ip, &pmac, peer)) {
        return fail(b"echo request not sent");
    }
    let deadline = ticks() + wait;
    match net_wait(ctx, ip, peer, deadline, false) {
        Some(Event::EchoReply(seq)) => {
            puts(b"net: ping reply from ");
            put_ip(peer);
            puts(b" seq=");
            put_dec(u64::from(seq));
            putc(b'\n');
        }
        _ => fail(b"no ping reply"),
    }
}

// ---------------------------------------------------------------------------------------------
// flood: a guest that writes its console without end, for the host's cap to hold.
// ---------------------------------------------------------------------------------------------

/// Writes `cairn.flood_kib=` KiB (default 4096) of numbered 64-byte lines, then `flood: done`.
/// Each line is one `rep outsb` to the UART's data port (never busy here): one exit per line
/// where a byte at a time would cost one per byte.
fn task_flood(ctx: &Ctx) {
    let lines = ctx.cfg.flood_kib * 1024 / 64;
    let mut line = *b"flood 0000000000 ..............................................\n";
    for n in 0..lines {
        let mut v = n;
        for d in line[6..16].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        outsb(COM1, &line);
    }
    puts(b"flood: done\n");
}

// ---------------------------------------------------------------------------------------------
// echo: console input, read back.
// ---------------------------------------------------------------------------------------------

/// Prints `echo: ready`, reads one line from the UART (polling its data-ready bit; at most
/// 1024 bytes) and prints it back as `echo: <line> (<n> bytes)`.
fn task_echo() {
    puts(b"echo: ready\n");
    echo_line();
}

/// `echoes`: as `echo`, for every line, for good (an attached console types several).
fn task_echoes() -> ! {
    puts(b"echo: ready\n");
    loop {
        echo_line();
    }
}

fn echo_line() {
    let mut line = [0u8; 1024];
    let mut n = 0;
    loop {
        while inb(COM1 + 5) & 1 == 0 {
            core::hint::spin_loop();
        }
        let c = inb(COM1);
        if c == b'\n' || n == line.len() {
            break;
        }
        line[n] = c;
        n += 1;
    }
    puts(b"echo: ");
    puts(&line[..n]);
    puts(b" (");
    put_dec(n as u64);
    puts(b" bytes)\n");
}

// ---------------------------------------------------------------------------------------------
// ticks.
// ---------------------------------------------------------------------------------------------

fn task_ticks(ctx: &mut Ctx) {
    if !ensure_irq(ctx) {
        puts(b"ticks: FAILED no timer interrupts\n");
        return;
    }
    let limit = ctx.cfg.ticks;
    let mut printed = 0u64;
    let mut next = ticks() + 10;
    loop {
        if limit.is_some_and(|k| printed >= k) {
            return;
        }
        while ticks() < next {
            wait_irq();
        }
        next += 10;
        let n = TICK_LINES.load(Ordering::Relaxed) + 1;
        TICK_LINES.store(n, Ordering::Relaxed);
        puts(b"tick ");
        put_dec(n);
        putc(b'\n');
        printed += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// main.
// ---------------------------------------------------------------------------------------------

#[no_mangle]
extern "C" fn cairn_main(boot_params: u64) -> ! {
    let ptr = u64::from(r32(boot_params + 0x228));
    let size = r32(boot_params + 0x238) as usize;
    let max = if size == 0 || size > 4096 { 4096 } else { size };
    let cmdline: &[u8] = if ptr == 0 {
        b""
    } else {
        let all = unsafe { core::slice::from_raw_parts(ptr as *const u8, max) };
        let n = all.iter().position(|&c| c == 0).unwrap_or(max);
        &all[..n]
    };
    setup_idt();
    puts(b"cairn-test-guest: cmdline=");
    puts(cmdline);
    putc(b'\n');

    let mp = find_mp();
    match &mp {
        Some(mp) => {
            puts(b"cairn-test-guest: cpus=");
            put_dec(u64::from(mp.cpus));
            puts(b" ioapic=");
            put_hex(mp.ioapic);
            putc(b'\n');
        }
        None => puts(b"cairn-test-guest: no mp table\n"),
    }

    let mut ctx = Ctx {
        cfg: parse_cmdline(cmdline),
        mp,
        irq: IrqState::Untried,
        tsc_per_ms: 0,
        blk: None,
        net: None,
    };

    for i in 0..ctx.cfg.ndev {
        let d = &mut ctx.cfg.devs[i];
        d.kind = if map_mmio(d.base)
            && r32(d.base) == 0x7472_6976
            && r32(d.base + 4) == 2
        {
            match r32(d.base + 8) {
                1 => Kind::Net,
                2 => Kind::Blk,
                id => Kind::Other(id),
            }
        } else {
            Kind::None
        };
        puts(b"virtio: ");
        put_hex(d.base);
        puts(b" type=");
        match d.kind {
            Kind::Blk => puts(b"blk"),
            Kind::Net => puts(b"net"),
            Kind::Other(id) => {
                puts(b"other:");
                put_dec(u64::from(id));
            }
            Kind::None => puts(b"none"),
        }
        puts(b" irq=");
        put_dec(u64::from(d.irq));
        putc(b'\n');
    }

    let tests = ctx.cfg.tests;
    for task in tests.split(|&c| c == b',') {
        match task {
            b"" => {}
            b"blk" => task_blk(&mut ctx),
            b"net" => task_net(&mut ctx),
            b"ticks" => task_ticks(&mut ctx),
            b"bench-blk" => task_bench(&mut ctx),
            b"flood" => task_flood(&ctx),
            b"echo" => task_echo(),
            b"echoes" => task_echoes(),
            // Touches an unmapped address: exercises the exception path (#PF, vector 14).
            b"fault" => {
                r32(0x80_0000_0000);
            }
            other => {
                puts(b"cairn-test-guest: unknown task ");
                puts(other);
                putc(b'\n');
            }
        }
    }

    puts(b"cairn-test-guest: done\n");
    reset()
}
