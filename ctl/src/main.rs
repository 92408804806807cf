//! `cairnctl`: the command-line client of Cairn's XML-RPC API.

mod client;
mod output;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};

use crate::client::{Client, Endpoint};
use crate::tls::Trust;

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
    /// Work with host.toml files locally.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates a host.toml without contacting any host.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let method = match &cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => return Ok(config_check(file)),
        Command::Info => "host.info",
        Command::Services => "host.services",
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
    let value = runtime.block_on(client.call(method, vec![]))?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output::to_json(&value))?
        );
    } else {
        match cli.command {
            Command::Services => print!("{}", output::services_table(&value)),
            _ => print!("{}", output::info(&value)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn config_check(file: &std::path::Path) -> ExitCode {
    match model::config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for d in &errors.0 {
                eprintln!("{d}");
            }
            ExitCode::FAILURE
        }
    }
}
