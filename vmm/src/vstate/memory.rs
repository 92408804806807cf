//! Guest memory: anonymous mmap regions (vm-memory's `GuestMemoryMmap`) registered with KVM as
//! memory slots. Above 3.25 GiB the memory is split around the 32-bit MMIO gap, as Firecracker
//! does, so devices can later live just below 4 GiB.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::VmError;

/// The guest memory type of the VMM.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// Start of the 32-bit MMIO gap (768 MiB below 4 GiB); no RAM between here and 4 GiB.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// First address above 32 bits.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// The smallest guest: the kernel is loaded at 1 MiB, so it needs room above that.
pub const MIN_MEM_MIB: u32 = 2;

/// The host's physical memory in bytes, if the kernel says.
pub fn host_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (pages > 0 && page > 0).then(|| pages as u64 * page as u64)
}

/// Checks a requested size against the limits (not 0, not below the minimum, not above the
/// host's memory) and returns the guest's RAM ranges.
pub fn layout(mem_mib: u32) -> Result<Vec<(GuestAddress, usize)>, VmError> {
    if mem_mib == 0 {
        return Err(VmError::MemoryZero);
    }
    if mem_mib < MIN_MEM_MIB {
        return Err(VmError::MemoryTooSmall {
            mib: mem_mib,
            min: MIN_MEM_MIB,
        });
    }
    let size = u64::from(mem_mib) * MIB;
    if let Some(host) = host_memory_bytes()
        && size > host
    {
        return Err(VmError::MemoryTooLarge {
            mib: mem_mib,
            host_mib: host / MIB,
        });
    }
    let to_usize = |n: u64| {
        usize::try_from(n).map_err(|_| VmError::MemoryTooLarge {
            mib: mem_mib,
            host_mib: host_memory_bytes().unwrap_or(0) / MIB,
        })
    };
    if size <= MMIO_GAP_START {
        Ok(vec![(GuestAddress(0), to_usize(size)?)])
    } else {
        Ok(vec![
            (GuestAddress(0), to_usize(MMIO_GAP_START)?),
            (
                GuestAddress(FIRST_ADDR_PAST_32BITS),
                to_usize(size - MMIO_GAP_START)?,
            ),
        ])
    }
}

/// Maps the guest's memory in this process.
pub fn create(ranges: &[(GuestAddress, usize)]) -> Result<GuestMemoryMmap, VmError> {
    GuestMemoryMmap::from_ranges(ranges).map_err(|e| VmError::GuestMemory {
        what: "mapping guest memory",
        reason: e.to_string(),
    })
}

/// Registers every region of `mem` with the VM as a KVM memory slot.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = u32::try_from(slot).map_err(|_| VmError::GuestMemory {
            what: "registering guest memory",
            reason: "too many regions".into(),
        })?;
        let r = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the caller keeps alive
        // for as long as the VM runs (Vm::boot drops the VM fds before the memory).
        unsafe { vm.set_user_memory_region(r) }.map_err(|e| VmError::Kvm {
            op: "KVM_SET_USER_MEMORY_REGION",
            source: e,
        })?;
    }
    Ok(())
}

/// End of the RAM below the MMIO gap (exclusive).
pub fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter()
        .filter(|r| r.start_addr().raw_value() < MMIO_GAP_START)
        .map(|r| r.start_addr().raw_value() + r.len())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_limits() {
        assert!(matches!(layout(0), Err(VmError::MemoryZero)));
        assert!(matches!(layout(1), Err(VmError::MemoryTooSmall { .. })));
        assert!(matches!(
            layout(u32::MAX),
            Err(VmError::MemoryTooLarge { .. })
        ));
        let l = layout(32).expect("32 MiB");
        assert_eq!(l, vec![(GuestAddress(0), 32 << 20)]);
    }

    #[test]
    fn layout_splits_around_the_mmio_gap() {
        let Some(host) = host_memory_bytes() else {
            return;
        };
        if host < 4 << 30 {
            return;
        }
        let l = layout(4096).expect("4 GiB");
        assert_eq!(l.len(), 2);
        assert_eq!(l[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(l[1].0, GuestAddress(FIRST_ADDR_PAST_32BITS));
        assert_eq!(l[1].1 as u64, (4u64 << 30) - MMIO_GAP_START);
    }
}
