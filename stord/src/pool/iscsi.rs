//! An iscsi pool: the LUNs of a SAN target, attached through open-iscsi (iscsid + iscsiadm),
//! each LUN a volume (`lunN`, its SCSI disk `/dev/sdX`). The SAN makes and deletes LUNs:
//! this pool lists them and refuses to make, grow or delete one.
//!
//! Making the pool: every portal is probed (a clear error within [`PROBE`] for one that does
//! not answer), asked whether it offers the target (SendTargets discovery), and logged in to,
//! with CHAP when the source carries a user and secret. A target answers discovery with the
//! portal address it binds, which behind NAT (QEMU's user network) is not the one dialled:
//! the node record stord logs in with is made for the portal as given. Each portal gives a
//! session and each session its own disk per LUN (there is no dm-multipath in the image): a
//! LUN's volume is its disk on the first portal, in the source's order, whose session has it.
//!
//! stord starts iscsid when it does not answer (it daemonizes: init does not supervise it,
//! and it outlives a stord restart with its sessions). No udev in the image: the disks are
//! found in sysfs and their device nodes made when devtmpfs lacks them.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model::storage::{PoolInfo, PoolKind, PoolSpec, VolumeInfo};

use super::{Backend, StoreError};

/// How long the create waits for a portal to accept a connection.
pub const PROBE: Duration = Duration::from_secs(5);
/// The longest one iscsiadm call may take (its own login timeouts are shorter, see `login`).
const ISCSIADM_WAIT: Duration = Duration::from_secs(90);
/// How long the LUNs' disks may take to appear after a login (the SCSI scan is asynchronous).
const SCAN_WAIT: Duration = Duration::from_secs(20);
const ISCSIADM: &str = "/usr/sbin/iscsiadm";
const ISCSID: &str = "/usr/sbin/iscsid";
const ETC: &str = "/etc/iscsi";
/// iscsiadm's lock directory, which it does not make.
const LOCK_DIR: &str = "/run/lock/iscsi";
const ISCSI_PORT: u16 = 3260;
/// iscsiadm's exit code when the session is logged in already.
const SESSION_EXISTS: i32 = 15;
const LOGIN_AUTH_FAILED: i32 = 24;
const NO_OBJECTS: i32 = 21;

/// `iscsi://[USER%SECRET@]PORTAL[,PORTAL…]/IQN[/LUN]`, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct IscsiSource {
    /// `host:port` (`[v6]:port`), in the order given.
    pub portals: Vec<String>,
    pub iqn: String,
    /// Only this LUN is the pool's; None: every LUN of the target.
    pub lun: Option<u32>,
    /// CHAP's (user, secret).
    pub chap: Option<(String, String)>,
}

impl std::fmt::Debug for IscsiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The source without its secret: what pool.info shows and the log says.
impl std::fmt::Display for IscsiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "iscsi://")?;
        if let Some((user, _)) = &self.chap {
            write!(f, "{user}@")?;
        }
        write!(f, "{}/{}", self.portals.join(","), self.iqn)?;
        if let Some(lun) = self.lun {
            write!(f, "/{lun}")?;
        }
        Ok(())
    }
}

fn is_iqn(s: &str) -> bool {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    ok_chars
        && s.len() <= 223
        && ((s.starts_with("iqn.") && s.len() > 4)
            || (s.starts_with("eui.") && s.len() == 20)
            || s.starts_with("naa."))
}

/// A portal as iscsiadm takes it: `host:port` with the default port added.
fn portal(p: &str) -> Option<String> {
    let (host, port) = match p.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after.strip_prefix(':') {
                Some(port) => port,
                None if after.is_empty() => "",
                None => return None,
            };
            (format!("[{v6}]"), port)
        }
        None => match p.split_once(':') {
            Some((h, port)) => (h.to_string(), port),
            None => (p.to_string(), ""),
        },
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    let port = if port.is_empty() {
        ISCSI_PORT
    } else {
        port.parse::<u16>().ok().filter(|p| *p != 0)?
    };
    host_ok.then(|| format!("{host}:{port}"))
}

