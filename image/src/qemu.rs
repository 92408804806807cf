//! `image run` / `image bench`: boot the built appliance in QEMU with the API forwarded to a
//! loopback port, and wait until it answers.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::media;

/// The line init prints once apid owns its bus name.
pub const READY_LINE: &str = "cairn: api ready";
/// The port apid listens on inside the guest (examples/dev.toml).
pub const GUEST_API_PORT: u16 = 8443;
const QEMU: &str = "qemu-system-x86_64";

/// How QEMU boots the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Boot {
    /// The kernel and initramfs handed to QEMU (-kernel, -initrd): the quickest.
    Direct,
    /// The ISO as a CD, from SeaBIOS.
    Iso,
    /// The ISO as a CD, from OVMF (UEFI).
    Uefi,
    /// The ISO written to a USB stick, from SeaBIOS (the image is hybrid: an MBR too).
    Stick,
    /// iPXE over QEMU's TFTP from the PXE directory.
    Pxe,
    /// The first --disk (an installed one), from SeaBIOS.
    Disk,
    /// The first --disk (an installed one), from OVMF (UEFI).
    DiskUefi,
}

/// Debian's OVMF (package ovmf), 4 MiB flash layout.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dir: PathBuf,
    pub port: Option<u16>,
    pub log: Option<PathBuf>,
    pub timeout: Duration,
    /// "tcg" by default: this host's /dev/kvm (PVM) cannot boot a stock kernel.
    pub accel: String,
    pub memory_mib: u32,
    /// QEMU's -smp.
    pub cpus: u32,
    pub boot: Boot,
    /// The boot floor (`image floor`): ready at the ready line alone (it has no API).
    pub floor: bool,
    /// More kernel parameters (direct and PXE boots), e.g. `cairn.config=http://…`.
    pub append: Option<String>,
    /// The NIC's MAC (QEMU's default otherwise: the same for every VM).
    pub mac: Option<String>,
    /// A directory for QEMU's TFTP server (not with a PXE boot, which serves its own).
    pub tftp: Option<PathBuf>,
    /// Raw disk images, attached as virtio disks in this order (a blank one to install onto,
    /// a state partition, an installed disk to boot).
    pub disks: Vec<PathBuf>,
    /// A unix socket for the guest's ttyS1 (the debug shell).
    pub shell_socket: Option<PathBuf>,
    /// A unix socket for QEMU's monitor (QMP), so a test can ask a stuck appliance's QEMU
    /// for its state (query-status, `info registers` through human-monitor-command).
    pub qmp_socket: Option<PathBuf>,
    /// Let the appliance reboot in place (QEMU's default); otherwise a reboot ends QEMU.
    pub allow_reboot: bool,
    /// The guest kit's kit.img, attached read-only as a virtio disk with serial
    /// [`crate::guestkit::KIT_SERIAL`].
    pub guest_kit: Option<PathBuf>,
    /// More TCP forwards (loopback port here, port in the guest), beside the API's.
    pub forwards: Vec<(u16, u16)>,
}

/// `HOSTPORT:GUESTPORT` of `image run --forward`.
pub fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let (host, guest) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HOSTPORT:GUESTPORT"))?;
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{p:?} in {s:?} is not a TCP port (1-65535)")),
    };
    Ok((port(host)?, port(guest)?))
}

pub struct Booted {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub ready_after: Duration,
}

/// OVMF's code and this run's own copy of its variable store (written at boot).
fn ovmf(cmd: &mut Command, dir: &Path) -> Result<()> {
    let vars = dir.join("OVMF_VARS.fd");
    fs::copy(OVMF_VARS, &vars)
        .with_context(|| format!("copying {OVMF_VARS} (package ovmf; run ci/deps)"))?;
    cmd.arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    Ok(())
}

/// Picks a loopback port nobody listens on (there is a small race until QEMU binds it; QEMU
/// then fails to start and the error says so).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
    Ok(l.local_addr().context("reading the bound port")?.port())
}

