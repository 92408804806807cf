//! `image`: builds the Cairn appliance (Debian's kernel + an initramfs with Cairn) and boots it
//! in QEMU for tests and benchmarks.
//!
//! Any error exits 1 with what to do, including a kernel pin gone from the mirror: the appliance
//! is what the e2e tests check, so a build that cannot happen is a failure, never a skip.

mod appliance;
mod bootloader;
mod bundle;
mod cpio;
mod floor;
mod fragment;
mod guestkit;
mod kernel;
mod media;
mod modules;
mod qemu;
mod rootfs;
mod tlsprobe;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "image", about = "Build and boot the Cairn appliance")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build vmlinuz, initrd.img, MANIFEST and token into the output directory.
    Build {
        /// host.toml to put into the image (default: examples/dev.toml).
        #[arg(long, conflicts_with = "no_config")]
        config: Option<PathBuf>,
        /// No host.toml in the image: it boots into maintenance mode, with DHCP on its first
        /// NIC and a one-time API token printed on its console.
        #[arg(long)]
        no_config: bool,
        /// The API token (default: a new random one). Only its sha256 goes into the image,
        /// as the token named "image", beside the config's own [[api.token]] entries.
        #[arg(long)]
        token: Option<String>,
        /// Reuse the token in this file (0600), or keep the new one there when it does not
        /// exist yet: one token across rebuilds. The image directory's `token` gets it too.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Output directory (default: target/appliance).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Use release binaries (target/release).
        #[arg(long)]
        release: bool,
        /// Do not run `cargo build` first; use the binaries already in target/.
        #[arg(long)]
        no_compile: bool,
        /// Add a root shell on the second serial port (ttyS1) with busybox and iproute2, for
        /// tests and development (`image run --shell-socket`). Never in a production image.
        #[arg(long)]
        debug_shell: bool,
        /// The OS version the image reports and its update bundle carries (default: Cairn's
        /// version), e.g. to build the "next" image an update test installs.
        #[arg(long)]
        os_version: Option<String>,
    },
    /// Boot the built appliance in QEMU and wait until its API answers.
    Run {
        #[command(flatten)]
        vm: VmArgs,
        /// Host loopback port forwarded to the API (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Serial console log (default: DIR/console.log).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Return once the API is ready, leaving QEMU running (pid in DIR/qemu.pid).
        #[arg(long)]
        detach: bool,
        /// Connect the guest's second serial port (the debug shell of an image built with
        /// --debug-shell) to a unix socket at this path.
        #[arg(long)]
        shell_socket: Option<PathBuf>,
        /// Serve QEMU's monitor (QMP) on a unix socket at this path.
        #[arg(long)]
        qmp_socket: Option<PathBuf>,
        /// More kernel parameters for a direct or PXE boot, e.g.
        /// `cairn.config=http://10.0.2.2:8000/${mac}.toml` (10.0.2.2 is this machine's loopback
        /// as QEMU's user network shows it).
        #[arg(long)]
        append: Option<String>,
        /// The NIC's MAC address.
        #[arg(long)]
        mac: Option<String>,
        /// A directory QEMU's TFTP server (10.0.2.2 in the guest) serves, e.g. for
        /// `cairn.config=tftp://10.0.2.2/${mac}.toml` (a PXE boot serves its PXE directory).
        #[arg(long)]
        tftp: Option<PathBuf>,
        /// Let the appliance reboot in place (e.g. through an update's trial boots); by
        /// default a reboot ends QEMU.
        #[arg(long)]
        allow_reboot: bool,
        /// A raw disk image attached as a virtio disk (vda, vdb, … in the order given): a
        /// blank one to install onto, one holding a state partition (`mkfs.ext4 -L
        /// CAIRN-STATE`: what the appliance makes through the API then survives its reboots),
        /// or an installed one to boot with `--boot disk|disk-uefi`.
        #[arg(long = "disk", alias = "state-disk", value_name = "IMG")]
        disks: Vec<PathBuf>,
        /// Attach the guest kit (a real Linux guest for the nested-VM tests) as a read-only
        /// virtio disk with serial "cairn-kit": the cached kit of the pinned kernel (built on
        /// first use), or the kit.img given as --guest-kit=PATH.
        #[arg(long, num_args = 0..=1, require_equals = true, value_name = "KIT_IMG")]
        guest_kit: Option<Option<PathBuf>>,
        /// Forward a loopback TCP port of this machine to one of the appliance's, beside the
        /// API's (e.g. 3261:3260 for its iSCSI target). Repeat for more.
        #[arg(long = "forward", value_name = "HOSTPORT:GUESTPORT", value_parser = qemu::parse_forward)]
        forwards: Vec<(u16, u16)>,
    },
    /// Build (or reuse from the cache) the guest kit and print its directory: vmlinux,
    /// initrd.img, disk.img, test-guest, and kit.img holding all four.
    GuestKit,
    /// Boot N times and report boot → API-ready times and their median.
    Bench {
        #[command(flatten)]
        vm: VmArgs,
        #[arg(short = 'n', long, default_value_t = 3)]
        count: usize,
        /// Boot the floor (`image floor`) instead: ready at its ready line, no API.
        #[arg(long)]
        floor: bool,
        /// Raw disk images to attach, as `image run --disk` (an installed one for
        /// `--boot disk`).
        #[arg(long = "disk", value_name = "IMG")]
        disks: Vec<PathBuf>,
    },
    /// Pack the update bundle again from DIR/update/ (after signing update/MANIFEST with
    /// `minisign -S`): DIR/cairn-<version>.update.
    Bundle {
        /// The image directory (default: target/appliance).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check buildroot-config's kernel fragment: every option set in the Debian kernel config
    /// the image is built from, every module the image loads marked on one.
    CheckFragment,
    /// Build the boot benchmark's floor: the same kernel and media with a busybox initramfs
    /// that only prints the ready line (default: target/appliance-floor).
    Floor {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct VmArgs {
    /// Directory with vmlinuz, initrd.img and token (default: target/appliance).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds to wait for the API before giving up.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// QEMU accelerator. TCG by default: this machine's /dev/kvm cannot boot a stock kernel.
    #[arg(long, default_value = "tcg")]
    accel: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// The appliance's CPUs (QEMU -smp). One by default: under TCG on a nested rig the VMs
    /// the appliance runs boot reliably with one (with two, some nested boots triple-fault;
    /// see ci/e2e/test_vm.py's NestedVm), and no slower.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// How to boot: the kernel directly, the ISO from BIOS or UEFI, or PXE (QEMU's TFTP).
    #[arg(long, value_enum, default_value_t = qemu::Boot::Direct)]
    boot: qemu::Boot,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("image: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    let workspace = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let default_dir = target_dir.join("appliance");
    match cli.cmd {
        Cmd::Build {
            config,
            no_config,
            token,
            token_file,
            out,
            release,
            no_compile,
            debug_shell,
            os_version,
        } => {
            let opt = appliance::Options {
                config: (!no_config)
                    .then(|| config.unwrap_or_else(|| workspace.join("examples/dev.toml"))),
                token,
                token_file,
                out: out.unwrap_or(default_dir),
                release,
                no_compile,
                debug_shell,
                os_version: os_version.unwrap_or_else(|| model::VERSION.to_string()),
                workspace,
                target_dir,
            };
            appliance::build(&opt).context("image build")?;
            Ok(0)
        }
        Cmd::Run {
            vm,
            port,
            log,
            detach,
            shell_socket,
            qmp_socket,
            append,
            mac,
            tftp,
            allow_reboot,
            disks,
            guest_kit,
            forwards,
        } => {
            let mut opt = vm.options(default_dir);
            opt.port = port;
            opt.log = log;
            opt.shell_socket = shell_socket;
            opt.qmp_socket = qmp_socket;
            opt.append = append;
            opt.mac = mac;
            opt.tftp = tftp;
            opt.allow_reboot = allow_reboot;
            opt.disks = disks;
            opt.forwards = forwards;
            opt.guest_kit = match guest_kit {
                None => None,
                Some(Some(path)) => Some(path),
                Some(None) => Some(fetch_guest_kit()?.image),
            };
            let code = qemu::run(&opt, detach).context("image run")?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        Cmd::Bundle { dir } => {
            let bundle = bundle::pack(&dir.unwrap_or(default_dir))?;
            println!("{}", bundle.display());
            Ok(0)
        }
        Cmd::CheckFragment => {
            fragment::check(&workspace)?;
            Ok(0)
        }
        Cmd::GuestKit => {
            println!("{}", fetch_guest_kit()?.dir.display());
            Ok(0)
        }
        Cmd::Bench {
            vm,
            count,
            floor,
            disks,
        } => {
            let dir = if floor {
                target_dir.join("appliance-floor")
            } else {
                default_dir
            };
            let mut opt = vm.options(dir);
            opt.floor = floor;
            opt.disks = disks;
            qemu::bench(&opt, count).context("image bench")?;
            Ok(0)
        }
        Cmd::Floor { out } => {
            floor::build(&out.unwrap_or_else(|| target_dir.join("appliance-floor")))
                .context("image floor")?;
            Ok(0)
        }
    }
}

fn fetch_guest_kit() -> Result<guestkit::Kit> {
    let kernel = kernel::fetch()?;
    guestkit::fetch(&kernel).context("image guest-kit")
}

impl VmArgs {
    fn options(self, default_dir: PathBuf) -> qemu::RunOptions {
        qemu::RunOptions {
            dir: self.dir.unwrap_or(default_dir),
            port: None,
            log: None,
            shell_socket: None,
            qmp_socket: None,
            guest_kit: None,
            timeout: Duration::from_secs(self.timeout),
            accel: self.accel,
            memory_mib: self.memory,
            cpus: self.cpus,
            boot: self.boot,
            floor: false,
            append: None,
            mac: None,
            tftp: None,
            allow_reboot: false,
            disks: Vec::new(),
            forwards: Vec::new(),
        }
    }
}

/// The workspace this binary was built from (image/ is one of its members).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