pub fn parse_source(source: &str) -> Result<IscsiSource, StoreError> {
    let bad = |why: &str| {
        StoreError::InvalidArgs(format!(
            "source {:?} is not an iSCSI target \
             (iscsi://[USER%SECRET@]PORTAL[,PORTAL…]/IQN[/LUN]): {why}",
            // The secret stays out of the answer and the log.
            source.split_once('@').map_or(source, |(_, rest)| rest)
        ))
    };
    let rest = source
        .strip_prefix("iscsi://")
        .ok_or_else(|| bad("it does not start with iscsi://"))?;
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("no /IQN after the portal"))?;
    let (chap, portals) = match authority.rsplit_once('@') {
        Some((cred, portals)) => {
            let (user, secret) = cred
                .split_once('%')
                .ok_or_else(|| bad("CHAP is given as USER%SECRET@"))?;
            let printable = |s: &str| {
                !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_graphic())
            };
            if !printable(user) || !printable(secret) {
                return Err(bad("CHAP's user and secret are printable ASCII, not empty"));
            }
            // RFC 7143: a CHAP secret of 12 bytes at least; targets refuse shorter ones.
            if !(12..=16).contains(&secret.len()) {
                return Err(bad("a CHAP secret has 12 to 16 characters"));
            }
            (Some((user.to_string(), secret.to_string())), portals)
        }
        None => (None, authority),
    };
    let portals = portals
        .split(',')
        .map(|p| portal(p).ok_or_else(|| bad(&format!("{p:?} is not HOST[:PORT]"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut parts = path.split('/');
    let iqn = parts.next().unwrap_or_default();
    if !is_iqn(iqn) {
        return Err(bad(&format!(
            "{iqn:?} is not a target name (iqn.YYYY-MM.domain:name)"
        )));
    }
    let lun = match parts.next() {
        None | Some("") => None,
        Some(n) => Some(
            n.parse::<u32>()
                .map_err(|_| bad(&format!("LUN {n:?} is not a number")))?,
        ),
    };
    if parts.next().is_some_and(|p| !p.is_empty()) {
        return Err(bad("more after the LUN"));
    }
    Ok(IscsiSource {
        portals,
        iqn: iqn.to_string(),
        lun,
        chap,
    })
}

/// The targets SendTargets discovery lists (`ADDRESS:PORT,TPGT IQN` lines).
pub fn discovered_targets(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect()
}

/// One LUN's disk, as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub lun: u32,
    /// `sdb`.
    pub block: String,
    /// `major:minor`.
    pub dev: String,
    pub size_bytes: u64,
}

/// The iSCSI sessions to `iqn` through `portal` (`host:port`): their numbers, from
/// /sys/class/iscsi_session and /sys/class/iscsi_connection.
pub fn sessions(sys: &Path, iqn: &str, portal: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir(sys.join("class/iscsi_session")) else {
        return found;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix("session")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let read = |p: PathBuf| std::fs::read_to_string(p).map(|s| s.trim().to_string());
        if read(entry.path().join("targetname")).ok().as_deref() != Some(iqn) {
            continue;
        }
        let conn = sys.join(format!("class/iscsi_connection/connection{n}:0"));
        let (Ok(addr), Ok(port)) = (
            read(conn.join("persistent_address")),
            read(conn.join("persistent_port")),
        ) else {
            continue;
        };
        if same_portal(&addr, &port, portal) {
            found.push(n);
        }
    }
    found.sort_unstable();
    found
}

/// Whether the kernel's (address, port) is `portal`; the portal may name its host, which
/// is then compared by what it resolves to.
fn same_portal(addr: &str, port: &str, portal: &str) -> bool {
    let Some((host, want_port)) = portal.rsplit_once(':') else {
        return false;
    };
    if port != want_port {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == addr {
        return true;
    }
    (host, 0)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.any(|a| a.ip().to_string() == addr))
}

/// The disks of session `n`: `device/target*/H:C:T:LUN/block/sdX` under its sysfs entry.
pub fn session_disks(sys: &Path, n: u32) -> Vec<Disk> {
    let mut disks = Vec::new();
    let session = sys.join(format!("class/iscsi_session/session{n}/device"));
    for target in std::fs::read_dir(&session).into_iter().flatten().flatten() {
        if !target.file_name().to_string_lossy().starts_with("target") {
            continue;
        }
        for lun in std::fs::read_dir(target.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = lun.file_name().to_string_lossy().into_owned();
            // H:C:T:L; LUN 0 of many targets is their controller, without a disk.
            let Some(number) = name
                .rsplit(':')
                .next()
                .and_then(|l| l.parse::<u32>().ok())
                .filter(|_| name.split(':').count() == 4)
            else {
                continue;
            };
            for block in std::fs::read_dir(lun.path().join("block"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let b = block.file_name().to_string_lossy().into_owned();
                let read = |f: &str| {
                    std::fs::read_to_string(sys.join("block").join(&b).join(f))
                        .map(|s| s.trim().to_string())
                };
                let (Ok(dev), Ok(sectors)) = (read("dev"), read("size")) else {
                    continue;
                };
                let Ok(sectors) = sectors.parse::<u64>() else {
                    continue;
                };
                disks.push(Disk {
                    lun: number,
                    block: b,
                    dev,
                    // sysfs counts 512-byte sectors whatever the disk's block size.
                    size_bytes: sectors.saturating_mul(512),
                });
            }
        }
    }
    disks.sort_by_key(|d| d.lun);
    disks
}

/// Whether session `n` has a disk LUN (SCSI type 0) whose block device is not there yet.
pub fn disks_pending(sys: &Path, n: u32) -> bool {
    let session = sys.join(format!("class/iscsi_session/session{n}/device"));
    std::fs::read_dir(&session)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| t.file_name().to_string_lossy().starts_with("target"))
        .flat_map(|t| std::fs::read_dir(t.path()).into_iter().flatten().flatten())
        .filter(|l| l.file_name().to_string_lossy().split(':').count() == 4)
        .any(|l| {
            let disk =
                std::fs::read_to_string(l.path().join("type")).is_ok_and(|t| t.trim() == "0");
            let block =
                std::fs::read_dir(l.path().join("block")).is_ok_and(|mut d| d.next().is_some());
            disk && !block
        })
}

/// Runs iscsiadm; its exit code and what it printed (stdout then stderr), or an error when
/// it cannot run or takes longer than [`ISCSIADM_WAIT`] (then it is killed).
fn iscsiadm(args: &[&str]) -> Result<(i32, String), StoreError> {
    let mut child = Command::new(ISCSIADM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| StoreError::Failed(format!("{ISCSIADM}: {e} (open-iscsi is missing)")))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > ISCSIADM_WAIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StoreError::Unreachable(format!(
                    "iscsiadm {} took over {} s; given up",
                    shown(args),
                    ISCSIADM_WAIT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(StoreError::Failed(format!("iscsiadm: {e}"))),
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    Ok((status.code().unwrap_or(-1), out))
}

/// An iscsiadm command line for messages, the CHAP secret left out.
fn shown(args: &[&str]) -> String {
    // `-n node.session.auth.password -v SECRET`: the value two after the key.
    let secret = args
        .iter()
        .position(|a| *a == "node.session.auth.password")
        .map(|i| i + 2);
    args.iter()
        .enumerate()
        .map(|(i, a)| if Some(i) == secret { "…" } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}

fn iscsiadm_ok(args: &[&str]) -> Result<String, StoreError> {
    match iscsiadm(args)? {
        (0, out) => Ok(out),
        (code, out) => Err(StoreError::Failed(format!(
            "iscsiadm {} failed ({code}): {}",
            shown(args),
            out.trim()
        ))),
    }
}

/// Whether iscsid answers on its abstract socket.
fn iscsid_answers() -> bool {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(b"ISCSIADM_ABSTRACT_NAMESPACE")
        .and_then(|a| std::os::unix::net::UnixStream::connect_addr(&a))
        .is_ok()
}

/// Starts iscsid unless it runs; first the initiator's name (from the host name) and a
/// configuration where the appliance has none.
fn ensure_iscsid() -> Result<(), StoreError> {
    if iscsid_answers() {
        return Ok(());
    }
    let etc = Path::new(ETC);
    // The appliance's /etc/iscsi points into /run (its root is read-only): make the target.
    let real = std::fs::read_link(etc).unwrap_or_else(|_| etc.to_path_buf());
    for dir in [real.as_path(), Path::new(LOCK_DIR)] {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Failed(format!("{}: {e}", dir.display())))?;
    }
    let name_file = etc.join("initiatorname.iscsi");
    if !name_file.exists() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_default();
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let name = format!("InitiatorName=iqn.2026-12.org.cairn:{}\n", host);
        model::files::write_atomic(&name_file, name.as_bytes())
            .map_err(|e| StoreError::Failed(format!("{}: {e}", name_file.display())))?;
    }
    let conf = etc.join("iscsid.conf");
    if !conf.exists() {
        // Sessions are stord's to make: none at iscsid's start, no automatic start by
        // iscsiadm through systemd.
        let text = "node.startup = manual\nnode.session.scan = auto\n";
        model::files::write_atomic(&conf, text.as_bytes())
            .map_err(|e| StoreError::Failed(format!("{}: {e}", conf.display())))?;
    }
    let status = Command::new(ISCSID)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| StoreError::Failed(format!("{ISCSID}: {e} (open-iscsi is missing)")))?;
    if !status.success() {
        return Err(StoreError::Failed(format!(
            "iscsid did not start: {status}"
        )));
    }
    let started = Instant::now();
    while !iscsid_answers() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(StoreError::Failed(
                "iscsid started but does not answer on its socket".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("iscsid started");
    Ok(())
}

fn probe(portal: &str) -> Result<(), StoreError> {
    let addrs: Vec<SocketAddr> = portal
        .to_socket_addrs()
        .map_err(|e| StoreError::InvalidArgs(format!("portal {portal}: {e}")))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, PROBE) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(StoreError::Unreachable(format!(
        "iSCSI portal {portal} does not answer: {} (waited at most {} s)",
        last.map_or_else(|| "no address".to_string(), |e| e.to_string()),
        PROBE.as_secs()
    )))
}

/// Asks `portal` which targets it offers; the discovery's records are dropped (they hold the
/// address the target sees itself at, see the module's comment).
fn discover(portal: &str, iqn: &str) -> Result<(), StoreError> {
    let args = [
        "-m",
        "discovery",
        "-t",
        "sendtargets",
        "-p",
        portal,
        "-o",
        "nonpersistent",
    ];
    let out = match iscsiadm(&args)? {
        (0, out) => out,
        (NO_OBJECTS, _) => String::new(),
        (code, out) => {
            return Err(StoreError::Failed(format!(
                "discovery at {portal} failed ({code}): {}",
                out.trim()
            )));
        }
    };
    let offered = discovered_targets(&out);
    if offered.contains(&iqn) {
        return Ok(());
    }
    Err(StoreError::NotFound(format!(
        "portal {portal} does not offer target {iqn}; it offers {}",
        if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        }
    )))
}

/// The node record for (iqn, portal), made anew with the pool's CHAP and short login
/// timeouts, then the login (a session that exists already is taken as it is).
fn login(source: &IscsiSource, portal: &str) -> Result<(), StoreError> {
    let node = ["-m", "node", "-T", source.iqn.as_str(), "-p", portal];
    fn with<'a>(node: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
        [node, more].concat()
    }
    iscsiadm_ok(&with(&node, &["-o", "new"]))?;
    let mut settings = vec![
        ("node.startup", "manual"),
        ("node.conn[0].timeo.login_timeout", "10"),
        ("node.session.initial_login_retry_max", "1"),
    ];
    match &source.chap {
        Some((user, secret)) => settings.extend([
            ("node.session.auth.authmethod", "CHAP"),
            ("node.session.auth.username", user.as_str()),
            ("node.session.auth.password", secret.as_str()),
        ]),
        None => settings.push(("node.session.auth.authmethod", "None")),
    }
    for (key, value) in settings {
        iscsiadm_ok(&with(&node, &["-o", "update", "-n", key, "-v", value]))?;
    }
    match iscsiadm(&with(&node, &["--login"]))? {
        (0 | SESSION_EXISTS, _) => Ok(()),
        (LOGIN_AUTH_FAILED, _) => Err(StoreError::InvalidArgs(format!(
            "target {} at {portal} refused the login: {}",
            source.iqn,
            if source.chap.is_some() {
                "wrong CHAP user or secret"
            } else {
                "it wants CHAP: give iscsi://USER%SECRET@…"
            }
        ))),
        (code, out) => Err(StoreError::Failed(format!(
            "login to {} at {portal} failed ({code}): {}",
            source.iqn,
            out.trim()
        ))),
    }
}

fn logout(iqn: &str, portal: &str) {
    let node = ["-m", "node", "-T", iqn, "-p", portal];
    match iscsiadm(&[&node[..], &["--logout"]].concat()) {
        Ok((0 | NO_OBJECTS, _)) => {}
        Ok((code, out)) => {
            tracing::warn!(iqn, portal, code, out = out.trim(), "iSCSI logout failed")
        }
        Err(e) => tracing::warn!(iqn, portal, error = %e, "iSCSI logout failed"),
    }
    let _ = iscsiadm(&[&node[..], &["-o", "delete"]].concat());
}

/// `/dev/NAME` for a disk, made (block, `major:minor`) when devtmpfs has not.
fn device_node(dev_dir: &Path, disk: &Disk) -> Result<PathBuf, StoreError> {
    let path = dev_dir.join(&disk.block);
    if std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_block_device()) {
        return Ok(path);
    }
    let (major, minor) = disk
        .dev
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .ok_or_else(|| StoreError::Failed(format!("{}: dev {:?}", disk.block, disk.dev)))?;
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        nix::sys::stat::makedev(major, minor),
    )
    .map_err(|e| StoreError::Failed(format!("mknod {}: {e}", path.display())))?;
    Ok(path)
}

