//! Linux 64-bit direct boot, as Firecracker does it: the ELF kernel loaded at its physical
//! addresses by linux-loader, the command line at 0x20000, the zero page (boot_params) with the
//! e820 map at 0x7000, a GDT, an empty IDT, identity page tables for the first GiB, and the vCPU
//! in long mode at the ELF entry with `%rsi` pointing at the zero page.

pub mod mptable;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, Cmdline, Elf, KernelLoader, load_cmdline};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress};

use crate::VmError;
use crate::vstate::memory::{self, GuestMemoryMmap};

/// GDT address.
pub const GDT: u64 = 0x500;
/// IDT address.
pub const IDT: u64 = 0x520;
/// The zero page (boot_params).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Page tables: PML4, PDPT, PD.
pub const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x20000;
/// The longest command line accepted (with its NUL).
pub const CMDLINE_MAX: usize = 2048;
/// Where the kernel goes (and the start of RAM above the legacy hole).
pub const HIMEM_START: u64 = 0x10_0000;
/// End of usable low memory (start of the EBDA).
const EBDA_START: u64 = 0x9fc00;

const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// boot_params as guest-memory bytes.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ZeroPage(boot_params);
// SAFETY: boot_params is a plain-old-data repr(C, packed) struct of integers and arrays.
unsafe impl ByteValued for ZeroPage {}

/// Where the kernel landed and how to enter it.
pub struct LoadedKernel {
    /// The 64-bit entry point.
    pub entry: GuestAddress,
    /// A bzImage's setup header, which the zero page must carry.
    pub setup_header: Option<setup_header>,
    /// First guest address past the kernel.
    pub end: u64,
}

/// Offset of the 64-bit entry point (`startup_64`) in a bzImage's protected-mode kernel.
const BZIMAGE_ENTRY_64: u64 = 0x200;
/// Where a bzImage keeps "HdrS".
const BZIMAGE_HDRS_AT: u64 = 0x202;

/// Loads the kernel at `path` — an ELF vmlinux or a bzImage — and says how to enter it.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, VmError> {
    let not_kernel = |reason: String| VmError::KernelNotElf {
        path: path.to_path_buf(),
        reason,
    };
    let load_err = |reason: String| VmError::KernelLoad {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(|source| VmError::KernelMissing {
        path: path.to_path_buf(),
        source,
    })?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(not_kernel("not a regular file".into()));
    }
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| not_kernel("shorter than a kernel header".into()))?;
    let mut hdrs = [0u8; 4];
    let is_bzimage = file.seek(SeekFrom::Start(BZIMAGE_HDRS_AT)).is_ok()
        && file.read_exact(&mut hdrs).is_ok()
        && u32::from_le_bytes(hdrs) == KERNEL_HDR_MAGIC;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| load_err(e.to_string()))?;
    let loaded = if magic == *b"\x7fELF" {
        Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|e| match e {
            linux_loader::loader::Error::Elf(e) => not_kernel(e.to_string()),
            other => load_err(other.to_string()),
        })?
    } else if is_bzimage {
        BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(
            |e| match e {
                linux_loader::loader::Error::Bzimage(e) => not_kernel(e.to_string()),
                other => load_err(other.to_string()),
            },
        )?
    } else {
        return Err(not_kernel(format!(
            "neither an ELF (magic {magic:02x?}) nor a bzImage (no \"HdrS\" at 0x202)"
        )));
    };
    if loaded.kernel_end > memory::low_ram_end(mem) {
        return Err(load_err(format!(
            "kernel ends at {:#x}, beyond guest RAM",
            loaded.kernel_end
        )));
    }
    let entry = match loaded.setup_header {
        Some(_) => loaded.kernel_load.unchecked_add(BZIMAGE_ENTRY_64),
        None => loaded.kernel_load,
    };
    Ok(LoadedKernel {
        entry,
        setup_header: loaded.setup_header,
        end: loaded.kernel_end,
    })
}

/// Copies the initramfs at `path` to the top of low RAM (page aligned, as Firecracker does);
/// returns its guest address and size.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end_floor: u64,
) -> Result<(u64, u64), VmError> {
    let bad = |reason: String| VmError::Initrd {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let size = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    if size == 0 {
        return Err(bad("it is empty".into()));
    }
    let top = memory::low_ram_end(mem);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end_floor)
        .ok_or_else(|| {
            bad(format!(
                "{size} bytes do not fit in guest RAM above the kernel"
            ))
        })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| bad(format!("copying it into guest memory: {e}")))?;
    Ok((addr, size))
}

