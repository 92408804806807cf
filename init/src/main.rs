//! Cairn's PID 1. In the appliance it mounts the API filesystems, loads the image's modules,
//! starts the D-Bus bus and supervises netd → stord → hostd → apid. On a dev machine,
//! `init --sandbox` runs the same supervisor in fresh mount, network and UTS namespaces with a
//! private bus, so tests run the real daemons without QEMU.

mod boot;
mod bus;
mod children;
mod config_source;
mod config_url;
mod debug_shell;
mod init1;
mod install;
mod lo;
mod modules;
mod sandbox;
mod supervisor;
mod tftp;
mod update;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Cairn's PID 1 and service supervisor")]
struct Args {
    /// Run as a supervisor on a dev machine (not PID 1), in fresh namespaces with a private bus.
    #[arg(long)]
    sandbox: bool,
    /// The host configuration.
    #[arg(long, default_value = "/etc/cairn/host.toml")]
    config: PathBuf,
    /// The state directory; the bus socket, daemon logs and daemon state live below it.
    #[arg(long, default_value = "/var/lib/cairn")]
    state: PathBuf,
    /// Where the daemon binaries are; by default the directory of this executable in a sandbox,
    /// /usr/bin in the appliance.
    #[arg(long)]
    bindir: Option<PathBuf>,
    /// Seconds a daemon has to own its bus name after it starts.
    #[arg(long, default_value_t = 10)]
    ready_timeout: u64,
}

/// Whether init runs as the appliance's PID 1 or as a sandbox on a dev machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Appliance,
    Sandbox,
}

fn main() -> ExitCode {
    let pid1 = std::process::id() == 1;
    if pid1 {
        // The kernel may start us without a console; everything below reports through it.
        boot::attach_console();
    }
    // The kernel passes its unparsed command line words to PID 1; only our flags matter.
    let args = if pid1 {
        Args::parse_from(std::env::args().take(1))
    } else {
        Args::parse()
    };
    tracing_subscriber::fmt()
        // To stderr, and into host.log's ring as service `init`.
        .with_writer(|| supervisor::logs::InitWriter)
        .with_ansi(model::daemon::colours_on_stderr())
        .with_target(false)
        .init();

    let mode = if pid1 {
        Mode::Appliance
    } else if args.sandbox {
        Mode::Sandbox
    } else {
        eprintln!(
            "init: not PID 1: use `init --sandbox --config FILE --state DIR` on a dev machine"
        );
        return ExitCode::from(2);
    };

    match run(mode, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e:#}");
            if mode == Mode::Appliance {
                // PID 1 must not exit: that panics the kernel and hides the message.
                boot::halt_forever();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(mode: Mode, args: &Args) -> anyhow::Result<()> {
    let state = absolute(&args.state)?;
    if mode == Mode::Appliance {
        boot::leave_rootfs()?;
        boot::mount_api_filesystems()?;
        // Before the state partition is looked for (its disk's driver) and the config is
        // chosen (maintenance mode names itself after a NIC, which appears with its driver).
        modules::load_listed(Path::new(modules::LIST_PATH));
        let lives = boot::read_only_root(&state)?;
        println!("cairn: state {lives}");
    }
    // Validate all of host.toml before anything is started or changed: the appliance falls
    // back to maintenance mode, a sandbox (a test's own config) stops.
    let cmdline = match mode {
        Mode::Appliance => std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
        Mode::Sandbox => String::new(),
    };
    let chosen = match mode {
        Mode::Appliance => {
            config_source::choose(&cmdline, &state, &args.config, Path::new("/run/cairn"))?
        }
        Mode::Sandbox => match model::config::load(&args.config) {
            Ok(config) => config_source::Chosen {
                config,
                path: absolute(&args.config)?,
                maintenance: false,
                source: "file".into(),
                problem: None,
                url: None,
            },
            Err(errors) => {
                eprintln!("{errors}");
                anyhow::bail!(
                    "{}: {} error(s); nothing was started",
                    args.config.display(),
                    errors.0.len()
                );
            }
        },
    };
    let config = &chosen.config;

    let bindir = match (&args.bindir, mode) {
        (Some(d), _) => d.clone(),
        (None, Mode::Appliance) => PathBuf::from("/usr/bin"),
        (None, Mode::Sandbox) => own_dir()?,
    };
    std::fs::create_dir_all(&state)?;

    match mode {
        Mode::Appliance => {
            boot::set_hostname(&config.host.hostname)?;
            if let Err(e) = debug_shell::start() {
                tracing::error!(error = %format!("{e:#}"), "debug shell");
            }
        }
        Mode::Sandbox => sandbox::enter(&state, &config.host.hostname)?,
    }
    lo::bring_up()?;

    // The runtime is built only now: unshare(CLONE_NEWNS) above requires a single thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plan = supervisor::Plan {
        mode,
        bindir,
        config: chosen.path.clone(),
        state,
        boot: supervisor::BootInfo {
            mode: chosen.mode().to_string(),
            source: chosen.source.clone(),
            problem: chosen.problem.clone().unwrap_or_default(),
        },
        config_url: chosen.url.clone(),
        install: supervisor::unattended::from_cmdline(&cmdline),
        cmdline: cmdline.clone(),
        ready_timeout: std::time::Duration::from_secs(args.ready_timeout),
    };
    let end = runtime.block_on(supervisor::run(plan))?;
    drop(runtime);
    match mode {
        Mode::Appliance => boot::final_shutdown(end),
        Mode::Sandbox => Ok(()),
    }
}

fn own_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("cannot tell the directory of {}", exe.display()))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}