pub struct IscsiPool {
    name: String,
    declared: bool,
    source: IscsiSource,
    /// Where the pool says it is: its source without the secret.
    location: PathBuf,
    /// The portals logged in to, in the source's order.
    logged_in: Vec<String>,
    sys: PathBuf,
    dev: PathBuf,
}

impl IscsiPool {
    /// Logs in to the target through each portal and waits for its LUNs' disks. A portal that
    /// fails is logged and left out when another works; when none does, the first failure is
    /// the answer and every session made is logged out.
    pub fn open(spec: &PoolSpec, declared: bool) -> Result<IscsiPool, StoreError> {
        let source = spec.source.as_deref().ok_or_else(|| {
            StoreError::InvalidArgs(format!(
                "iscsi pool {:?} needs source: iscsi://[USER%SECRET@]PORTAL/IQN",
                spec.name
            ))
        })?;
        if spec.path.is_some() || spec.options.is_some() {
            return Err(StoreError::InvalidArgs(format!(
                "iscsi pool {:?} takes source only (no path or options)",
                spec.name
            )));
        }
        let source = parse_source(source)?;
        ensure_iscsid()?;
        let mut logged_in = Vec::new();
        let mut first_error = None;
        for portal in &source.portals {
            let attached = probe(portal)
                .and_then(|()| discover(portal, &source.iqn))
                .and_then(|()| login(&source, portal));
            match attached {
                Ok(()) => logged_in.push(portal.clone()),
                Err(e) => {
                    tracing::warn!(pool = %spec.name, portal, error = %e, "portal left out");
                    let _ = iscsiadm(&[
                        "-m",
                        "node",
                        "-T",
                        &source.iqn,
                        "-p",
                        portal,
                        "-o",
                        "delete",
                    ]);
                    first_error.get_or_insert(e);
                }
            }
        }
        if logged_in.is_empty() {
            return Err(first_error
                .unwrap_or_else(|| StoreError::InvalidArgs("the source names no portal".into())));
        }
        let pool = IscsiPool {
            name: spec.name.clone(),
            declared,
            location: PathBuf::from(source.to_string()),
            source,
            logged_in,
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        };
        pool.settle();
        let disks = pool.disks();
        if disks.is_empty() {
            pool.release();
            return Err(StoreError::NotFound(format!(
                "target {} shows no disk{} after {} s",
                pool.source.iqn,
                pool.source
                    .lun
                    .map_or_else(String::new, |l| format!(" at LUN {l}")),
                SCAN_WAIT.as_secs()
            )));
        }
        tracing::info!(pool = %pool.name, source = %pool.source, luns = disks.len(), "iscsi pool logged in");
        Ok(pool)
    }

