//! `cairnctl`: the command-line client of Cairn's XML-RPC API.

mod client;
mod ct;
mod output;
mod rate;
mod size;
mod tls;
mod vm;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use model::xmlrpc::Value;

use crate::client::{Client, Endpoint};
use crate::ct::{CtCommand, TemplateCommand};
use crate::tls::Trust;
use crate::vm::VmCommand;

#[derive(Parser)]
#[command(
    name = "cairnctl",
    version,
    about = "Control a Cairn host through its XML-RPC API"
)]
struct Cli {
    /// The API, e.g. https://192.0.2.10:8443 (path defaults to /RPC2).
    #[arg(long, global = true)]
    url: Option<String>,
    /// An API token; defaults to the CAIRN_TOKEN environment variable.
    #[arg(long, global = true)]
    token: Option<String>,
    /// Trust this PEM certificate: the host's own (its STATE/tls/cert.pem) or its CA.
    #[arg(long, global = true, conflicts_with = "insecure")]
    ca_cert: Option<PathBuf>,
    /// Accept any server certificate (encrypted, but not authenticated).
    #[arg(long, global = true)]
    insecure: bool,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hostname, version, uptime, daemons and services.
    Info,
    /// The services init supervises.
    Services,
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
    Info { name: String },
    /// Creates a network (the fields of a [[network]] table in host.toml).
    Create {
        name: String,
        #[arg(long, value_parser = ["bridged", "routed", "vlan"])]
        kind: String,
        #[arg(long)]
        uplink: Option<String>,
        #[arg(long)]
        vlan: Option<u16>,
        /// A VLAN-aware bridge (ports carry access/tagged VLANs).
        #[arg(long)]
        vlan_aware: bool,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        address: Option<String>,
    },
    /// Deletes a network without ports.
    Delete { name: String },
    /// Sets the live limits of a port or a network's aggregate; rates in bit/s with an
    /// optional K, M, G or T suffix, any case, optionally followed by "bit" (decimal, as
    /// network rates are: 100M = 100mbit = 100 000 000 bit/s); fractions when whole: 1.5G.
    Limits {
        target: String,
        #[arg(long, value_parser = rate::parse)]
        egress: Option<u64>,
        #[arg(long, value_parser = rate::parse)]
        ingress: Option<u64>,
    },
}

#[derive(Subcommand)]
enum PortCommand {
    /// Every port.
    List,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates a host.toml without contacting any host.
    Check { file: PathBuf },
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
        } => return Ok(config_check(file)),
        Command::Info => ("host.info", vec![]),
        Command::Services => ("host.services", vec![]),
        Command::Net { command } => net_call(command),
        Command::Port {
            command: PortCommand::List,
        } => ("port.list", vec![]),
        Command::Ct { command } => ct::ct_call(command),
        Command::Template { command } => ct::template_call(command),
        Command::Vm { command } => vm::vm_call(command, vm_create),
    };
    let url = cli
        .url
        .as_deref()
        .ok_or_else(|| anyhow!("pass --url https://HOST:PORT"))?;
    let endpoint = Endpoint::parse(url)?;
    let token = match cli.token.clone() {
        Some(t) => t,
        None => std::env::var("CAIRN_TOKEN")
            .map_err(|_| anyhow!("no API token: pass --token or set CAIRN_TOKEN"))?,
    };
    let trust = match (&cli.ca_cert, cli.insecure) {
        (Some(path), _) => Trust::CaFile(path),
        (None, true) => Trust::Insecure,
        (None, false) => {
            return Err(anyhow!(
                "Cairn hosts serve a self-signed certificate: pass --ca-cert FILE (the host's \
                 STATE/tls/cert.pem, or the CA of the certificate in host.toml) or --insecure"
            ));
        }
    };
    let tls = tls::client_config(trust)?;
    let client = Client::new(endpoint, token, tls);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let value = runtime.block_on(client.call(method, params))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&value.to_json())?);
    } else {
        match cli.command {
            Command::Services => print!("{}", output::services_table(&value)),
            Command::Info => print!("{}", output::info(&value)),
            Command::Net {
                command: NetCommand::List,
            } => print!("{}", output::networks_table(&value)),
            Command::Port { .. } => print!("{}", output::ports_table(&value)),
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
                command: VmCommand::Info { .. } | VmCommand::Create { .. },
            } => print!("{}", vm::vm_info(&value)),
            // The console log, as it is.
            _ if value.as_str().is_some() => print!("{}", value.as_str().unwrap_or_default()),
            // info of one network: its JSON is the clearest human form of a nested record.
            _ if value.as_struct().is_some() => {
                println!("{}", serde_json::to_string_pretty(&value.to_json())?)
            }
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

/// The XML-RPC method and parameters of a `net` subcommand.
fn net_call(command: &NetCommand) -> (&'static str, Vec<Value>) {
    let opt_str = |k: &'static str, v: &Option<String>| v.clone().map(|v| (k, Value::String(v)));
    match command {
        NetCommand::List => ("net.list", vec![]),
        NetCommand::Info { name } => ("net.info", vec![Value::String(name.clone())]),
        NetCommand::Delete { name } => ("net.delete", vec![Value::String(name.clone())]),
        NetCommand::Create {
            name,
            kind,
            uplink,
            vlan,
            vlan_aware,
            subnet,
            address,
        } => {
            let mut spec = vec![
                ("name", Value::String(name.clone())),
                ("kind", Value::String(kind.clone())),
            ];
            spec.extend(opt_str("uplink", uplink));
            spec.extend(vlan.map(|v| ("vlan", Value::Int(v.into()))));
            if *vlan_aware {
                spec.push(("vlan_aware", Value::Bool(true)));
            }
            spec.extend(opt_str("subnet", subnet));
            spec.extend(opt_str("address", address));
            ("net.create", vec![Value::structure(spec)])
        }
        NetCommand::Limits {
            target,
            egress,
            ingress,
        } => {
            let rate = |bps: u64| Value::structure([("rate_bps", Value::from_u64(bps))]);
            let mut limits = Vec::new();
            limits.extend(egress.map(|r| ("egress", rate(r))));
            limits.extend(ingress.map(|r| ("ingress", rate(r))));
            (
                "net.setLimits",
                vec![Value::String(target.clone()), Value::structure(limits)],
            )
        }
    }
}

fn config_check(file: &std::path::Path) -> ExitCode {
    match model::config::load(file) {
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