/// Starts QEMU and waits until the API is up. On failure QEMU is killed and the error carries
/// the end of the console log.
pub fn boot(opt: &RunOptions, detach: bool) -> Result<Booted> {
    let vmlinuz = opt.dir.join("vmlinuz");
    let initrd = opt.dir.join("initrd.img");
    let iso = opt.dir.join(media::iso_name());
    let pxe = opt.dir.join(media::PXE_DIR);
    let needs = match opt.boot {
        Boot::Direct => vec![&vmlinuz, &initrd],
        Boot::Iso | Boot::Uefi | Boot::Stick => vec![&iso],
        Boot::Pxe => vec![&pxe],
        Boot::Disk | Boot::DiskUefi => match opt.disks.first() {
            Some(d) => vec![d],
            None => bail!("--boot disk boots the first --disk: give one"),
        },
    };
    for f in needs {
        if !f.exists() {
            bail!(
                "{} is missing: run `cargo run -p image -- build` first",
                f.display()
            );
        }
    }
    let port = match opt.port {
        Some(p) => p,
        None => free_port()?,
    };
    let log = opt
        .log
        .clone()
        .unwrap_or_else(|| opt.dir.join("console.log"));
    // A stale log could already contain the ready line from an earlier boot.
    match fs::remove_file(&log) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", log.display())),
    }
    if let Some(parent) = log.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }

    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", &opt.accel, "-cpu", "max"])
        .args(["-m", &opt.memory_mib.to_string()])
        .args(["-smp", &opt.cpus.to_string()])
        .arg("-nographic")
        // Named threads ("CPU 0/TCG"): a stuck appliance's QEMU then shows which vCPU spins.
        .args(["-name", "cairn,debug-threads=on"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-monitor", "none"])
        .stdin(Stdio::null());
    if !opt.allow_reboot {
        cmd.arg("-no-reboot");
    }
    let mut netdev = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{GUEST_API_PORT}");
    for (host, guest) in &opt.forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    // No option ROM unless booting from the network: iPXE's ROM only costs boot time.
    let mut nic = "e1000,netdev=n0,romfile=".to_string();
    let extra = opt
        .append
        .as_deref()
        .map(|a| format!(" {a}"))
        .unwrap_or_default();
    match opt.boot {
        Boot::Direct => {
            cmd.arg("-kernel")
                .arg(&vmlinuz)
                .arg("-initrd")
                .arg(&initrd)
                .arg("-append")
                // A live boot like the ISO's: it keeps its initramfs for host.install.
                .arg(format!("console=ttyS0 panic=-1 quiet retain_initrd{extra}"));
        }
        Boot::Iso => {
            // The CD first, also when a disk to install onto is attached.
            cmd.arg("-cdrom").arg(&iso).args(["-boot", "order=d"]);
        }
        Boot::Uefi => {
            ovmf(&mut cmd, &opt.dir)?;
            cmd.arg("-cdrom").arg(&iso);
        }
        Boot::Disk => {}
        Boot::DiskUefi => ovmf(&mut cmd, &opt.dir)?,
        Boot::Stick => {
            let file = iso.display().to_string().replace(',', ",,");
            cmd.arg("-drive")
                .arg(format!(
                    "file={file},if=none,id=stick,format=raw,readonly=on"
                ))
                .args(["-device", "usb-ehci,id=ehci"])
                .args(["-device", "usb-storage,bus=ehci.0,drive=stick,bootindex=0"]);
        }
        Boot::Pxe => {
            // QEMU's own TFTP server and iPXE ROM (package ipxe-qemu): DHCP names the iPXE
            // script, which fetches the kernel and initramfs over TFTP.
            // Extra parameters go into this run's own copy of the directory's script.
            let tftp = match &opt.append {
                None => pxe.clone(),
                Some(append) => {
                    media::pxe_with(&pxe, &opt.dir.join(format!("pxe-{port}")), append)?
                }
            };
            netdev.push_str(&format!(
                ",tftp={},bootfile={}",
                tftp.display(),
                media::IPXE_SCRIPT
            ));
            nic = "e1000,netdev=n0".to_string();
            cmd.args(["-boot", "n"]);
        }
    }
    if let Some(dir) = &opt.tftp {
        if opt.boot == Boot::Pxe {
            bail!("--tftp: a PXE boot serves its PXE directory over TFTP");
        }
        netdev.push_str(&format!(",tftp={}", dir.display()));
    }
    if let Some(mac) = &opt.mac {
        nic.push_str(&format!(",mac={mac}"));
    }
    cmd.args(["-netdev", &netdev, "-device", &nic]);
    // A hardware watchdog, as servers have (init arms it on a trial boot); it resets the
    // machine, which ends QEMU under -no-reboot.
    cmd.args(["-device", "i6300esb"]);
    if let Some(sock) = &opt.shell_socket {
        let _ = fs::remove_file(sock);
        cmd.arg("-serial")
            .arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    if let Some(sock) = &opt.qmp_socket {
        let _ = fs::remove_file(sock);
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    for (i, disk) in opt.disks.iter().enumerate() {
        if !disk.is_file() {
            bail!("the disk {} is missing", disk.display());
        }
        let file = disk.display().to_string().replace(',', ",,");
        let boot = matches!(opt.boot, Boot::Disk | Boot::DiskUefi) && i == 0;
        cmd.arg("-drive")
            .arg(format!("file={file},if=none,id=disk{i},format=raw"))
            .arg("-device")
            .arg(format!(
                "virtio-blk-pci,drive=disk{i}{}",
                if boot { ",bootindex=0" } else { "" }
            ));
    }
    if let Some(kit) = &opt.guest_kit {
        if !kit.is_file() {
            bail!("the guest kit {} is missing", kit.display());
        }
        // QEMU's option syntax doubles commas inside values.
        let file = kit.display().to_string().replace(',', ",,");
        cmd.arg("-drive")
            .arg(format!("file={file},if=none,id=kit,format=raw,readonly=on"))
            .args([
                "-device",
                &format!(
                    "virtio-blk-pci,drive=kit,serial={}",
                    crate::guestkit::KIT_SERIAL
                ),
            ]);
    }
    if detach {
        // Its own process group: a Ctrl-C in the caller's terminal must not reach a VM that
        // was asked to outlive this command. QEMU's own errors go next to the console log.
        let err_path = log.with_extension("qemu-stderr");
        let err = fs::File::create(&err_path)
            .with_context(|| format!("creating {}", err_path.display()))?;
        // With -no-reboot a reset of the appliance (a triple fault in its kernel) ends QEMU
        // without a word anywhere; cpu_reset logs "Triple fault" and the CPU state before
        // each reset, so a vanished QEMU leaves its cause behind. Quiet otherwise: a few
        // resets at power-on.
        cmd.args(["-d", "cpu_reset,guest_errors", "-D"])
            .arg(log.with_extension("qemu-log"));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdout(Stdio::null()).stderr(err);
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!("{QEMU} is not installed (package qemu-system-x86; run ci/deps)");
        }
        Err(e) => return Err(e).context("starting QEMU"),
    };

    match wait_ready(&mut child, port, &log, opt.timeout, started, opt.floor) {
        Ok(ready_after) => Ok(Booted {
            child,
            port,
            log,
            ready_after,
        }),
        Err(e) => {
            // Best effort: the error below is what matters.
            let _ = child.kill();
            let _ = child.wait();
            Err(e.context(format!(
                "the appliance did not become ready; last console lines ({}):\n{}",
                log.display(),
                tail(&log, 40)
            )))
        }
    }
}

fn wait_ready(
    child: &mut Child,
    port: u16,
    log: &Path,
    timeout: Duration,
    started: Instant,
    floor: bool,
) -> Result<Duration> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            bail!("QEMU exited ({status}) before the API was ready");
        }
        let logged = fs::read(log)
            .map(|b| String::from_utf8_lossy(&b).contains(READY_LINE))
            .unwrap_or(false);
        // The hostfwd socket accepts connections even when nothing listens in the guest (slirp
        // then closes them), so a bare TCP connect proves nothing: require a TLS reply.
        if logged && (floor || tls_answers(port)) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "timed out after {}s (ready line seen: {logged})",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when a TLS server answers a ClientHello on the forwarded port (with a handshake record
/// or an alert — either means apid's TLS listener is there).
pub fn tls_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_secs(3))).is_err()
        || s.write_all(&client_hello()).is_err()
    {
        return false;
    }
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1) if b[0] == 0x16 || b[0] == 0x15)
}

