//! `cairnctl ct …` and `cairnctl template …`: OS containers and their templates (hostd).

use clap::{Args, Subcommand};

use model::api::ct::{
    CtConsole, CtCreate, CtDelete, CtExec, CtInfo, CtList, CtPause, CtRestart, CtResume, CtSet,
    CtStart, CtStop, CtStopTimeout, TemplateDelete, TemplateImport, TemplateList,
};
use model::ct::{ContainerSpec, Resources};
use model::xmlrpc::{EncodeError, Struct, Value};

use crate::call::{Call, call};

use crate::output::{bytes_cell, joined, member, table, text, utc};
use crate::size;

#[derive(Subcommand)]
pub enum CtCommand {
    /// Every container.
    List,
    /// One container, with its usage read now.
    Info {
        /// The container's name.
        name: String,
    },
    /// Creates (does not start) a container from a template.
    Create {
        /// The new container's name, unique among the host's containers.
        name: String,
        /// The template its root filesystem comes from (`cairnctl template list`).
        #[arg(long)]
        template: String,
        /// The network (netd) eth0 joins; none = loopback only.
        #[arg(long)]
        network: Option<String>,
        /// eth0's address as addr/prefix; repeat for more.
        #[arg(long = "address")]
        addresses: Vec<String>,
        /// The default route's next hop, e.g. 10.0.0.1.
        #[arg(long)]
        gateway: Option<String>,
        /// The container's hostname (default: its name).
        #[arg(long)]
        hostname: Option<String>,
        /// Container root is host root (no user namespace): trusted guests only.
        #[arg(long)]
        privileged: bool,
        /// Start it whenever the host boots.
        #[arg(long)]
        autostart: bool,
        /// Keep the writable layer on a volume of this stord pool (with --disk).
        #[arg(long, requires = "disk")]
        pool: Option<String>,
        /// The writable layer's size, a hard quota (with --pool): 64M, 10G.
        #[arg(long, value_parser = size::parse, requires = "pool")]
        disk: Option<u64>,
        #[command(flatten)]
        resources: ResourceArgs,
        /// PID 1 and its arguments (default: the template's /sbin/init), after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Starts a created or stopped container.
    Start {
        /// The container's name.
        name: String,
    },
    /// Signals the container's init, waits, then kills what is left.
    Stop {
        /// The container's name.
        name: String,
        /// Grace period in seconds before the kill, 0..=20 (default 10).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Stops the container (as `stop` does) and starts it again.
    Restart {
        /// The container's name.
        name: String,
    },
    /// Freezes every process of the container.
    Pause {
        /// The container's name.
        name: String,
    },
    /// Thaws a paused container.
    Resume {
        /// The container's name.
        name: String,
    },
    /// Deletes a stopped container.
    Delete {
        /// The container's name.
        name: String,
    },
    /// Runs a command inside the container; prints its output and exits with its status.
    /// With -t, the command runs on a terminal joined to this one (interactive; window size,
    /// Ctrl-C and the exit code carried through).
    Exec {
        /// The container's name.
        name: String,
        /// Run the command on a terminal (a pty in the container), interactively.
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A login shell in the container on this terminal (bash if it has one, else sh), as
    /// `pct enter`; exits with the shell's status.
    Enter {
        /// The container's name.
        name: String,
    },
    /// Changes limits live; only the ones given change.
    Set {
        /// The container's name.
        name: String,
        #[command(flatten)]
        resources: ResourceArgs,
    },
    /// Attaches to the container's console (its /dev/console); Ctrl-] detaches. With --log,
    /// prints the last 64 KiB of the console log instead.
    Console {
        /// The container's name.
        name: String,
        /// Print the console log and return instead of attaching.
        #[arg(long)]
        log: bool,
    },
    /// Copies a local file into a container (running or stopped), bytes and mode intact:
    /// `cairnctl ct push ./app web1:/usr/local/bin/app --mode 0755`.
    Push(crate::files::PushArgs),
    /// Copies a file out of a container, bytes and mode intact:
    /// `cairnctl ct pull web1:/etc/hostname .`.
    Pull(crate::files::PullArgs),
}

/// Limits, as `ct create` and `ct set` take them.
#[derive(Args)]
pub struct ResourceArgs {
    /// CPU limit in % of one host CPU (200 = two CPUs).
    #[arg(long)]
    cpu_limit: Option<u32>,
    /// CPU share under contention, 1..=10000 (default 100).
    #[arg(long)]
    cpu_weight: Option<u32>,
    /// CPUs it may run on, e.g. 0-1 or 0,2.
    #[arg(long)]
    cpuset: Option<String>,
    /// Memory limit in bytes, or with a unit: K, M, G, T, KiB, MiB, GiB, TiB (1024-based;
    /// 512m = 512M) or kB, MB, GB, TB (1000-based); fractions when whole: 1.5G.
    /// The same grammar as sizes in host.toml.
    #[arg(long, value_parser = size::parse)]
    memory: Option<u64>,
    /// Swap limit, a size as for --memory: 1G, 1.5G, 1000MB.
    #[arg(long, value_parser = size::parse)]
    swap: Option<u64>,
    /// Most processes it may have.
    #[arg(long)]
    pids: Option<u32>,
    /// IO share, 1..=10000 (default 100).
    #[arg(long)]
    io_weight: Option<u32>,
}

impl ResourceArgs {
    fn resources(&self) -> Resources {
        Resources {
            cpu_limit: self.cpu_limit,
            cpu_weight: self.cpu_weight,
            cpuset: self.cpuset.clone(),
            memory: self.memory,
            swap: self.swap,
            pids: self.pids,
            io_weight: self.io_weight,
        }
    }
}

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Every template.
    List,
    /// Imports a rootfs tarball (a path on the host) whose digest must match, or a template
    /// the image bundles (PATH bundled:NAME, e.g. bundled:busybox).
    Import {
        /// The template's name, as `ct create --template` takes it.
        name: String,
        /// A local tarball (uploaded first, with a progress bar), else a path on the host, an
        /// http(s):// URL the host downloads, bundled:NAME, or upload:NAME (PUT /uploads/NAME).
        path: String,
        /// sha256:<hex>; may be left out for a local tarball (hashed as it is sent) or
        /// bundled:NAME (the image's own digest is checked).
        sha256: Option<String>,
        /// Keep the template in this stord pool (dir or nfs) instead of hostd's state.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Deletes a template no container uses (and its files in its pool).
    Delete {
        /// The template's name.
        name: String,
    },
}

/// The call of a `ct` subcommand.
pub fn ct_call(command: &CtCommand) -> Result<Call, EncodeError> {
    let name = |n: &String| n.clone();
    match command {
        CtCommand::List => call(CtList {}),
        CtCommand::Info { name: n } => call(CtInfo { name: name(n) }),
        CtCommand::Create {
            name: n,
            template,
            network,
            addresses,
            gateway,
            hostname,
            privileged,
            autostart,
            pool,
            disk,
            resources,
            command,
        } => call(CtCreate {
            spec: ContainerSpec {
                name: name(n),
                template: template.clone(),
                network: network.clone(),
                addresses: addresses.clone(),
                gateway: gateway.clone(),
                hostname: hostname.clone(),
                command: (!command.is_empty()).then(|| command.clone()),
                privileged: *privileged,
                autostart: *autostart,
                pool: pool.clone(),
                disk: *disk,
                resources: resources.resources(),
            },
        }),
        CtCommand::Start { name: n } => call(CtStart { name: name(n) }),
        CtCommand::Stop {
            name: n,
            timeout: None,
        } => call(CtStop { name: name(n) }),
        CtCommand::Stop {
            name: n,
            timeout: Some(t),
        } => call(CtStopTimeout {
            name: name(n),
            seconds: *t,
        }),
        CtCommand::Restart { name: n } => call(CtRestart { name: name(n) }),
        CtCommand::Pause { name: n } => call(CtPause { name: name(n) }),
        CtCommand::Resume { name: n } => call(CtResume { name: name(n) }),
        CtCommand::Delete { name: n } => call(CtDelete { name: name(n) }),
        CtCommand::Exec {
            name: n, command, ..
        } => call(CtExec {
            name: name(n),
            argv: command.clone(),
        }),
        CtCommand::Set { name: n, resources } => call(CtSet {
            name: name(n),
            resources: resources.resources(),
        }),
        // A stream (terminal_exec, served before any call); this names the container only.
        CtCommand::Enter { name: n } => call(CtInfo { name: name(n) }),
        // The log; attaching is a stream (crate::console), not a call.
        CtCommand::Console { name: n, .. } => call(CtConsole { name: name(n) }),
        // Streams (crate::files), not calls: this names the container only.
        CtCommand::Push(crate::files::PushArgs { target: t, .. })
        | CtCommand::Pull(crate::files::PullArgs { source: t, .. }) => call(CtInfo {
            name: t.split(':').next().unwrap_or_default().to_string(),
        }),
    }
}

/// The container and command of a `ct` subcommand that runs on a terminal (`exec -t`,
/// `enter`): a stream (crate::stream), not a call.
pub fn terminal_exec(command: &CtCommand) -> Option<(String, Vec<String>)> {
    match command {
        CtCommand::Exec {
            name,
            tty: true,
            command,
        } => Some((name.clone(), command.clone())),
        CtCommand::Enter { name } => Some((name.clone(), crate::stream::login_shell())),
        _ => None,
    }
}

/// The call of a `template` subcommand.
pub fn template_call(command: &TemplateCommand) -> Result<Call, EncodeError> {
    match command {
        TemplateCommand::List => call(TemplateList {}),
        TemplateCommand::Import {
            name,
            path,
            sha256,
            pool,
        } => call(TemplateImport {
            name: name.clone(),
            path: path.clone(),
            sha256: sha256.clone().unwrap_or_default(),
            pool: pool.clone(),
        }),
        TemplateCommand::Delete { name } => call(TemplateDelete { name: name.clone() }),
    }
}

/// `ct.list`: one row per container; limits and usage in short forms.
pub fn containers_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let c = c.as_struct();
            let res = member(c, "resources").and_then(Value::as_struct);
            let usage = member(c, "usage").and_then(Value::as_struct);
            let cpu = member(res, "cpu_limit").map_or_else(|| "-".into(), |v| text(Some(v)) + "%");
            let memory = format!(
                "{}/{}",
                bytes_cell(member(usage, "memory_bytes")),
                bytes_cell(member(res, "memory"))
            );
            let addresses = joined(c, "addresses");
            vec![
                text(member(c, "name")),
                text(member(c, "state")),
                text(member(c, "template")),
                text(member(c, "pid")),
                cpu,
                memory,
                addresses,
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "TEMPLATE",
            "PID",
            "CPU",
            "MEMORY",
            "ADDRESSES",
        ],
        &rows,
    )
}

/// `ct.info`: one `key value` line per member, usage and limits flattened.
pub fn container_info(v: &Value) -> String {
    let empty = Struct::new();
    let c = v.as_struct().unwrap_or(&empty);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (k, v) in c {
        match (k.as_str(), v) {
            ("created" | "started", v) => rows.push(vec![
                k.clone(),
                v.as_i64().map_or_else(|| text(Some(v)), utc),
            ]),
            (_, Value::Struct(inner)) => {
                for (ik, iv) in inner {
                    let cell = if ik.ends_with("bytes") || ik == "memory" || ik == "swap" {
                        bytes_cell(Some(iv))
                    } else {
                        text(Some(iv))
                    };
                    rows.push(vec![format!("{k}.{ik}"), cell]);
                }
            }
            (_, Value::Array(items)) => rows.push(vec![
                k.clone(),
                items
                    .iter()
                    .map(|i| text(Some(i)))
                    .collect::<Vec<_>>()
                    .join(","),
            ]),
            _ => rows.push(vec![k.clone(), text(Some(v))]),
        }
    }
    let width = rows.iter().map(|r| r[0].len()).max().unwrap_or(0) + 2;
    rows.iter()
        .map(|r| format!("{:<width$}{}\n", r[0], r[1]))
        .collect()
}

/// `template.list`: one row per template.
pub fn templates_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let t = t.as_struct();
            vec![
                text(member(t, "name")),
                text(member(t, "version")),
                bytes_cell(member(t, "size_bytes")),
                text(member(t, "pool")),
                text(member(t, "sha256")),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "SIZE", "POOL", "SHA256"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        ct: CtCommand,
    }

