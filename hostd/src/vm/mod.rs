//! hostd's side of VMs: the VM manager (`manager`). The VMM itself — building and running a
//! VM, its jail, its seccomp filter, the VMM process and its control protocol — is the `vmm`
//! crate; hostd starts it by re-executing its own binary as `hostd --vmm LAUNCH.json`.

pub mod manager;
