//! What the installer writes: the boot loader pieces and kernel the image carries in
//! [`PAYLOAD_DIR`], and the initramfs this system booted from.
//!
//! The initramfs cannot be a file inside itself, and a PXE boot has no medium to copy it from,
//! so the live media boot with `retain_initrd`: the kernel then keeps the initramfs it was
//! given instead of freeing it, and we read it back from memory — where it lies is in the boot
//! parameters (`/sys/kernel/boot_params/data`), and /proc/kcore maps physical memory. Debian's
//! 6.1 kernel has no /sys/firmware/initrd (later kernels expose the retained copy there). The
//! cost is the compressed initramfs in RAM (~21 MiB release, ~33 MiB debug) for as long as the
//! live system runs; the installed system boots without it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use model::install::{BOOT_IMG, CORE_IMG, ESP_IMG, PAYLOAD_DIR, VMLINUZ};

use super::InstallError;

pub struct Payload {
    /// GRUB's boot sector (its first 440 bytes go to the MBR).
    pub boot_img: Vec<u8>,
    pub core_img: Vec<u8>,
    pub esp_img: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: Vec<u8>,
}

impl Payload {
    /// The running system's: files from the image, the initramfs from memory.
    pub fn running() -> Result<Payload, InstallError> {
        let initrd = retained_initrd()?;
        Payload::from_dir(Path::new(PAYLOAD_DIR), initrd)
    }

    pub fn from_dir(dir: &Path, initrd: Vec<u8>) -> Result<Payload, InstallError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| InstallError::NoPayload(format!("{}: {e}", dir.join(name).display())))
        };
        let boot_img = read(BOOT_IMG)?;
        if boot_img.len() != 512 {
            return Err(InstallError::NoPayload(format!(
                "{BOOT_IMG} is {} bytes, not a sector",
                boot_img.len()
            )));
        }
        let payload = Payload {
            boot_img,
            core_img: read(CORE_IMG)?,
            esp_img: dir.join(ESP_IMG),
            vmlinuz: dir.join(VMLINUZ),
            initrd,
        };
        for f in [&payload.esp_img, &payload.vmlinuz] {
            if !f.is_file() {
                return Err(InstallError::NoPayload(format!(
                    "{} is missing",
                    f.display()
                )));
            }
        }
        Ok(payload)
    }

    /// Bytes the install copies, for its progress.
    pub fn bytes(&self) -> u64 {
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        (self.core_img.len() + self.initrd.len()) as u64 + len(&self.esp_img) + len(&self.vmlinuz)
    }
}

/// The initramfs the kernel kept (`retain_initrd`), read from physical memory.
fn retained_initrd() -> Result<Vec<u8>, InstallError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if !cmdline.split_whitespace().any(|w| w == "retain_initrd") {
        return Err(InstallError::NoPayload(
            "this boot did not keep its initramfs (no retain_initrd on the kernel command \
             line): install from the live system booted off the ISO or PXE"
                .into(),
        ));
    }
    let params = std::fs::read("/sys/kernel/boot_params/data").map_err(|e| {
        InstallError::NoPayload(format!("reading /sys/kernel/boot_params/data: {e}"))
    })?;
    let (phys, size) = initrd_location(&params)
        .ok_or_else(|| InstallError::NoPayload("the boot parameters name no initramfs".into()))?;
    let initrd = read_physical(Path::new("/proc/kcore"), phys, size)?;
    // zstd (the image's) or an uncompressed newc archive.
    if !(initrd.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || initrd.starts_with(b"070701")) {
        return Err(InstallError::NoPayload(format!(
            "the retained initramfs at {phys:#x} ({size} bytes) starts with {:02x?}, not an \
             initramfs",
            &initrd[..initrd.len().min(8)]
        )));
    }
    Ok(initrd)
}

/// The initramfs' physical address and size from x86 boot parameters (`struct boot_params`:
/// `hdr.ramdisk_image` at 0x218, `hdr.ramdisk_size` at 0x21c, their high halves
/// `ext_ramdisk_image` at 0xc0 and `ext_ramdisk_size` at 0xc4).
fn initrd_location(params: &[u8]) -> Option<(u64, u64)> {
    let u32_at = |at: usize| -> Option<u64> {
        Some(u32::from_le_bytes(params.get(at..at + 4)?.try_into().ok()?) as u64)
    };
    let phys = u32_at(0x218)? | (u32_at(0xc0)? << 32);
    let size = u32_at(0x21c)? | (u32_at(0xc4)? << 32);
    (phys != 0 && size != 0).then_some((phys, size))
}