    fn parse(args: &[&str]) -> (&'static str, Vec<Value>) {
        let cli = Cli::try_parse_from(std::iter::once("ct").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        ct_call(&cli.ct).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn command_lines() {
        let (m, p) = parse(&[
            "create",
            "web1",
            "--template",
            "busybox",
            "--network",
            "lan",
            "--address",
            "10.0.0.5/24",
            "--memory",
            "512M",
            "--cpu-limit",
            "50",
            "--",
            "/bin/sh",
            "-c",
            "sleep 1",
        ]);
        assert_eq!(m, "ct.create");
        let json = p[0].to_json();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "web1", "template": "busybox", "network": "lan",
                "addresses": ["10.0.0.5/24"],
                "resources": {"memory": 536_870_912u64, "cpu_limit": 50},
                "command": ["/bin/sh", "-c", "sleep 1"],
            })
        );
        let (m, p) = parse(&["exec", "web1", "--", "ls", "-l"]);
        assert_eq!(m, "ct.exec");
        assert_eq!(p[1], Value::Array(vec![s("ls"), s("-l")]));
        let (m, p) = parse(&["set", "web1", "--cpu-weight", "300", "--cpuset", "0"]);
        assert_eq!(m, "ct.set");
        assert_eq!(
            p[1].to_json(),
            serde_json::json!({"cpu_weight": 300, "cpuset": "0"})
        );
        assert_eq!(parse(&["stop", "web1"]).0, "ct.stop");
        assert!(Cli::try_parse_from(["ct", "exec", "web1"]).is_err());
        assert!(Cli::try_parse_from(["ct", "set", "web1", "--memory", "lots"]).is_err());
    }

    #[test]
    fn template_import_takes_a_pool() {
        #[derive(Parser)]
        struct TemplateCli {
            #[command(subcommand)]
            template: TemplateCommand,
        }
        let call_of = |args: &[&str]| {
            let cli = TemplateCli::try_parse_from(
                std::iter::once("template").chain(args.iter().copied()),
            )
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            template_call(&cli.template).unwrap_or_else(|e| panic!("{args:?}: {e}"))
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        let (m, p) = call_of(&["import", "deb", "/t.tar", &digest, "--pool", "shared"]);
        assert_eq!(m, "template.import");
        assert_eq!(p, vec![s("deb"), s("/t.tar"), s(&digest), s("shared")]);
        let (_, p) = call_of(&["import", "deb", "/t.tar", &digest]);
        assert_eq!(p.len(), 3, "no pool: the call is the one made before pools");
    }

    /// --memory and --swap read sizes with model's parser, as host.toml does.
    #[test]
    fn limits_take_the_host_toml_size_grammar() {
        for (given, bytes) in [
            ("512M", 512u64 << 20),
            ("512m", 512 << 20),
            ("512MiB", 512 << 20),
            ("1.5G", 3 << 29),
            ("256MB", 256_000_000),
            ("12GB", 12_000_000_000),
            ("4096", 4096),
        ] {
            assert_eq!(model::units::parse_size(given), Ok(bytes));
            let (_, p) = parse(&["set", "web1", "--memory", given, "--swap", given]);
            assert_eq!(
                p[1].to_json(),
                serde_json::json!({"memory": bytes, "swap": bytes}),
                "{given}"
            );
        }
        for bad in ["12 XB", "-1G", "1.1K", "99999999999T", ""] {
            let model_says = model::units::parse_size(bad).expect_err(bad).to_string();
            // `--memory=…` so that "-1G" is a value rather than a flag.
            let e = Cli::try_parse_from(["ct", "set", "web1", &format!("--memory={bad}")])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(&model_says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn calls_and_tables() {
        let (m, p) = ct_call(&CtCommand::Stop {
            name: "web1".into(),
            timeout: Some(3),
        })
        .unwrap();
        assert_eq!(m, "ct.stopTimeout");
        assert_eq!(p, vec![s("web1"), Value::Int(3)]);
        let list = Value::Array(vec![Value::structure([
            ("name", s("web1")),
            ("state", s("running")),
            ("template", s("busybox")),
            ("pid", Value::Int(42)),
            (
                "resources",
                Value::structure([
                    ("cpu_limit", Value::Int(50)),
                    ("memory", Value::Int(512 << 20)),
                ]),
            ),
            (
                "usage",
                Value::structure([("memory_bytes", Value::Int(3 << 20))]),
            ),
            ("addresses", Value::Array(vec![s("10.0.0.5/24")])),
        ])]);
        assert_eq!(
            containers_table(&list),
            "NAME  STATE    TEMPLATE  PID  CPU  MEMORY       ADDRESSES\n\
             web1  running  busybox   42   50%  3.0M/512.0M  10.0.0.5/24\n"
        );
        let info = container_info(&list.as_array().unwrap()[0]);
        assert!(info.contains("resources.memory     512.0M\n"), "{info}");
        assert!(info.contains("usage.memory_bytes   3.0M\n"), "{info}");
    }
}
