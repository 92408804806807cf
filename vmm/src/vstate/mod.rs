//! The state KVM holds for a VM, as Firecracker's `vstate`: vCPUs (boot configuration, state
//! for snapshots, the thread that runs each one), guest memory and its KVM slots, CPUID.

pub mod cpuid;
pub mod memory;
pub mod vcpu;