/// A minimal TLS 1.2 ClientHello with the suites rustls offers (ECDHE + AES-GCM/ChaCha20).
pub(crate) fn client_hello() -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, ty: u16, body: &[u8]) {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let suites: &[u8] = &[
        0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30, 0xcc, 0xa9, 0xcc, 0xa8,
    ];
    let mut exts = Vec::new();
    ext(&mut exts, 0x000a, &[0, 6, 0, 0x1d, 0, 0x17, 0, 0x18]); // x25519, P-256, P-384
    ext(&mut exts, 0x000b, &[1, 0]); // uncompressed points
    ext(
        &mut exts,
        0x000d,
        &[0, 12, 4, 3, 8, 4, 4, 1, 5, 3, 8, 5, 5, 1], // ECDSA/RSA-PSS/RSA with SHA-2
    );
    ext(&mut exts, 0x0017, &[]); // extended master secret
    let mut body = vec![3, 3];
    body.extend((0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a)); // "random": not a secret here
    body.push(0); // no session id
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(suites);
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// The last `n` lines of a file, or a note when it cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

pub fn read_token(dir: &Path) -> Result<String> {
    let p = dir.join("token");
    let t = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(t.trim().to_string())
}

/// `image run`.
pub fn run(opt: &RunOptions, detach: bool) -> Result<i32> {
    // An image built without a config has no token file: its console prints a one-time one.
    let token = read_token(&opt.dir).unwrap_or_else(|_| {
        "none in the image (maintenance mode: the console shows a one-time token)".into()
    });
    let mut b = boot(opt, detach)?;
    let url = format!("https://127.0.0.1:{}", b.port);
    println!("API: {url}/RPC2");
    println!("token: {token} (in {})", opt.dir.join("token").display());
    // What a client pins (cairnctl, curl): apid made the certificate at the first boot.
    let fingerprint = match crate::tlsprobe::server_certificate(b.port) {
        Ok(der) => {
            let fp = model::token::cert_fingerprint(&der);
            println!("certificate: {fp}");
            Some(fp)
        }
        Err(e) => {
            println!("certificate: not read ({e:#})");
            None
        }
    };
    for line in fs::read_to_string(opt.dir.join(crate::appliance::BUNDLED_LIST))
        .unwrap_or_default()
        .lines()
    {
        if let Some((name, digest)) = line.split_once(' ') {
            println!("bundled template: {name} {digest} (source bundled:{name})");
        }
    }
    let env = opt.dir.join(ENV_FILE);
    write_env(
        &env,
        &url,
        read_token(&opt.dir).ok().as_deref(),
        fingerprint.as_deref(),
    )?;
    println!(
        "environment for cairnctl: {} (`. {}`)",
        env.display(),
        env.display()
    );
    println!("ready in {:.1}s", b.ready_after.as_secs_f64());
    println!("console log: {}", b.log.display());
    if detach {
        let pid_file = opt.dir.join("qemu.pid");
        fs::write(&pid_file, format!("{}\n", b.child.id()))
            .with_context(|| format!("writing {}", pid_file.display()))?;
        println!("qemu pid: {} ({})", b.child.id(), pid_file.display());
        return Ok(0);
    }
    // Foreground: QEMU shares our process group, so Ctrl-C reaches it too.
    let status = b.child.wait().context("waiting for QEMU")?;
    println!("QEMU exited: {status}");
    Ok(status.code().unwrap_or(1))
}

/// The file `image run` leaves in the image directory for a shell to source: the running
/// appliance's CAIRN_URL, CAIRN_TOKEN and CAIRN_FINGERPRINT (the one booted last).
pub const ENV_FILE: &str = "env";

/// Writes the environment file whole (a temporary file renamed over it), readable by its owner
/// only: it holds the token.
fn write_env(path: &Path, url: &str, token: Option<&str>, fingerprint: Option<&str>) -> Result<()> {
    let mut text = format!(
        "# The appliance `image run` booted last (source this file: `. {}`).\n\
         export CAIRN_URL={url}\n",
        path.display()
    );
    if let Some(t) = token {
        text.push_str(&format!("export CAIRN_TOKEN={t}\n"));
    }
    if let Some(f) = fingerprint {
        text.push_str(&format!("export CAIRN_FINGERPRINT={f}\n"));
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    crate::token::save(&tmp, text.trim_end())?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// `image bench`: `n` cold boots, boot → API-ready each, and the median.
pub fn bench(opt: &RunOptions, n: usize) -> Result<()> {
    let mut times = Vec::with_capacity(n);
    for i in 1..=n {
        let mut o = opt.clone();
        o.port = None;
        let mut b = boot(&o, false).with_context(|| format!("boot {i} of {n}"))?;
        let t = b.ready_after.as_secs_f64();
        println!("boot {i}: {t:.2}s");
        times.push(t);
        b.child.kill().context("stopping QEMU")?;
        b.child.wait().context("waiting for QEMU")?;
    }
    println!(
        "boot -> API ready: median {:.2}s over {n} boots ({})",
        median(&times),
        times
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_two_ports() {
        assert_eq!(parse_forward("3261:3260"), Ok((3261, 3260)));
        for bad in ["3260", "0:3260", "3261:x", "70000:1", ":3260"] {
            assert!(parse_forward(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn client_hello_lengths_are_consistent() {
        let h = client_hello();
        assert_eq!(h[0], 0x16);
        let rec_len = u16::from_be_bytes([h[3], h[4]]) as usize;
        assert_eq!(rec_len, h.len() - 5);
        let hs_len = u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize;
        assert_eq!(hs_len, h.len() - 9);
    }

    #[test]
    fn a_plain_listener_is_not_a_tls_server() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 16];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        assert!(!tls_answers(port));
        t.join().unwrap();
    }
}
