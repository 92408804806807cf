//! `cairnctl vm …`: virtual machines (hostd), over the same XML-RPC API as `ct`.

use clap::{ArgMatches, Subcommand};

use model::api::vm::{
    VmConsole, VmCreate, VmDelete, VmInfoOf, VmList, VmPause, VmRestore, VmResume, VmSet,
    VmSnapshot, VmStart, VmStop,
};
use model::ct::Resources;
use model::vm::{DiskSpec, NicSpec, VmChanges, VmSpec};
use model::xmlrpc::{EncodeError, Value};

use crate::call::{Call, call};

use crate::output::{member, record_with, table, text};
use crate::size;

#[derive(Subcommand)]
pub enum VmCommand {
    /// Every VM.
    List,
    /// One VM: state, process, taps and its spec.
    Info {
        /// The VM's name.
        name: String,
    },
    /// Creates (does not start) a VM.
    Create {
        /// The new VM's name, unique among the host's VMs.
        name: String,
        /// vCPUs, 1..=8.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Guest RAM, a whole number of MiB: 512M, 2G, 1.5G (1024-based; the size grammar of
        /// host.toml, so 512MB = 512 000 000 bytes is refused as not whole MiB).
        #[arg(long, value_parser = parse_memory_mib)]
        memory: u64,
        /// Host path of the kernel: an ELF vmlinux or a bzImage.
        #[arg(long)]
        kernel: String,
        /// Host path of an initramfs.
        #[arg(long)]
        initrd: Option<String>,
        /// The kernel command line (the VMM adds console=ttyS0 and its virtio-mmio entries).
        #[arg(long, allow_hyphen_values = true)]
        cmdline: Option<String>,
        /// A raw image file on the host as a virtio disk, PATH or PATH:ro; repeat for more.
        /// Disks are attached in command-line order, --disk and --volume mixed.
        #[arg(long = "disk", value_name = "PATH[:ro]", value_parser = parse_disk)]
        disks: Vec<(String, bool)>,
        /// A stord volume as a virtio disk, POOL/NAME or POOL/NAME:ro; repeat for more.
        #[arg(long = "volume", value_name = "POOL/NAME[:ro]", value_parser = parse_disk)]
        volumes: Vec<(String, bool)>,
        /// A NIC on a network: NETWORK, NETWORK=MAC, and the guest's addresses after commas
        /// (`lan=52:54:00:12:34:56,10.0.0.5/24`: port security lets it send from these only);
        /// repeat for more.
        #[arg(long = "nic", value_name = "NETWORK[=MAC][,ADDR/PREFIX…]")]
        nics: Vec<String>,
        /// CPU limit of the vCPU threads in % of one host CPU (200 = two CPUs).
        #[arg(long)]
        cpu_limit: Option<u32>,
        /// CPU share under contention, 1..=10000 (default 100).
        #[arg(long)]
        cpu_weight: Option<u32>,
    },
    /// Boots a created or stopped VM.
    Start {
        /// The VM's name.
        name: String,
    },
    /// Asks the guest to power off, waits, then kills the VMM.
    Stop {
        /// The VM's name.
        name: String,
        /// Seconds to wait for the guest before the kill, 0..=20 (default 20).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Stops the vCPUs; memory and devices are kept.
    Pause {
        /// The VM's name.
        name: String,
    },
    /// Runs the vCPUs of a paused VM again.
    Resume {
        /// The VM's name.
        name: String,
    },
    /// Changes a stopped VM's vCPUs or memory (the next start boots with them).
    Set {
        /// The VM's name.
        name: String,
        /// vCPUs, 1..=8.
        #[arg(long)]
        vcpus: Option<u32>,
        /// Guest RAM, a whole number of MiB: 512M, 2G (as for `vm create`).
        #[arg(long, value_parser = parse_memory_mib)]
        memory: Option<u64>,
    },
    /// Deletes a VM that is not running (its disk images and volumes stay).
    Delete {
        /// The VM's name.
        name: String,
    },
    /// Writes the VM's memory and device state into DIR, a new directory on the host.
    Snapshot {
        /// The VM's name.
        name: String,
        /// The snapshot's directory on the host; it must not exist yet.
        dir: String,
    },
    /// Runs a stopped VM from the snapshot in DIR (on the host).
    Restore {
        /// The VM's name.
        name: String,
        /// A directory `vm snapshot` wrote, on the host.
        dir: String,
    },
    /// Attaches to the VM's serial console; Ctrl-] detaches. With --log (or --bytes), prints
    /// the serial console log instead (the last 64 KiB unless --bytes says otherwise).
    Console {
        /// The VM's name.
        name: String,
        /// Print the console log and return instead of attaching.
        #[arg(long)]
        log: bool,
        /// How much of the end of the log, 1..=1048576 bytes (implies --log).
        #[arg(long)]
        bytes: Option<u32>,
    },
}

/// `--memory`: a size that is a whole, non-zero number of MiB, as MiB.
fn parse_memory_mib(s: &str) -> Result<u64, String> {
    let bytes = size::parse(s)?;
    if bytes == 0 || bytes % (1 << 20) != 0 {
        return Err(format!(
            "{s:?} is not a whole number of MiB; use e.g. 512M or 2G"
        ));
    }
    Ok(bytes >> 20)
}

/// `PATH` or `PATH:ro` (also for volume names).
fn parse_disk(s: &str) -> Result<(String, bool), String> {
    let (what, ro) = match s.strip_suffix(":ro") {
        Some(what) => (what, true),
        None => (s.strip_suffix(":rw").unwrap_or(s), false),
    };
    if what.is_empty() {
        return Err(format!(
            "{s:?}: give a path or volume name, then :ro if read-only"
        ));
    }
    Ok((what.to_string(), ro))
}

/// The disks of `vm create` in command-line order: `create` (the subcommand's matches) knows
/// where each --disk and --volume was given; without it, files come before volumes.
fn disks_in_order(
    disks: &[(String, bool)],
    volumes: &[(String, bool)],
    create: Option<&ArgMatches>,
) -> Vec<DiskSpec> {
    let positions = |id: &str, n: usize| -> Vec<usize> {
        create
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .filter(|i: &Vec<usize>| i.len() == n)
            .unwrap_or_else(|| (0..n).collect())
    };
    let offset = if create.is_some() { 0 } else { disks.len() };
    let mut all: Vec<(usize, DiskSpec)> = Vec::new();
    for ((path, ro), at) in disks.iter().zip(positions("disks", disks.len())) {
        all.push((
            at,
            DiskSpec {
                volume: None,
                path: Some(path.clone()),
                read_only: *ro,
            },
        ));
    }
    for ((volume, ro), at) in volumes.iter().zip(positions("volumes", volumes.len())) {
        all.push((
            at + offset,
            DiskSpec {
                volume: Some(volume.clone()),
                path: None,
                read_only: *ro,
            },
        ));
    }
    all.sort_by_key(|(at, _)| *at);
    all.into_iter().map(|(_, d)| d).collect()
}

/// The call of a `vm` subcommand. `create` is the matches of `vm create`, for the order of
/// its disks.
pub fn vm_call(command: &VmCommand, create: Option<&ArgMatches>) -> Result<Call, EncodeError> {
    let name = |n: &String| n.clone();
    match command {
        VmCommand::List => call(VmList {}),
        VmCommand::Info { name: n } => call(VmInfoOf { name: name(n) }),
        VmCommand::Create {
            name: n,
            vcpus,
            memory,
            kernel,
            initrd,
            cmdline,
            disks,
            volumes,
            nics,
            cpu_limit,
            cpu_weight,
        } => call(VmCreate {
            spec: VmSpec {
                name: name(n),
                vcpus: *vcpus,
                memory_mib: *memory,
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                cmdline: cmdline.clone().unwrap_or_default(),
                disks: disks_in_order(disks, volumes, create),
                nics: nics.iter().map(|n| nic(n)).collect(),
                resources: Resources {
                    cpu_limit: *cpu_limit,
                    cpu_weight: *cpu_weight,
                    ..Resources::default()
                },
                autostart: false,
            },
        }),
        VmCommand::Start { name: n } => call(VmStart { name: name(n) }),
        VmCommand::Stop { name: n, timeout } => call(VmStop {
            name: name(n),
            timeout_s: *timeout,
        }),
        VmCommand::Pause { name: n } => call(VmPause { name: name(n) }),
        VmCommand::Resume { name: n } => call(VmResume { name: name(n) }),
        VmCommand::Set {
            name: n,
            vcpus,
            memory,
        } => call(VmSet {
            name: name(n),
            changes: VmChanges {
                vcpus: *vcpus,
                memory_mib: *memory,
            },
        }),
        VmCommand::Delete { name: n } => call(VmDelete { name: name(n) }),
        VmCommand::Snapshot { name: n, dir } => call(VmSnapshot {
            name: name(n),
            dir: dir.clone(),
        }),
        VmCommand::Restore { name: n, dir } => call(VmRestore {
            name: name(n),
            dir: dir.clone(),
        }),
        // The log; attaching is a stream (crate::console), not a call.
        VmCommand::Console { name: n, bytes, .. } => call(VmConsole {
            name: name(n),
            max_bytes: *bytes,
        }),
    }
}

/// `vm.list`: one row per VM.
pub fn vms_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let v = v.as_struct();
            let spec = member(v, "spec").and_then(Value::as_struct);
            let memory = member(spec, "memory_mib")
                .and_then(Value::as_i64)
                .and_then(|m| u64::try_from(m).ok())
                .map_or_else(|| "-".into(), |m| size::human(m << 20));
            vec![
                text(member(v, "name")),
                text(member(v, "state")),
                text(member(spec, "vcpus")),
                memory,
                text(member(v, "pid")),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "VCPUS", "MEMORY", "PID"], &rows)
}