    /// Waits for the SCSI scan after a login: until every disk LUN (type 0) of the sessions
    /// has its block device and none came for a second, at most [`SCAN_WAIT`].
    fn settle(&self) {
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut since = Instant::now();
        while started.elapsed() < SCAN_WAIT {
            let disks = self.disks();
            if disks != seen {
                seen = disks;
                since = Instant::now();
            }
            let pending = self.logged_in.iter().any(|portal| {
                sessions(&self.sys, &self.source.iqn, portal)
                    .into_iter()
                    .any(|n| disks_pending(&self.sys, n))
            });
            if !seen.is_empty() && !pending && since.elapsed() >= Duration::from_secs(1) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pool's disks, one per LUN: from the first portal's session that has it.
    fn disks(&self) -> Vec<Disk> {
        let mut by_lun: std::collections::BTreeMap<u32, Disk> = Default::default();
        for portal in &self.logged_in {
            for n in sessions(&self.sys, &self.source.iqn, portal) {
                for disk in session_disks(&self.sys, n) {
                    if self.source.lun.is_none_or(|l| l == disk.lun) {
                        by_lun.entry(disk.lun).or_insert(disk);
                    }
                }
            }
        }
        by_lun.into_values().collect()
    }

    fn disk(&self, name: &str) -> Result<Disk, StoreError> {
        let lun = name.strip_prefix("lun").and_then(|n| n.parse::<u32>().ok());
        self.disks()
            .into_iter()
            .find(|d| Some(d.lun) == lun)
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no volume {}/{name} (its volumes are the target's LUNs: lunN)",
                    self.name
                ))
            })
    }

    fn refused(&self, what: &str) -> StoreError {
        StoreError::Conflict(format!(
            "cannot {what} a volume of iscsi pool {name:?}: the SAN makes LUNs; a LUN is a \
             volume of pool {name:?} (make, grow and delete LUNs on the target)",
            name = self.name
        ))
    }
}

