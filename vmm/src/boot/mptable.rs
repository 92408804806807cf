//! The Intel MultiProcessor table (MP spec 1.4) at the start of the EBDA, as Firecracker
//! writes it: one processor entry per vCPU, the ISA bus, one IOAPIC, every ISA IRQ and device
//! GSI wired to the same IOAPIC pin (KVM's default routing), LINT0 as ExtINT and LINT1 as NMI.
//! With it a guest routes its timer through the IOAPIC instead of staying in virtual-wire mode,
//! where a PIT tick raised while LINT0 is masked is lost and boots hang in `calibrate_delay`.

use vm_memory::{Bytes, GuestAddress};

use crate::VmError;
use crate::vstate::memory::GuestMemoryMmap;

/// Where the table goes: the last KiB of base memory, which the e820 map leaves out of RAM.
pub const MPTABLE_START: u64 = 0x9fc00;
/// The IOAPIC's MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APICs' MMIO base.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// Highest GSI wired (the IOAPIC of KVM's irqchip has 24 pins).
pub const IRQ_MAX: u8 = 23;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const BUS_ISA: u8 = 0;
/// CPU signature (family 6) and features (FPU, APIC) reported per processor entry.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The table's bytes for `vcpus` CPUs, placed at `start`: floating pointer, then the config
/// table right after it.
pub fn build(vcpus: u8, start: u32) -> Vec<u8> {
    let ioapic_id = vcpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..vcpus {
        entries.push(ENTRY_PROCESSOR);
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, BUS_ISA]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..=IRQ_MAX {
        // irqflag 0: conforming polarity and trigger (ISA: active high, edge).
        entries.extend_from_slice(&[
            ENTRY_INTSRC,
            INT_TYPE_INT,
            0,
            0,
            BUS_ISA,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    for (kind, lint) in [(INT_TYPE_EXTINT, 0u8), (INT_TYPE_NMI, 1u8)] {
        // Destination 0xff: every local APIC.
        entries.extend_from_slice(&[ENTRY_LINTSRC, kind, 0, 0, BUS_ISA, 0, 0xff, lint]);
        count += 1;
    }

    let config_at = start + 16;
    let mut config = Vec::with_capacity(44 + entries.len());
    config.extend_from_slice(b"PCMP");
    config.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    config.push(4); // spec revision 1.4
    config.push(0); // checksum, below
    config.extend_from_slice(b"CAIRN   ");
    config.extend_from_slice(b"CAIRN VMM   ");
    config.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    config.extend_from_slice(&0u16.to_le_bytes());
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&APIC_ADDR.to_le_bytes());
    config.extend_from_slice(&[0; 4]); // no extended table
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut fp = Vec::with_capacity(16 + config.len());
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&config_at.to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4); // spec revision 1.4
    fp.push(0); // checksum, below
    fp.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&config);
    fp
}

/// Writes the table for `vcpus` CPUs into guest memory.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), VmError> {
    let bytes = build(vcpus, MPTABLE_START as u32);
    if bytes.len() > 1024 {
        return Err(VmError::Setup {
            what: "MP table",
            reason: format!(
                "{} bytes do not fit in the last KiB of base memory",
                bytes.len()
            ),
        });
    }
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|e| VmError::GuestMemory {
            what: "writing the MP table",
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_are_right() {
        let t = build(8, MPTABLE_START as u32);
        assert!(t.len() <= 1024);
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let config = &t[16..];
        assert_eq!(&config[0..4], b"PCMP");
        let len = u16::from_le_bytes([config[4], config[5]]) as usize;
        assert_eq!(len, config.len());
        assert_eq!(config.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let count = u16::from_le_bytes([config[34], config[35]]);
        assert_eq!(count, 8 + 1 + 1 + 24 + 2);
        // Processor entries first, BSP flagged on the first only.
        assert_eq!(config[44 + 3], CPU_ENABLED | CPU_BSP);
        assert_eq!(config[44 + 20 + 3], CPU_ENABLED);
        assert_eq!(
            u32::from_le_bytes([t[4], t[5], t[6], t[7]]),
            MPTABLE_START as u32 + 16
        );
    }
}
