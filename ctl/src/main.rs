//! `cairnctl`: the command-line client of Cairn's XML-RPC API.

mod call;
mod client;
mod config;
mod console;
mod ct;
mod export;
mod files;
mod generate;
mod install;
mod logs;
mod monitor;
mod output;
mod progress;
mod prompt;
mod rate;
mod remote;
mod size;
mod storage;
mod stream;
mod task;
mod tls;
mod upload;
mod vm;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use model::api::host;
use model::api::net::{NetCreate, NetDelete, NetInfo, NetList, NetSetLimits, PortDetach, PortList};
use model::net::{LimitsChange, NetworkKind, NetworkSpec, Rate};
use model::xmlrpc::{EncodeError, Value};

use crate::call::{Call, call};

use crate::ct::{CtCommand, TemplateCommand};
use crate::vm::VmCommand;

#[derive(Parser)]
#[command(
    name = "cairnctl",
    version,
    about = "Control a Cairn host through its XML-RPC API",
    long_about = "Control a Cairn host through its XML-RPC API.\n\n\
        Which host: --url (or CAIRN_URL) with --token (or CAIRN_TOKEN), or a remote saved \
        with `cairnctl remote add` (--remote NAME, else the default remote). Tables by \
        default, --json for scripts."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The options every command takes, shown apart from each command's own.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The API, e.g. https://192.0.2.10:8443 (path defaults to /RPC2); default: CAIRN_URL,
    /// else the remote's.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// An API token; default: CAIRN_TOKEN, else the remote's.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Talk to this remote of the config file (`cairnctl remote list`) instead of the default.
    #[arg(
        long,
        short = 'r',
        global = true,
        value_name = "NAME",
        conflicts_with = "url"
    )]
    pub remote: Option<String>,
    /// Trust this PEM certificate: the host's own (its STATE/tls/cert.pem) or its CA.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "insecure")]
    pub ca_cert: Option<PathBuf>,
    /// Trust the server whose certificate has this fingerprint (SHA256:<hex>, as the host's
    /// console prints it); default: CAIRN_FINGERPRINT.
    #[arg(long, global = true, value_name = "FP", conflicts_with = "insecure")]
    pub accept_fingerprint: Option<String>,
    /// Accept any server certificate (encrypted, but not authenticated).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Hostname, version, uptime, daemons and services.
    Info,
    /// The services init supervises; `services restart NAME` restarts one.
    Services {
        #[command(subcommand)]
        command: Option<ServicesCommand>,
    },
    /// Networks (netd): list, info, create, delete, limits.
    Net {
        #[command(subcommand)]
        command: NetCommand,
    },
    /// Ports on the host's networks.
    Port {
        #[command(subcommand)]
        command: PortCommand,
    },
    /// Storage pools (stord): list, info, create, delete.
    Pool {
        #[command(subcommand)]
        command: storage::PoolCommand,
    },
    /// Volumes of the pools (stord): list, info, create, delete, grow, snapshot, clone.
    Volume {
        #[command(subcommand)]
        command: storage::VolumeCommand,
    },
    /// Volumes exported as iSCSI LUNs (stord, the kernel's LIO target): list, info, create,
    /// delete.
    Export {
        #[command(subcommand)]
        command: export::ExportCommand,
    },
    /// OS containers (hostd): list, info, create, start, stop, exec, set limits, ...
    Ct {
        #[command(subcommand)]
        command: CtCommand,
    },
    /// OS templates containers are made from.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Virtual machines (hostd): list, info, create, start, stop, snapshot, console, ...
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// Uploads local files to the host (PUT /uploads/NAME: streamed, a progress bar, the sha256
    /// checked) and prints the upload:NAME each is then named by: in vm create's --kernel,
    /// --initrd and --disk, template import and volume import.
    Upload {
        /// The local files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Follows the host's events (guests, services, config) as they happen, like `incus monitor`.
    Monitor(monitor::MonitorArgs),
    /// The recent log lines of the services (all, or one), by level; -f follows them.
    Logs(logs::LogsArgs),
    /// Background tasks (long work beyond a request's 30 s): list, info, wait, cancel.
    Task {
        #[command(subcommand)]
        command: task::TaskCommand,
    },
    /// The host's disks: size, what each holds, whether Cairn can be installed on it.
    Disks,
    /// Installs Cairn onto a disk of a host booted from the ISO or PXE (GPT, BIOS and UEFI
    /// boot, OS slots A and B, the state partition) and follows it with a progress bar.
    Install {
        /// The disk, as `cairnctl disks` names it (vda, sda, nvme0n1).
        #[arg(long)]
        disk: String,
        /// The host.toml the installed host boots with (without one: maintenance mode).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overwrite a disk that holds a partition table or a filesystem.
        #[arg(long)]
        force: bool,
        /// Return once the install has started.
        #[arg(long)]
        no_wait: bool,
    },
    /// Updates an installed host's OS from a bundle (written to the other slot, tried at the
    /// next boot, rolled back by itself if it does not come up) and follows it.
    Update {
        /// The bundle: a local file (`cairn-<version>.update`, uploaded to the host first) or
        /// an http:// URL the host fetches.
        bundle: String,
        /// Reboot into the new version once it is written.
        #[arg(long)]
        reboot: bool,
        /// Return once the update has started.
        #[arg(long)]
        no_wait: bool,
    },
    /// Boots the other OS slot (the version before the last update) and reboots into it.
    Rollback,
    /// The hosts cairnctl knows (its config file): add (pinning the certificate), list,
    /// remove, switch the default.
    Remote {
        #[command(subcommand)]
        command: remote::RemoteCommand,
    },
    /// Powers the host off (its guests are stopped first); asks on a terminal unless --yes.
    Poweroff {
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Reboots the host (its guests are stopped first); asks on a terminal unless --yes.
    Reboot {
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Prints a completion script for a shell, e.g. `cairnctl completion bash >
    /// /etc/bash_completion.d/cairnctl`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Writes man pages into DIR: cairnctl.1 and cairnctl-COMMAND-SUBCOMMAND.1 for each command.
    Man {
        /// The directory, e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
    /// Work with host.toml files locally.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum NetCommand {
    /// Every network.
    List,
    /// One network as read back from the kernel.
    Info {
        /// The network's name.
        name: String,
    },
    /// Creates a network (the fields of a [[network]] table in host.toml).
    Create {
        /// The new network's name.
        name: String,
        /// bridged (a Linux bridge), routed (host routes per port) or vlan (an 802.1Q link).
        #[arg(long, value_parser = parse_kind)]
        kind: NetworkKind,
        /// A NIC, or a vlan network, the bridge is attached to (bridged); the NIC (vlan).
        #[arg(long)]
        uplink: Option<String>,
        /// The 802.1Q id of a vlan network, 1..=4094.
        #[arg(long)]
        vlan: Option<u16>,
        /// A VLAN-aware bridge (ports carry access/tagged VLANs).
        #[arg(long)]
        vlan_aware: bool,
        /// The network's subnet, ADDR/PREFIX: its guests' addresses lie in it.
        #[arg(long)]
        subnet: Option<String>,
        /// The host's own address on the network, ADDR/PREFIX.
        #[arg(long)]
        address: Option<String>,
    },
    /// Deletes a network without ports.
    Delete {
        /// The network's name.
        name: String,
    },
    /// Changes the live limits of a port (by its name or its owner's: ct:web1, vm:deb) or a
    /// network's aggregate: only the directions given change, 0 removes one; a guest's port
    /// keeps them through restarts. Rates in bit/s with an optional K, M, G or T suffix, any
    /// case, optionally followed by "bit" (decimal, as network rates are: 100M = 100mbit =
    /// 100 000 000 bit/s); fractions when whole: 1.5G.
    Limits {
        /// A network, a port's link name, or a guest's port: ct:NAME, vm:NAME.
        target: String,
        /// The rate out of the guest or network, e.g. 100M; 0 removes it.
        #[arg(long, value_parser = rate::parse)]
        egress: Option<u64>,
        /// The rate into the guest or network, e.g. 1G; 0 removes it.
        #[arg(long, value_parser = rate::parse)]
        ingress: Option<u64>,
    },
}

#[derive(Subcommand)]
enum ServicesCommand {
    /// Stops a service and starts it again; also revives a failed one.
    Restart {
        /// The service, as `cairnctl services` lists it (netd, stord, hostd, apid, ...).
        name: String,
    },
}

#[derive(Subcommand)]
enum PortCommand {
    /// Every port, with its limits and the frames its anti-spoofing dropped.
    List,
    /// Detaches a port, named by its link or by its owner (`ct:web1`, `vm:deb`).
    Detach {
        /// The port's link name, or its owner: ct:NAME, vm:NAME.
        target: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates a host.toml without contacting any host.
    Check {
        /// The host.toml to check.
        file: PathBuf,
    },
    /// Sends a host.toml to the host, which validates it whole, saves it and applies it
    /// without a reboot (a host in maintenance mode starts running with it); prints what
    /// changes. The host's tokens are then the new file's.
    Apply {
        /// The host.toml to send.
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let vm_create = matches
        .subcommand_matches("vm")
        .and_then(|m| m.subcommand_matches("create"));
    match run(cli, vm_create) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vm_create`: the matches of `vm create`, whose disks keep their command-line order.
fn run(cli: Cli, vm_create: Option<&ArgMatches>) -> anyhow::Result<ExitCode> {
    let (method, params) = match &cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => return Ok(config_check(file, cli.global.json)),
        Command::Remote { command } => {
            remote::run(command, &cli.global)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completion { shell } => {
            generate::completion(*shell);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { dir } => {
            let n = generate::man(dir)?;
            eprintln!("wrote {n} man pages into {}", dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Poweroff { .. } => call(host::Poweroff {}),
        Command::Reboot { .. } => call(host::Reboot {}),
        Command::Config {
            command: ConfigCommand::Apply { file, dry_run },
        } => call(host::ApplyConfig {
            text: std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?,
            dry_run: Some(*dry_run),
        }),
        Command::Info => call(host::Info {}),
        Command::Disks => call(host::Disks {}),
        Command::Install {
            disk,
            config,
            force,
            ..
        } => call(host::Install {
            disk: disk.clone(),
            config: match config {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                ),
                None => None,
            },
            force: Some(*force),
        }),
        Command::Update { bundle, reboot, .. } => call(host::Update {
            url: bundle.clone(),
            reboot: Some(*reboot),
        }),
        Command::Rollback => call(host::Rollback {}),
        Command::Services { command: None } => call(host::Services {}),
        Command::Services {
            command: Some(ServicesCommand::Restart { name }),
        } => call(host::RestartService { name: name.clone() }),
        Command::Net { command } => net_call(command),
        Command::Port {
            command: PortCommand::List,
        } => call(PortList {}),
        Command::Port {
            command: PortCommand::Detach { target },
        } => call(PortDetach {
            name: target.clone(),
        }),
        Command::Pool { command } => storage::pool_call(command),
        Command::Volume { command } => storage::volume_call(command),
        Command::Export { command } => export::export_call(command),
        Command::Ct { command } => ct::ct_call(command),
        Command::Template { command } => ct::template_call(command),
        Command::Vm { command } => vm::vm_call(command, vm_create),
        Command::Task { command } => task::task_call(command),
        // These follow with calls of their own (below).
        Command::Monitor(_) | Command::Logs(_) | Command::Upload { .. } => call(host::Info {}),
    }?;
    let client = remote::connect(&cli.global)?;
    if let Command::Poweroff { yes: false } | Command::Reboot { yes: false } = &cli.command {
        let what = match &cli.command {
            Command::Poweroff { .. } => "Power off",
            _ => "Reboot",
        };
        match prompt::confirm(&format!("{what} the host at {}?", client.target())) {
            Some(true) => {}
            Some(false) => return Err(anyhow!("not done")),
            None => return Err(anyhow!("{what}: pass --yes (there is no terminal to ask)")),
        }
    }
    let runtime = remote::runtime()?;
    let params = match &cli.command {
        // A local bundle goes up first; the update then names the upload.
        Command::Update { bundle, reboot, .. } if !bundle.starts_with("http://") => {
            let name = runtime.block_on(upload::push(&client, std::path::Path::new(bundle)))?;
            call(host::Update {
                url: format!("upload:{name}"),
                reboot: Some(*reboot),
            })?
            .1
        }
        // A local tarball goes up first (its sha256 computed on the way); the import names it.
        Command::Template {
            command:
                TemplateCommand::Import {
                    name,
                    path,
                    sha256,
                    pool,
                },
        } if files::is_local_template(path) => {
            let (upload, digest) =
                runtime.block_on(upload::push_hashed(&client, std::path::Path::new(path)))?;
            call(model::api::ct::TemplateImport {
                name: name.clone(),
                path: format!("upload:{upload}"),
                sha256: sha256.clone().unwrap_or(format!("sha256:{digest}")),
                pool: pool.clone(),
            })?
            .1
        }
        // A local disk image goes up first; the import names the upload.
        Command::Volume {
            command: storage::VolumeCommand::Import { target, image },
        } if !image.starts_with("upload:") => {
            let upload = runtime.block_on(upload::push(&client, std::path::Path::new(image)))?;
            call(model::api::storage::VolumeImport {
                volume: target.clone(),
                source: format!("upload:{upload}"),
            })?
            .1
        }
        _ => params,
    };
    match &cli.command {
        Command::Ct {
            command: ct::CtCommand::Push(args),
        } => {
            runtime.block_on(files::push(&client, args))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Ct {
            command: ct::CtCommand::Pull(args),
        } => {
            runtime.block_on(files::pull(&client, args))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Upload { files } => {
            runtime.block_on(upload::push_all(&client, files, cli.global.json))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Monitor(args) => {
            runtime.block_on(monitor::run(&client, args, cli.global.json))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Logs(args) => {
            runtime.block_on(logs::run(&client, args, cli.global.json))?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    // `ct exec -t` and `ct enter`: this terminal joined to one in the container.
    if let Command::Ct { command } = &cli.command
        && let Some((name, argv)) = ct::terminal_exec(command)
    {
        return runtime.block_on(stream::exec(&client, &name, argv));
    }
    // `ct console NAME` / `vm console NAME`: this terminal attached to the guest's console.
    if let Some((kind, name)) = console::target(&cli.command) {
        return runtime.block_on(console::attach(&client, kind, &name));
    }
    let mut value = match &cli.command {
        // Long work runs as a task (no 30 s budget), its progress drawn.
        Command::Volume {
            command: storage::VolumeCommand::Backup { .. },
        } => runtime.block_on(task::run(&client, method, params, "backup"))?,
        Command::Vm {
            command: VmCommand::Snapshot { .. },
        } => runtime.block_on(task::run(&client, method, params, "snapshot"))?,
        Command::Volume {
            command: storage::VolumeCommand::Import { .. },
        } => runtime.block_on(task::run(&client, method, params, "import"))?,
        Command::Template {
            command: TemplateCommand::Import { path, .. },
        } if path.starts_with("http://") || path.starts_with("https://") => {
            runtime.block_on(task::run(&client, method, params, "download"))?
        }
        Command::Template {
            command: TemplateCommand::Import { path, .. },
        } if files::is_local_template(path) => {
            runtime.block_on(task::run(&client, method, params, "import"))?
        }
        Command::Task {
            command: task::TaskCommand::Wait { id },
        } => runtime
            .block_on(task::follow(&client, id, "task"))
            .map(|_| ())
            .and_then(|()| Ok(runtime.block_on(client.call(method, params))?))?,
        _ => runtime.block_on(client.call(method, params))?,
    };
    let status = match cli.command {
        Command::Install { no_wait: false, .. } => Some("host.installStatus"),
        Command::Update { no_wait: false, .. } => Some("host.updateStatus"),
        _ => None,
    };
    if let Some(status) = status {
        value = runtime.block_on(install::follow(&client, status))?;
        let failed = value
            .as_struct()
            .and_then(|r| r.get("state"))
            .and_then(Value::as_str)
            != Some("done");
        if failed && !cli.global.json {
            let error = value.as_struct().and_then(|r| r.get("error"));
            return Err(anyhow!("it failed: {}", output::text(error)));
        }
    }
    if cli.global.json {
        println!("{}", serde_json::to_string_pretty(&value.to_json())?);
    } else {
        match cli.command {
            Command::Services { command: None } => {
                print!("{}", output::services_table(&value))
            }
            Command::Info => print!("{}", output::info(&value)),
            Command::Disks => print!("{}", install::disks_table(&value)),
            Command::Update {
                no_wait, reboot, ..
            } => match (no_wait, reboot) {
                (true, _) => println!("update started (host.updateStatus follows it)"),
                (false, true) => println!("written; the host reboots into it"),
                (false, false) => println!("written; it boots at the next reboot"),
            },
            Command::Install { no_wait, disk, .. } => match no_wait {
                true => println!("installing onto {disk} (host.installStatus follows it)"),
                false => println!(
                    "installed onto {disk}: power off, remove the live medium, boot from it"
                ),
            },
            Command::Config {
                command: ConfigCommand::Apply { dry_run, .. },
            } => {
                let changes = value.as_array().unwrap_or_default();
                for change in changes {
                    println!("{}", output::text(Some(change)));
                }
                match (changes.is_empty(), dry_run) {
                    (true, _) => println!("no changes"),
                    (false, true) => println!("(dry run: nothing applied)"),
                    (false, false) => println!("applied: the services restart with it"),
                }
            }
            Command::Net {
                command: NetCommand::List,
            } => print!("{}", output::networks_table(&value)),
            Command::Port {
                command: PortCommand::List,
            } => print!("{}", output::ports_table(&value)),
            Command::Pool {
                command: storage::PoolCommand::List,
            } => print!("{}", storage::pools_table(&value)),
            Command::Volume {
                command: storage::VolumeCommand::List { .. },
            } => print!("{}", storage::volumes_table(&value)),
            Command::Task {
                command: task::TaskCommand::List,
            } => print!("{}", task::tasks_table(&value)),
            Command::Export {
                command: export::ExportCommand::List,
            } => print!("{}", export::exports_table(&value)),
            Command::Ct {
                command: CtCommand::List,
            } => print!("{}", ct::containers_table(&value)),
            Command::Ct {
                command: CtCommand::Info { .. } | CtCommand::Create { .. },
            } => print!("{}", ct::container_info(&value)),
            Command::Ct {
                command: CtCommand::Exec { .. },
            } => return Ok(exec_output(&value)),
            Command::Template {
                command: TemplateCommand::List,
            } => print!("{}", ct::templates_table(&value)),
            Command::Vm {
                command: VmCommand::List,
            } => print!("{}", vm::vms_table(&value)),
            Command::Vm {
                command: VmCommand::Info { .. } | VmCommand::Create { .. } | VmCommand::Set { .. },
            } => print!("{}", vm::vm_info(&value)),
            // The console log, as it is.
            _ if value.as_str().is_some() => print!("{}", value.as_str().unwrap_or_default()),
            // A record or a list without a form of its own: `key value` lines, a table.
            _ if value.as_struct().is_some() => print!("{}", output::record(&value)),
            _ if value.as_array().is_some() => print!("{}", output::records_table(&value)),
            _ => println!("ok"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ct exec`: the command's output on ours, and its exit status as ours (like `ssh` does), so
/// scripts can test it. Statuses outside 0..=255 (a signal: 128 + n) are clamped to 255.
fn exec_output(value: &Value) -> ExitCode {
    use std::io::Write as _;
    let s = value.as_struct();
    let get = |k: &str| s.and_then(|s| s.get(k));
    let out = get("stdout").and_then(Value::as_str).unwrap_or_default();
    let err = get("stderr").and_then(Value::as_str).unwrap_or_default();
    // A closed stdout (e.g. `| head`) must not turn into a panic.
    let _ = std::io::stdout().write_all(out.as_bytes());
    let _ = std::io::stderr().write_all(err.as_bytes());
    let code = get("exit_code").and_then(Value::as_i64).unwrap_or(255);
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

/// The call of a `net` subcommand.
fn net_call(command: &NetCommand) -> Result<Call, EncodeError> {
    match command {
        NetCommand::List => call(NetList {}),
        NetCommand::Info { name } => call(NetInfo { name: name.clone() }),
        NetCommand::Delete { name } => call(NetDelete { name: name.clone() }),
        NetCommand::Create {
            name,
            kind,
            uplink,
            vlan,
            vlan_aware,
            subnet,
            address,
        } => call(NetCreate {
            spec: NetworkSpec {
                name: name.clone(),
                kind: *kind,
                uplink: uplink.clone(),
                vlan: *vlan,
                vlan_aware: *vlan_aware,
                subnet: subnet.clone(),
                address: address.clone(),
                bond: Vec::new(),
                bond_mode: None,
                limits: None,
            },
        }),
        NetCommand::Limits {
            target,
            egress,
            ingress,
        } => {
            let rate = |bps: &Option<u64>| {
                bps.map(|rate_bps| Rate {
                    rate_bps,
                    burst_bytes: None,
                })
            };
            call(NetSetLimits {
                target: target.clone(),
                limits: LimitsChange {
                    egress: rate(egress),
                    ingress: rate(ingress),
                    police: None,
                },
            })
        }
    }
}

/// `--kind`: a network kind by its API name.
fn parse_kind(s: &str) -> Result<NetworkKind, String> {
    model::xmlrpc::from_value(Value::from(s)).map_err(|e| e.to_string())
}

fn config_check(file: &std::path::Path, json: bool) -> ExitCode {
    let result = model::config::load(file);
    if json {
        let errors: Vec<String> = match &result {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(|d| d.to_string()).collect(),
        };
        let answer = serde_json::json!({
            "file": file.display().to_string(), "ok": errors.is_empty(), "errors": errors,
        });
        println!("{answer:#}");
        return match errors.is_empty() {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        };
    }
    match result {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            // Through one buffer: stderr is unbuffered, and a line per write(2) is most of the
            // time a file with thousands of problems takes.
            let mut err = std::io::BufWriter::new(std::io::stderr().lock());
            for d in &errors.0 {
                let _ = writeln!(err, "{d}");
            }
            let _ = err.flush();
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