impl Backend for IscsiPool {
    fn name(&self) -> &str {
        &self.name
    }

    fn declared(&self) -> bool {
        self.declared
    }

    fn location(&self) -> &Path {
        &self.location
    }

    fn makes_volumes(&self) -> bool {
        false
    }

    fn info(&self) -> Result<PoolInfo, StoreError> {
        let disks = self.disks();
        let capacity: u64 = disks.iter().map(|d| d.size_bytes).sum();
        Ok(PoolInfo {
            name: self.name.clone(),
            kind: PoolKind::Iscsi,
            path: self.location.display().to_string(),
            declared: self.declared,
            capacity_bytes: capacity,
            used_bytes: capacity,
            free_bytes: 0,
            provisioned_bytes: capacity,
            allocated_bytes: capacity,
            volumes: u32::try_from(disks.len()).unwrap_or(u32::MAX),
            overcommit_ratio: if capacity == 0 { 0.0 } else { 1.0 },
            overcommit_limit: None,
            warnings: Vec::new(),
        })
    }

    fn volume_names(&self) -> Vec<String> {
        self.disks()
            .iter()
            .map(|d| format!("lun{}", d.lun))
            .collect()
    }

    fn volume(&self, name: &str) -> Result<VolumeInfo, StoreError> {
        let disk = self.disk(name)?;
        let path = device_node(&self.dev, &disk)?;
        Ok(VolumeInfo {
            volume: format!("{}/{name}", self.name),
            size_bytes: disk.size_bytes,
            allocated_bytes: disk.size_bytes,
            path: path.display().to_string(),
            snapshots: Vec::new(),
            used_by: Vec::new(),
            copy: None,
        })
    }