/// `vm.info`: one `key value` line per member, the spec flattened (`spec.disks[0].path`),
/// the memory in short form.
pub fn vm_info(v: &Value) -> String {
    record_with(v, &|key, v| match key {
        "spec.memory_mib" => v
            .as_i64()
            .and_then(|m| u64::try_from(m).ok())
            .map_or_else(|| text(Some(v)), |m| size::human(m << 20)),
        _ => text(Some(v)),
    })
}

/// `NETWORK[=MAC][,ADDR/PREFIX…]`, as `--nic` takes it.
fn nic(arg: &str) -> NicSpec {
    let mut parts = arg.split(',');
    let first = parts.next().unwrap_or_default();
    let (network, mac) = match first.split_once('=') {
        Some((network, mac)) => (network, Some(mac.to_string())),
        None => (first, None),
    };
    NicSpec {
        network: network.to_string(),
        mac,
        addresses: parts.map(str::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        vm: VmCommand,
    }

    fn parse(args: &[&str]) -> (&'static str, Vec<Value>) {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("vm").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        vm_call(&cli.vm, matches.subcommand_matches("create"))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn fails(args: &[&str]) -> String {
        match Cli::try_parse_from(std::iter::once("vm").chain(args.iter().copied())) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn create_builds_the_spec() {
        let (m, p) = parse(&[
            "create",
            "deb",
            "--vcpus",
            "2",
            "--memory",
            "1G",
            "--kernel",
            "/k/vmlinux",
            "--initrd",
            "/k/initrd.img",
            "--cmdline",
            "console=ttyS0 reboot=k panic=1",
            "--volume",
            "fast/root",
            "--disk",
            "/d/deb.raw",
            "--volume",
            "fast/iso:ro",
            "--disk",
            "/d/seed.raw:ro",
            "--nic",
            "lan",
            "--nic",
            "dmz=52:54:00:12:34:56,10.9.0.5/24,fd00::5/64",
            "--cpu-limit",
            "150",
            "--cpu-weight",
            "300",
        ]);
        assert_eq!(m, "vm.create");
        assert_eq!(
            p[0].to_json(),
            serde_json::json!({
                "name": "deb", "vcpus": 2, "memory_mib": 1024,
                "kernel": "/k/vmlinux", "initrd": "/k/initrd.img",
                "cmdline": "console=ttyS0 reboot=k panic=1",
                "disks": [
                    {"volume": "fast/root"},
                    {"path": "/d/deb.raw"},
                    {"volume": "fast/iso", "read_only": true},
                    {"path": "/d/seed.raw", "read_only": true},
                ],
                "nics": [{"network": "lan"}, {"network": "dmz", "mac": "52:54:00:12:34:56",
                          "addresses": ["10.9.0.5/24", "fd00::5/64"]}],
                "resources": {"cpu_limit": 150, "cpu_weight": 300},
            })
        );
        // What cairnctl sends is a spec apid accepts.
        let spec: model::vm::VmSpec =
            serde_json::from_value(p[0].to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.validate(), Ok(()));

        let (_, p) = parse(&["create", "a", "--memory", "512M", "--kernel", "/k"]);
        assert_eq!(
            p[0].to_json(),
            serde_json::json!({"name": "a", "vcpus": 1, "memory_mib": 512, "kernel": "/k"})
        );
        // The size grammar of host.toml (model::units::parse_size), then whole MiB.
        for (given, mib) in [
            ("1.5G", 1536),
            ("512m", 512),
            ("2GiB", 2048),
            ("1048576000B", 1000),
        ] {
            let (_, p) = parse(&["create", "a", "--memory", given, "--kernel", "/k"]);
            assert_eq!(p[0].to_json()["memory_mib"], mib, "{given}");
        }
    }

    #[test]
    fn bad_command_lines() {
        assert!(fails(&["create", "a", "--kernel", "/k"]).contains("--memory"));
        let e = fails(&["create", "a", "--memory", "1000K", "--kernel", "/k"]);
        assert!(e.contains("whole number of MiB"), "{e}");
        let e = fails(&["create", "a", "--memory", "lots", "--kernel", "/k"]);
        assert!(e.contains("does not start with a number"), "{e}");
        // Decimal units are the same bytes as in host.toml: 512MB is not whole MiB.
        let e = fails(&["create", "a", "--memory", "512MB", "--kernel", "/k"]);
        assert!(e.contains("whole number of MiB"), "{e}");
        let e = fails(&[
            "create", "a", "--memory", "1G", "--kernel", "/k", "--disk", ":ro",
        ]);
        assert!(e.contains("give a path"), "{e}");
        fails(&["snapshot", "deb"]);
        fails(&["stop", "deb", "--timeout", "-1"]);
    }

    #[test]
    fn other_calls() {
        assert_eq!(parse(&["stop", "deb"]), ("vm.stop", vec![s("deb")]));
        assert_eq!(
            parse(&["stop", "deb", "--timeout", "5"]),
            ("vm.stop", vec![s("deb"), Value::Int(5)])
        );
        assert_eq!(
            parse(&["snapshot", "deb", "/var/snap"]),
            ("vm.snapshot", vec![s("deb"), s("/var/snap")])
        );
        assert_eq!(
            parse(&["restore", "deb", "/var/snap"]),
            ("vm.restore", vec![s("deb"), s("/var/snap")])
        );
        assert_eq!(parse(&["console", "deb"]), ("vm.console", vec![s("deb")]));
        assert_eq!(
            parse(&["console", "deb", "--bytes", "100"]),
            ("vm.console", vec![s("deb"), Value::Int(100)])
        );
        for (verb, method) in [
            ("start", "vm.start"),
            ("pause", "vm.pause"),
            ("resume", "vm.resume"),
            ("delete", "vm.delete"),
            ("info", "vm.info"),
        ] {
            assert_eq!(parse(&[verb, "deb"]), (method, vec![s("deb")]));
        }
        assert_eq!(parse(&["list"]), ("vm.list", vec![]));
        let (m, p) = parse(&["set", "deb", "--vcpus", "4", "--memory", "2G"]);
        assert_eq!(m, "vm.set");
        assert_eq!(p[0], s("deb"));
        assert_eq!(
            p[1].to_json(),
            serde_json::json!({"vcpus": 4, "memory_mib": 2048})
        );
        let (_, p) = parse(&["set", "deb", "--memory", "512M"]);
        assert_eq!(p[1].to_json(), serde_json::json!({"memory_mib": 512}));
        assert!(fails(&["set", "deb", "--memory", "512MB"]).contains("whole number of MiB"));
    }

    #[test]
    fn without_matches_files_come_before_volumes() {
        let disks = disks_in_order(
            &[("/a".into(), false)],
            &[("v".into(), true), ("w".into(), false)],
            None,
        );
        let json: Vec<serde_json::Value> = disks
            .iter()
            .map(|d| serde_json::to_value(d).unwrap())
            .collect();
        assert_eq!(
            json,
            [
                serde_json::json!({"path": "/a"}),
                serde_json::json!({"volume": "v", "read_only": true}),
                serde_json::json!({"volume": "w"}),
            ]
        );
    }

    #[test]
    fn table_and_info() {
        let vm = Value::structure([
            ("name", s("deb")),
            ("state", s("running")),
            ("pid", Value::Int(42)),
            ("taps", Value::Array(vec![s("vmdeb0"), s("vmdeb1")])),
            (
                "spec",
                Value::structure([
                    ("name", s("deb")),
                    ("vcpus", Value::Int(2)),
                    ("memory_mib", Value::Int(1024)),
                    ("kernel", s("/k")),
                    (
                        "disks",
                        Value::Array(vec![Value::structure([("path", s("/d/deb.raw"))])]),
                    ),
                    (
                        "resources",
                        Value::structure([("cpu_limit", Value::Int(150))]),
                    ),
                ]),
            ),
        ]);
        let stopped = Value::structure([
            ("name", s("tiny")),
            ("state", s("stopped")),
            (
                "spec",
                Value::structure([("vcpus", Value::Int(1)), ("memory_mib", Value::Int(64))]),
            ),
        ]);
        assert_eq!(
            vms_table(&Value::Array(vec![vm.clone(), stopped])),
            "NAME  STATE    VCPUS  MEMORY  PID\n\
             deb   running  2      1.0G    42\n\
             tiny  stopped  1      64.0M   -\n"
        );
        let info = vm_info(&vm);
        for (key, value) in [
            ("name", "deb"),
            ("pid", "42"),
            ("taps", "vmdeb0,vmdeb1"),
            ("spec.memory_mib", "1.0G"),
            ("spec.disks[0].path", "/d/deb.raw"),
            ("spec.resources.cpu_limit", "150"),
        ] {
            // Keys padded to the longest (spec.resources.cpu_limit) plus two spaces.
            let line = format!("{key:<26}{value}\n");
            assert!(info.contains(&line), "{line:?} in\n{info}");
        }
    }
}
