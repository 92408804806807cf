//! Virtual machines as the API carries them (JSON over D-Bus, structs over XML-RPC): what a
//! client asks for (`VmSpec`, validated here before hostd acts) and what hostd reports
//! (`VmInfo`).

mod info;
mod spec;

pub use info::{VmInfo, VmState};
pub use spec::{
    CMDLINE_MAX, DiskSpec, InvalidVm, MAX_MEMORY_MIB, MAX_VCPUS, NicSpec, VM_NAME_MAX, VmChanges,
    VmSpec, is_mac, is_vm_name,
};