    fn create_volume(&mut self, _: &str, _: u64, _: bool) -> Result<VolumeInfo, StoreError> {
        Err(self.refused("make"))
    }

    fn grow_volume(&mut self, _: &str, _: u64) -> Result<VolumeInfo, StoreError> {
        Err(self.refused("grow"))
    }

    fn delete_volume(&mut self, _: &str) -> Result<(), StoreError> {
        Err(self.refused("delete"))
    }

    fn snapshot(&mut self, _: &str, _: &str) -> Result<(VolumeInfo, &'static str), StoreError> {
        Err(self.refused("snapshot"))
    }

    fn delete_snapshot(&mut self, name: &str, snap: &str) -> Result<(), StoreError> {
        Err(StoreError::NotFound(format!(
            "no snapshot {}/{name}@{snap}: iscsi pools have none",
            self.name
        )))
    }

    fn clone_volume(
        &mut self,
        _: (&str, Option<&str>),
        _: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError> {
        Err(self.refused("clone"))
    }

    fn backup_snapshot(&mut self, _: &str) -> Result<PathBuf, StoreError> {
        Err(self.refused("snapshot (for a backup)"))
    }

    fn drop_backup_snapshot(&mut self, _: &Path) {}

    fn restore(&mut self, _: &Path, _: &str) -> Result<VolumeInfo, StoreError> {
        Err(self.refused("restore"))
    }

    /// Logs out of every session and drops the node records.
    fn release(&self) {
        for portal in &self.logged_in {
            logout(&self.source.iqn, portal);
        }
    }
}

#[cfg(test)]
mod tests;