/// `size` bytes at physical address `phys`, through a kcore-style ELF core file: each PT_LOAD
/// of RAM carries its physical address in p_paddr.
fn read_physical(core: &Path, phys: u64, size: u64) -> Result<Vec<u8>, InstallError> {
    let io = |e: std::io::Error| InstallError::NoPayload(format!("{}: {e}", core.display()));
    let mut f = File::open(core).map_err(io)?;
    let mut ehdr = [0u8; 64];
    f.read_exact(&mut ehdr).map_err(io)?;
    if &ehdr[0..4] != b"\x7fELF" || ehdr[4] != 2 {
        return Err(InstallError::NoPayload(format!(
            "{} is not a 64-bit ELF core",
            core.display()
        )));
    }
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let le16 = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let (phoff, phentsize, phnum) = (le64(&ehdr, 0x20), le16(&ehdr, 0x36), le16(&ehdr, 0x38));
    if phentsize < 56 {
        return Err(InstallError::NoPayload("bad program header size".into()));
    }
    let mut phdrs = vec![0u8; (phentsize * phnum) as usize];
    f.seek(SeekFrom::Start(phoff)).map_err(io)?;
    f.read_exact(&mut phdrs).map_err(io)?;
    for ph in phdrs.chunks(phentsize as usize) {
        let (ty, offset, paddr, memsz) = (
            u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]),
            le64(ph, 8),
            le64(ph, 24),
            le64(ph, 40),
        );
        if ty != 1 || paddr == u64::MAX || phys < paddr || phys + size > paddr + memsz {
            continue;
        }
        let mut data = vec![0u8; size as usize];
        f.seek(SeekFrom::Start(offset + (phys - paddr)))
            .map_err(io)?;
        f.read_exact(&mut data).map_err(io)?;
        return Ok(data);
    }
    Err(InstallError::NoPayload(format!(
        "no memory segment of {} holds {phys:#x}+{size:#x}",
        core.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_params_name_the_initramfs() {
        let mut p = vec![0u8; 4096];
        p[0x218..0x21c].copy_from_slice(&0x7df3_5000u32.to_le_bytes());
        p[0x21c..0x220].copy_from_slice(&0x020a_ab8cu32.to_le_bytes());
        assert_eq!(initrd_location(&p), Some((0x7df3_5000, 0x020a_ab8c)));
        p[0xc0] = 1;
        assert_eq!(initrd_location(&p), Some((0x1_7df3_5000, 0x020a_ab8c)));
        assert_eq!(initrd_location(&[0u8; 4096]), None);
        assert_eq!(initrd_location(&[0u8; 16]), None);
    }

    /// A tiny ELF core with two PT_LOADs, like /proc/kcore: one without a physical address
    /// (vmalloc), one of RAM at physical 0x10000.
    #[test]
    fn physical_memory_is_found_through_the_core_headers() {
        let mut core = vec![0u8; 64 + 2 * 56];
        core[0..4].copy_from_slice(b"\x7fELF");
        core[4] = 2;
        core[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        core[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        core[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let data_at = core.len() as u64;
        for (i, (paddr, offset)) in [(u64::MAX, 0u64), (0x10000, data_at)].iter().enumerate() {
            let ph = &mut core[64 + 56 * i..64 + 56 * (i + 1)];
            ph[0..4].copy_from_slice(&1u32.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[40..48].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        core.extend((0..0x1000u32).map(|i| i as u8));
        let path = std::env::temp_dir().join(format!("cairn-kcore-{}", std::process::id()));
        std::fs::write(&path, &core).unwrap();
        assert_eq!(
            read_physical(&path, 0x10010, 4).unwrap(),
            vec![0x10, 0x11, 0x12, 0x13]
        );
        assert!(
            read_physical(&path, 0x10ffe, 4).is_err(),
            "past the segment's end"
        );
        assert!(read_physical(&path, 0x20000, 4).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