/// Writes the command line to guest memory; returns its length without the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, VmError> {
    let bad = |reason: String| VmError::Cmdline {
        cmdline: cmdline.to_string(),
        reason,
    };
    let cl = Cmdline::try_from(cmdline, CMDLINE_MAX).map_err(|e| bad(e.to_string()))?;
    load_cmdline(mem, GuestAddress(CMDLINE), &cl).map_err(|e| bad(e.to_string()))?;
    let len = cl
        .as_cstring()
        .map_err(|e| bad(e.to_string()))?
        .as_bytes()
        .len();
    Ok(len)
}

/// Writes the zero page: boot protocol header fields, the command line pointer, the e820 map.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    cmdline_len: usize,
    header: Option<setup_header>,
    initrd: Option<(u64, u64)>,
) -> Result<(), VmError> {
    let mut p = boot_params::default();
    if let Some(h) = header {
        p.hdr = h;
    }
    if let Some((addr, size)) = initrd {
        p.hdr.ramdisk_image = addr as u32;
        p.hdr.ramdisk_size = size as u32;
    }
    p.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    p.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    p.hdr.header = KERNEL_HDR_MAGIC;
    p.hdr.cmd_line_ptr = CMDLINE as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    p.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;

    let mut e820 = vec![(0, EBDA_START)];
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for r in mem.iter() {
        let start = r.start_addr().raw_value().max(HIMEM_START);
        let end = r.start_addr().raw_value() + r.len();
        if end > start {
            e820.push((start, end - start));
        }
    }
    for (i, (addr, size)) in e820.iter().enumerate() {
        p.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: E820_RAM,
        };
    }
    p.e820_entries = e820.len() as u8;

    mem.write_obj(ZeroPage(p), GuestAddress(ZERO_PAGE))
        .map_err(|e| VmError::GuestMemory {
            what: "writing the zero page",
            reason: e.to_string(),
        })
}

fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << (56 - 24))
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << (48 - 16))
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

fn segment(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let g = bit(55);
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    kvm_segment {
        base: ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

fn write_u64(mem: &GuestMemoryMmap, addr: u64, v: u64) -> Result<(), VmError> {
    mem.write_obj(v, GuestAddress(addr))
        .map_err(|e| VmError::GuestMemory {
            what: "writing boot tables",
            reason: e.to_string(),
        })
}

/// Writes GDT, IDT and identity page tables, and puts the vCPU in long mode at `entry`.
pub fn setup_long_mode(
    mem: &GuestMemoryMmap,
    vcpu: &VcpuFd,
    entry: GuestAddress,
) -> Result<(), VmError> {
    let kvm = |op: &'static str| move |source| VmError::Kvm { op, source };

    // GDT: null, 64-bit code, data, TSS.
    let gdt = [
        gdt_entry(0, 0, 0),
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ];
    for (i, e) in gdt.iter().enumerate() {
        write_u64(mem, GDT + 8 * i as u64, *e)?;
    }
    write_u64(mem, IDT, 0)?;

    // Identity map of the first GiB with 2 MiB pages.
    write_u64(mem, PML4, PDPT | 0x03)?;
    write_u64(mem, PDPT, PD | 0x03)?;
    for i in 0..512u64 {
        write_u64(mem, PD + 8 * i, (i << 21) | 0x83)?;
    }

    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    sregs.gdt.base = GDT;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT;
    sregs.idt.limit = 7;
    sregs.cs = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], 3);
    sregs.cr3 = PML4;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry.raw_value(),
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_segments_round_trip() {
        let code = segment(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(
            (code.selector, code.l, code.db, code.present, code.type_),
            (8, 1, 0, 1, 0xb)
        );
        assert_eq!(code.limit, 0xffff_ffff);
        let data = segment(gdt_entry(0xc093, 0, 0xfffff), 2);
        assert_eq!(
            (data.selector, data.l, data.db, data.type_, data.s),
            (16, 0, 1, 3, 1)
        );
        assert_eq!(gdt_entry(0, 0, 0), 0);
    }

    #[test]
    fn zero_page_is_4k() {
        assert_eq!(std::mem::size_of::<ZeroPage>(), 4096);
    }
}
