//! The CPUID a vCPU sees: what KVM supports, made consistent for a VM of `count` vCPUs —
//! APIC ids and topology per vCPU, the hypervisor bit, no power management or PMU leaves, and
//! XSAVE leaves cut down to the state components XCR0 may enable (a host's extra components
//! left in leaf 0xd made guests warn about inconsistent XSAVE sizes).

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_INTEL: u32 = 0x4;
const LEAF_POWER: u32 = 0x6;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_XSAVE: u32 = 0xd;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// XCR0 components a guest may enable: x87, SSE, AVX, the AVX-512 trio. MPX, PKRU, AMX and
/// supervisor states are left out — their sizes and semantics vary most between hosts.
const XCR0_ALLOWED: u64 = 0b1110_0111;

/// Bits needed to number `n` things.
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// The CPUID of vCPU `index` of `count`, derived from KVM's supported list.
pub fn for_vcpu(supported: &CpuId, index: u32, count: u32) -> CpuId {
    let mut out = Vec::with_capacity(supported.as_slice().len());
    let xcr0 = supported
        .as_slice()
        .iter()
        .find(|e| e.function == LEAF_XSAVE && e.index == 0)
        .map(|e| (u64::from(e.edx) << 32 | u64::from(e.eax)) & XCR0_ALLOWED)
        .unwrap_or(0);
    for e in supported.as_slice() {
        let mut e = *e;
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (index << 24) | (count.min(255) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_INTEL => {
                // Cores per package - 1 in EAX[31:26]; one thread per core shares each cache.
                e.eax = (e.eax & 0x03ff_ffff) | ((count.saturating_sub(1) & 0x3f) << 26);
                e.eax &= !(0xfff << 14);
            }
            LEAF_POWER | LEAF_PMU => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                // One thread per core, `count` cores in one package.
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = bits_for(count);
                        e.ebx = count;
                        e.ecx = (2 << 8) | 1;
                    }
                    i => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = i;
                    }
                }
                e.edx = index;
            }
            LEAF_XSAVE => match e.index {
                0 => {
                    e.eax = xcr0 as u32;
                    e.edx = (xcr0 >> 32) as u32;
                    // The largest save area the allowed components need.
                    e.ecx = xsave_size(supported, xcr0);
                }
                1 => {
                    // No supervisor states (XSAVES/XSS) are offered.
                    e.eax &= !(1 << 3);
                    e.ecx = 0;
                    e.edx = 0;
                }
                i if i < 64 && xcr0 & (1 << i) == 0 => continue,
                _ => {}
            },
            LEAF_AMD_SIZES => {
                // ECX[7:0] = cores - 1, ECX[15:12] = APIC id bits.
                e.ecx =
                    (e.ecx & !0xf0ff) | (count.saturating_sub(1) & 0xff) | (bits_for(count) << 12);
            }
            _ => {}
        }
        out.push(e);
    }
    CpuId::from_entries(&out).unwrap_or_else(|_| supported.clone())
}

/// Size of an XSAVE area holding the components in `xcr0` (legacy area + header + each
/// component's offset + size from leaf 0xd).
fn xsave_size(supported: &CpuId, xcr0: u64) -> u32 {
    let mut size = 512 + 64;
    for e in supported.as_slice() {
        if e.function == LEAF_XSAVE && e.index >= 2 && e.index < 64 && xcr0 & (1 << e.index) != 0 {
            size = size.max(e.ebx + e.eax);
        }
    }
    size
}

/// One CPUID entry, for tests and for the snapshot's check that a restore host matches.
pub fn find(cpuid: &CpuId, function: u32, index: u32) -> Option<kvm_cpuid_entry2> {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    fn host() -> CpuId {
        CpuId::from_entries(&[
            entry(1, 0, 0x806f8, 0x0010_0800, 0, 0),
            entry(0xb, 0, 1, 2, 0x100, 7),
            entry(0xb, 1, 5, 64, 0x201, 7),
            // x87|SSE|AVX|AVX-512 (0xe7) plus PKRU (bit 9) and AMX (17, 18).
            entry(0xd, 0, 0x6_02e7, 0x340, 0x2b00, 0),
            entry(0xd, 1, 0xf, 0, 0x1800, 0),
            entry(0xd, 2, 0x100, 0x240, 0, 0),
            entry(0xd, 7, 0x400, 0x680, 0, 0),
            entry(0xd, 9, 8, 0xa80, 0, 0),
            entry(0xd, 17, 0x40, 0xac0, 0, 0),
            entry(0xd, 18, 0x2000, 0xb00, 0, 0),
            entry(0xa, 0, 0x0804_0302, 0, 0, 0),
        ])
        .unwrap()
    }

    #[test]
    fn apic_ids_and_topology_follow_the_vcpu() {
        let c = for_vcpu(&host(), 3, 4);
        let l1 = find(&c, 1, 0).unwrap();
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        let core = find(&c, 0xb, 1).unwrap();
        assert_eq!((core.eax, core.ebx, core.edx), (2, 4, 3));
        assert_eq!(find(&c, 0xa, 0).unwrap().eax, 0);
    }

    #[test]
    fn xsave_leaves_keep_only_allowed_components() {
        let c = for_vcpu(&host(), 0, 1);
        let l0 = find(&c, 0xd, 0).unwrap();
        assert_eq!(l0.eax, 0xe7);
        assert_eq!(l0.edx, 0);
        assert_eq!(l0.ecx, 0x680 + 0x400);
        assert!(find(&c, 0xd, 9).is_none());
        assert!(find(&c, 0xd, 17).is_none());
        assert!(find(&c, 0xd, 2).is_some());
        assert_eq!(find(&c, 0xd, 1).unwrap().eax & (1 << 3), 0);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(5), 3);
    }
}
