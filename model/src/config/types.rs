//! Typed, validated configuration. Values here are already checked: names are unique, references
//! resolve, sizes are bytes, CIDRs are well-formed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::ct::Resources;
use crate::vm::{DiskSpec, NicSpec, VmSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    pub host: Host,
    pub api: Api,
    pub networks: Vec<Network>,
    pub pools: Vec<Pool>,
    pub templates: Vec<Template>,
    pub containers: Vec<Container>,
    pub vms: Vec<Vm>,
    pub update: Update,
}

/// `[update]`: how the host takes OS updates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// A minisign public key (the base64 line of `minisign.pub`): when set, only bundles
    /// whose manifest it signed are taken.
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub hostname: String,
    /// An IANA zone name such as "Europe/Berlin"; "UTC" when absent.
    pub timezone: String,
    pub dns: Vec<IpAddr>,
    pub management: Management,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Management {
    /// The NIC that carries the API, e.g. "eth0".
    pub interface: String,
    pub address: MgmtAddress,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MgmtAddress {
    Dhcp,
    Static {
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
    },
}

/// An IPv4 address with its prefix length, e.g. `192.0.2.10/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// An address with its prefix length, v4 or v6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Api {
    pub listen: IpAddr,
    pub port: u16,
    pub tls: Tls,
    pub tokens: Vec<ApiToken>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tls {
    /// A self-signed certificate made at first start and kept in the state directory.
    Generate,
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    pub name: String,
    /// The raw sha256 of the token; host.toml holds it as `sha256:<hex>`.
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkKind {
    Bridged,
    Routed,
    Vlan,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: String,
    pub kind: NetworkKind,
    /// A NIC, or the name of another network (for a network on a `vlan` network).
    pub uplink: Option<String>,
    /// 1–4094; required for `vlan` networks.
    pub vlan: Option<u16>,
    /// Bridged only: 2–8 NICs bonded into the uplink (instead of `uplink`).
    pub bond: Vec<String>,
    /// The bond's mode; active-backup when absent.
    pub bond_mode: Option<crate::net::BondMode>,
    /// The network's subnet; the host's own address on it, when any, lies inside.
    pub subnet: Option<Cidr>,
    pub address: Option<Cidr>,
}

pub use crate::storage::PoolKind;

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub kind: PoolKind,
    pub path: Option<PathBuf>,
    /// Bytes; parsed from "20G", "512M", …
    pub size: Option<u64>,
    /// `server:/export` for nfs, `iscsi://portal/iqn/lun` for iscsi.
    pub source: Option<String>,
    /// nfs: mount options ("vers=3").
    pub options: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub source: Option<String>,
    pub sha256: Option<[u8; 32]>,
    /// The dir or nfs pool that keeps the template; hostd's state when absent.
    pub pool: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub template: String,
    pub network: Option<String>,
    pub pool: Option<String>,
    pub memory: Option<u64>,
    pub disk: Option<u64>,
    /// CPU limit in % of one host CPU (200 = two CPUs).
    pub cpu_limit: Option<u32>,
    /// Relative CPU share (`cpu.weight`, 1–10000).
    pub cpu_weight: Option<u32>,
    /// eth0's addresses; each inside the network's subnet when it has one.
    pub addresses: Vec<Cidr>,
    /// The default route's next hop, inside one of `addresses`.
    pub gateway: Option<IpAddr>,
    /// The container's hostname; its name when absent.
    pub hostname: Option<String>,
    /// Whether hostd starts it when hostd starts (default true).
    pub autostart: bool,
}

/// A `[[vm]]` entry. [`Vm::spec`] (or [`HostConfig::vm_specs`]) is the `VmSpec` it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Vm {
    pub name: String,
    /// 1–8.
    pub vcpus: u32,
    /// Guest RAM in bytes, a whole number of MiB.
    pub memory: u64,
    /// Absolute host path of an ELF vmlinux or a bzImage.
    pub kernel: String,
    pub initrd: Option<String>,
    /// The kernel command line as written ("" when absent).
    pub cmdline: String,
    /// `[[vm.disk]]`, in order; each has exactly one of volume and path.
    pub disks: Vec<DiskSpec>,
    /// `[[vm.nic]]`, in order; each network names a `[[network]]`.
    pub nics: Vec<NicSpec>,
    /// CPU limit of the vCPU threads in % of one host CPU (200 = two CPUs).
    pub cpu_limit: Option<u32>,
    /// Relative CPU share (`cpu.weight`, 1–10000).
    pub cpu_weight: Option<u32>,
    /// Whether hostd starts it when hostd starts (default true).
    pub autostart: bool,
}

impl Vm {
    /// The spec this entry asks hostd for, as `create_vm` takes it.
    pub fn spec(&self) -> VmSpec {
        VmSpec {
            name: self.name.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory >> 20,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            disks: self.disks.clone(),
            nics: self.nics.clone(),
            resources: Resources {
                cpu_limit: self.cpu_limit,
                cpu_weight: self.cpu_weight,
                ..Resources::default()
            },
            autostart: self.autostart,
        }
    }
}

impl HostConfig {
    /// Every `[[vm]]` as the spec hostd creates it from, in file order.
    pub fn vm_specs(&self) -> Vec<VmSpec> {
        self.vms.iter().map(Vm::spec).collect()
    }
}
