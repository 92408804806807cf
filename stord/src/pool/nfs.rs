//! An nfs pool: a NAS export mounted by the kernel's NFS client (v3 or v4), its volumes files
//! as in a dir pool (this pool wraps a [`DirPool`] on the mount point and delegates to it).
//!
//! There is no mount.nfs in the image: stord gives the kernel its text options itself. The
//! kernel then speaks the MOUNT protocol for v3 (`mountaddr=`, `mountproto=`) and needs the
//! server's address (`addr=`) for either version, so stord resolves the server name.
//!
//! A server that does not answer: the create probes its port first (a clear error within
//! [`PROBE`]), mount(2) runs on its own thread and is given up after [`MOUNT_WAIT`] (a mount
//! that succeeds later is taken down again), and the mount is `soft` by default
//! (`timeo=`/`retrans=` below): a file operation on a hung server fails after about 18 s
//! instead of hanging stord — whose requests run one at a time — for good. `hard` in the
//! pool's options trades that for guests that never see an I/O error.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use model::storage::{PoolInfo, PoolKind, PoolSpec, VolumeInfo};
use nix::mount::{MntFlags, MsFlags};

use super::{Backend, DirPool, StoreError};

/// How long the create waits for the server's port to accept a connection.
pub const PROBE: Duration = Duration::from_secs(5);
/// How long mount(2) may take (the server answers its port but not the protocol).
/// With the probe, within the 28 s apid gives pool.create.
pub const MOUNT_WAIT: Duration = Duration::from_secs(20);
const NFS_PORT: u16 = 2049;
const RPCBIND_PORT: u16 = 111;

/// `server:/export`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsSource {
    /// A name, an IPv4 address or an IPv6 one (without its brackets).
    pub server: String,
    pub export: String,
}

impl std::fmt::Display for NfsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.server.contains(':') {
            write!(f, "[{}]:{}", self.server, self.export)
        } else {
            write!(f, "{}:{}", self.server, self.export)
        }
    }
}

/// Parses `server:/export` (`[v6]:/export` for an IPv6 address).
pub fn parse_source(source: &str) -> Result<NfsSource, StoreError> {
    let bad = |why: &str| {
        StoreError::InvalidArgs(format!(
            "source {source:?} is not an NFS export (SERVER:/EXPORT, e.g. nas.lan:/srv/vms): {why}"
        ))
    };
    let (server, export) = match source.strip_prefix('[') {
        Some(rest) => {
            let (v6, export) = rest
                .split_once("]:")
                .ok_or_else(|| bad("an IPv6 address is written [ADDRESS]:/EXPORT"))?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address in the brackets"))?;
            (v6, export)
        }
        None => source
            .split_once(':')
            .ok_or_else(|| bad("no ':' between server and export"))?,
    };
    let name_ok = !server.is_empty()
        && server.len() <= 253
        && server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !name_ok {
        return Err(bad("the server is not a host name or an address"));
    }
    if !export.starts_with('/') {
        return Err(bad("the export is not an absolute path"));
    }
    if export.len() > 1024
        || export
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == ',')
    {
        return Err(bad("the export holds spaces, commas or control characters"));
    }
    Ok(NfsSource {
        server: server.to_string(),
        export: export.to_string(),
    })
}

/// The options a user may give (others, like `addr=`, are stord's to set).
const FLAGS: &[&str] = &[
    "soft",
    "hard",
    "softerr",
    "nolock",
    "lock",
    "ac",
    "noac",
    "cto",
    "nocto",
    "intr",
    "nointr",
    "sharecache",
    "nosharecache",
    "resvport",
    "noresvport",
    "fsc",
    "nofsc",
    "acl",
    "noacl",
    "rdirplus",
    "nordirplus",
    "ro",
    "rw",
];
const NUMBERS: &[&str] = &[
    "port",
    "mountport",
    "mountvers",
    "timeo",
    "retrans",
    "rsize",
    "wsize",
    "acregmin",
    "acregmax",
    "acdirmin",
    "acdirmax",
    "actimeo",
    "nconnect",
    "minorversion",
    "retry",
];
const WORDS: &[(&str, &[&str])] = &[
    ("vers", &["3", "4", "4.0", "4.1", "4.2"]),
    ("nfsvers", &["3", "4", "4.0", "4.1", "4.2"]),
    ("proto", &["tcp", "tcp6"]),
    ("mountproto", &["tcp", "tcp6", "udp", "udp6"]),
    (
        "sec",
        &["sys", "none", "krb5", "krb5i", "krb5p", "null", "unix"],
    ),
    ("lookupcache", &["all", "none", "pos", "positive"]),
    ("local_lock", &["all", "flock", "posix", "none"]),
];

/// The mount's options, checked: what stord sets when the user did not (`vers=4.1`, TCP,
/// `soft`, and for v3 `nolock`: NLM would need an rpcbind and statd in the appliance), then
/// the user's, then the addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// 3 or 4.
    pub major: u8,
    /// The kernel's option string, without `addr=`/`clientaddr=`/`mountaddr=`.
    pub text: String,
    /// The ports the server must answer on before mount(2) is tried.
    pub probe_ports: Vec<u16>,
}

pub fn mount_options(user: Option<&str>) -> Result<MountOptions, StoreError> {
    let mut given: Vec<(String, Option<String>)> = Vec::new();
    for opt in user.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        let bad = |why: String| StoreError::InvalidArgs(format!("options: {opt:?} {why}"));
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match value {
            None if FLAGS.contains(&key) => {}
            Some(v) if NUMBERS.contains(&key) => {
                v.parse::<u32>()
                    .map_err(|_| bad(format!("needs a number, not {v:?}")))?;
            }
            Some(v) => match WORDS.iter().find(|(k, _)| *k == key) {
                Some((_, allowed)) if allowed.contains(&v) => {}
                Some((_, allowed)) => {
                    return Err(bad(format!("is not one of {}", allowed.join(", "))));
                }
                None if matches!(key, "addr" | "clientaddr" | "mountaddr") => {
                    return Err(bad("is stord's to set (from the source's server)".into()));
                }
                None => return Err(bad("is not an NFS mount option stord passes on".into())),
            },
            None if NUMBERS.contains(&key) || WORDS.iter().any(|(k, _)| *k == key) => {
                return Err(bad("needs a value (KEY=VALUE)".into()));
            }
            None => return Err(bad("is not an NFS mount option stord passes on".into())),
        }
        if given.iter().any(|(k, _)| k == key) {
            return Err(bad("is given twice".into()));
        }
        given.push((key.to_string(), value.map(str::to_string)));
    }
    let has = |k: &str| given.iter().any(|(g, _)| g == k);
    let value = |k: &str| {
        given
            .iter()
            .find(|(g, _)| g == k)
            .and_then(|(_, v)| v.clone())
    };
    let vers = value("vers").or_else(|| value("nfsvers"));
    if has("vers") && has("nfsvers") {
        return Err(StoreError::InvalidArgs(
            "options: vers and nfsvers say the same; give one".into(),
        ));
    }
    let major = match vers.as_deref() {
        Some("3") => 3,
        _ => 4,
    };
    if has("soft") && has("hard") {
        return Err(StoreError::InvalidArgs(
            "options: soft and hard exclude each other".into(),
        ));
    }
    let mut text: Vec<String> = Vec::new();
    if vers.is_none() {
        text.push("vers=4.1".into());
    }
    if !has("proto") {
        text.push("proto=tcp".into());
    }
    if !has("hard") && !has("soft") && !has("softerr") {
        text.push("soft".into());
    }
    if !has("timeo") {
        // Tenths of a second; over TCP each retry waits one timeo longer: 3 + 6 + 9 s.
        text.push("timeo=30".into());
    }
    if !has("retrans") {
        text.push("retrans=2".into());
    }
    if major == 3 {
        if !has("mountproto") {
            text.push("mountproto=tcp".into());
        }
        if !has("lock") && !has("nolock") {
            text.push("nolock".into());
        }
    }
    text.extend(given.iter().map(|(k, v)| match v {
        Some(v) => format!("{k}={v}"),
        None => k.clone(),
    }));
    let port = |k: &str, default: u16| {
        value(k)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .unwrap_or(default)
    };
    let mut probe_ports = vec![port("port", NFS_PORT)];
    if major == 3 {
        // Without mountport= the kernel asks the server's rpcbind where MOUNT is.
        probe_ports.push(port("mountport", RPCBIND_PORT));
    }
    Ok(MountOptions {
        major,
        text: text.join(","),
        probe_ports,
    })
}

/// The server's address: the source's own, or the first its name resolves to.
fn resolve(server: &str) -> Result<IpAddr, StoreError> {
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok(ip);
    }
    (server, 0)
        .to_socket_addrs()
        .map_err(|e| StoreError::InvalidArgs(format!("NFS server {server:?}: {e}")))?
        .map(|a| a.ip())
        .next()
        .ok_or_else(|| StoreError::InvalidArgs(format!("NFS server {server:?} has no address")))
}

/// The address this host reaches `server` from (the route's source), which NFSv4 callbacks
/// come back to.
fn local_address(server: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(SocketAddr::new(server, NFS_PORT)).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The full option string mount(2) gets.
pub fn kernel_options(opts: &MountOptions, server: IpAddr, client: Option<IpAddr>) -> String {
    let mut text = format!("{},addr={server}", opts.text);
    if opts.major == 3 {
        text.push_str(&format!(",mountaddr={server}"));
    } else if let Some(client) = client {
        text.push_str(&format!(",clientaddr={client}"));
    }
    text
}

/// What is mounted on `path` now, topmost: (filesystem type, source), from the text of
/// /proc/self/mountinfo (octal escapes and all).
pub fn mounted_on(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    let want = path.display().to_string();
    mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m) == want))
        .filter_map(|l| {
            let (_, after) = l.split_once(" - ")?;
            let mut f = after.split(' ');
            Some((f.next()?.to_string(), unescape(f.next()?)))
        })
        .next_back()
}

fn mounted(path: &Path) -> Option<(String, String)> {
    mounted_on(&std::fs::read_to_string("/proc/self/mountinfo").ok()?, path)
}

fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(char::from(b)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unmount(path: &Path) {
    if let Err(e) = nix::mount::umount2(path, MntFlags::empty()) {
        // Busy, or the server is gone: let the kernel finish it when it can.
        tracing::warn!(path = %path.display(), error = %e, "unmounting lazily");
        let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
    }
}

pub struct NfsPool {
    dir: DirPool,
    source: NfsSource,
    /// The mount point is stord's (in its state), removed with the pool.
    own_dir: bool,
}

impl NfsPool {
    /// Mounts the export on `mountpoint` (unless it is mounted there already: stord was
    /// restarted) and takes it as a dir pool. Anything that fails leaves nothing mounted.
    pub fn open(
        spec: &PoolSpec,
        declared: bool,
        mountpoint: PathBuf,
    ) -> Result<NfsPool, StoreError> {
        let source = spec.source.as_deref().ok_or_else(|| {
            StoreError::InvalidArgs(format!(
                "nfs pool {:?} needs source: the export, SERVER:/EXPORT",
                spec.name
            ))
        })?;
        // path: where to mount it (a directory stord leaves in place); default its own.
        let own_dir = spec.path.is_none();
        let mountpoint = spec.path.as_ref().map_or(mountpoint, PathBuf::from);
        let source = parse_source(source)?;
        let opts = mount_options(spec.options.as_deref())?;
        let fresh = match mounted(&mountpoint) {
            None => {
                mount(&source, &opts, &mountpoint, own_dir)?;
                true
            }
            // Mounted by stord before it was restarted.
            Some((fstype, from)) if fstype.starts_with("nfs") && from == source.to_string() => {
                false
            }
            Some((fstype, from)) => {
                return Err(StoreError::Conflict(format!(
                    "{} has {fstype} {from} mounted on it; give a directory nothing is \
                     mounted on",
                    mountpoint.display()
                )));
            }
        };
        let dir = DirPool {
            name: spec.name.clone(),
            path: mountpoint.clone(),
            overcommit: spec.overcommit,
            declared,
        };
        match DirPool::open(dir) {
            Ok(dir) => {
                tracing::info!(pool = %spec.name, %source, at = %mountpoint.display(), fresh, "nfs pool mounted");
                Ok(NfsPool {
                    dir,
                    source,
                    own_dir,
                })
            }
            Err(e) => {
                unmount(&mountpoint);
                if own_dir {
                    let _ = std::fs::remove_dir(&mountpoint);
                }
                Err(e)
            }
        }
    }

    pub fn source(&self) -> &NfsSource {
        &self.source
    }
}

/// Mounts `source` on `at`, made when missing (and removed again if the mount fails and
/// `own_dir` says the directory is stord's).
fn mount(
    source: &NfsSource,
    opts: &MountOptions,
    at: &Path,
    own_dir: bool,
) -> Result<(), StoreError> {
    let server = resolve(&source.server)?;
    for port in &opts.probe_ports {
        let addr = SocketAddr::new(server, *port);
        TcpStream::connect_timeout(&addr, PROBE).map_err(|e| {
            StoreError::Unreachable(format!(
                "NFS server {} ({addr}) does not answer: {e} (waited at most {} s)",
                source.server,
                PROBE.as_secs()
            ))
        })?;
    }
    let options = kernel_options(opts, server, local_address(server));
    std::fs::create_dir_all(at)
        .map_err(|e| StoreError::Failed(format!("{}: {e}", at.display())))?;
    let (tx, rx) = mpsc::channel();
    let (device, target, data) = (source.to_string(), at.to_path_buf(), options.clone());
    // On its own thread: a server that takes the connection but never answers would keep
    // mount(2) — and stord's one request at a time — waiting far longer than the soft
    // timeouts say, while the kernel retries the MOUNT or EXCHANGE_ID call.
    let spawned = std::thread::Builder::new()
        .name("nfs-mount".into())
        .spawn(move || {
            let done = nix::mount::mount(
                Some(device.as_str()),
                &target,
                Some("nfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(data.as_str()),
            );
            if tx.send(done).is_err() && done.is_ok() {
                // Given up on already: take the late mount down again.
                tracing::warn!(at = %target.display(), "a mount given up on came late; unmounting");
                unmount(&target);
                let _ = std::fs::remove_dir(&target);
            }
        })
        .map_err(|e| StoreError::Failed(format!("cannot start the mount: {e}")))?;
    drop(spawned);
    let failed = |why: String| {
        if own_dir {
            let _ = std::fs::remove_dir(at);
        }
        format!("mounting {source} (options {options}): {why}")
    };
    match rx.recv_timeout(MOUNT_WAIT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(errno)) => {
            use nix::errno::Errno;
            let why = failed(explain(errno));
            Err(match errno {
                Errno::ETIMEDOUT
                | Errno::EIO
                | Errno::ECONNREFUSED
                | Errno::EHOSTUNREACH
                | Errno::ENETUNREACH => StoreError::Unreachable(why),
                Errno::ENOENT => StoreError::NotFound(why),
                Errno::EACCES | Errno::EPERM => StoreError::Conflict(why),
                _ => StoreError::Failed(why),
            })
        }
        Err(_) => Err(StoreError::Unreachable(failed(format!(
            "the server did not answer within {} s",
            MOUNT_WAIT.as_secs()
        )))),
    }
}

fn explain(errno: nix::errno::Errno) -> String {
    use nix::errno::Errno;
    match errno {
        Errno::ENODEV => format!("{errno}: the kernel has no NFS client (module nfs not loaded)"),
        Errno::EACCES | Errno::EPERM => {
            format!("{errno}: the server refuses this host the export")
        }
        Errno::ENOENT => format!("{errno}: the server has no such export"),
        Errno::EPROTONOSUPPORT => {
            format!("{errno}: the server does not speak this NFS version (see vers=)")
        }
        Errno::ETIMEDOUT | Errno::EIO => format!("{errno}: the server did not answer in time"),
        _ => errno.to_string(),
    }
}

impl Backend for NfsPool {
    fn name(&self) -> &str {
        self.dir.name()
    }

    fn declared(&self) -> bool {
        self.dir.declared()
    }

    fn location(&self) -> &Path {
        self.dir.location()
    }

    fn info(&self) -> Result<PoolInfo, StoreError> {
        let mut info = self.dir.info()?;
        info.kind = PoolKind::Nfs;
        Ok(info)
    }

    fn volume_names(&self) -> Vec<String> {
        self.dir.volume_names()
    }

    fn volume(&self, name: &str) -> Result<VolumeInfo, StoreError> {
        self.dir.volume(name)
    }

    fn create_volume(
        &mut self,
        name: &str,
        size: u64,
        full: bool,
    ) -> Result<VolumeInfo, StoreError> {
        self.dir.create_volume(name, size, full)
    }

    fn grow_volume(&mut self, name: &str, size: u64) -> Result<VolumeInfo, StoreError> {
        self.dir.grow_volume(name, size)
    }

    fn delete_volume(&mut self, name: &str) -> Result<(), StoreError> {
        self.dir.delete_volume(name)
    }

    fn snapshot(
        &mut self,
        name: &str,
        snap: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError> {
        self.dir.snapshot(name, snap)
    }

    fn delete_snapshot(&mut self, name: &str, snap: &str) -> Result<(), StoreError> {
        self.dir.delete_snapshot(name, snap)
    }

    fn clone_volume(
        &mut self,
        source: (&str, Option<&str>),
        name: &str,
    ) -> Result<(VolumeInfo, &'static str), StoreError> {
        self.dir.clone_volume(source, name)
    }

    fn backup_snapshot(&mut self, name: &str) -> Result<PathBuf, StoreError> {
        self.dir.backup_snapshot(name)
    }

    fn drop_backup_snapshot(&mut self, snapshot: &Path) {
        self.dir.drop_backup_snapshot(snapshot)
    }

    fn backups_dir(&self) -> Option<PathBuf> {
        Backend::backups_dir(&self.dir)
    }

    fn restore(&mut self, backup: &Path, name: &str) -> Result<VolumeInfo, StoreError> {
        self.dir.restore(backup, name)
    }

    /// Gives the export back as it was found (the pool's marker and empty directories go)
    /// and unmounts it.
    fn release(&self) {
        self.dir.release();
        let at = self.dir.location();
        unmount(at);
        if self.own_dir {
            let _ = std::fs::remove_dir(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            parse_source("nas.lan:/srv/vms").unwrap(),
            NfsSource {
                server: "nas.lan".into(),
                export: "/srv/vms".into()
            }
        );
        let v6 = parse_source("[fd00::2]:/x").unwrap();
        assert_eq!(v6.server, "fd00::2");
        assert_eq!(v6.to_string(), "[fd00::2]:/x");
        assert_eq!(
            parse_source("10.0.2.2:/").unwrap().to_string(),
            "10.0.2.2:/"
        );
        for (bad, why) in [
            ("nas.lan", "no ':'"),
            (":/x", "not a host name"),
            ("nas:srv", "not an absolute path"),
            ("[fd00::2:/x", "[ADDRESS]:/EXPORT"),
            ("[nas]:/x", "not an IPv6"),
            ("nas:/a b", "spaces"),
            ("nas:/a,vers=3", "commas"),
            ("n@s:/x", "not a host name"),
        ] {
            let e = parse_source(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn options_v4_by_default() {
        let o = mount_options(None).unwrap();
        assert_eq!(o.major, 4);
        assert_eq!(o.text, "vers=4.1,proto=tcp,soft,timeo=30,retrans=2");
        assert_eq!(o.probe_ports, vec![2049]);
        let ip: IpAddr = "10.0.2.2".parse().unwrap();
        let client: IpAddr = "10.0.2.15".parse().unwrap();
        assert_eq!(
            kernel_options(&o, ip, Some(client)),
            "vers=4.1,proto=tcp,soft,timeo=30,retrans=2,addr=10.0.2.2,clientaddr=10.0.2.15"
        );
    }

    #[test]
    fn options_v3_speak_mount_themselves() {
        let o = mount_options(Some("vers=3,port=20490,mountport=20491,hard")).unwrap();
        assert_eq!(o.major, 3);
        assert_eq!(
            o.text,
            "proto=tcp,timeo=30,retrans=2,mountproto=tcp,nolock,vers=3,port=20490,mountport=20491,hard"
        );
        assert_eq!(o.probe_ports, vec![20490, 20491]);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(kernel_options(&o, ip, Some(ip)).ends_with(",addr=192.0.2.9,mountaddr=192.0.2.9"));
        // Without mountport the kernel asks rpcbind: that port must answer.
        assert_eq!(
            mount_options(Some("vers=3")).unwrap().probe_ports,
            vec![2049, 111]
        );
        assert!(
            mount_options(Some("vers=3,lock"))
                .unwrap()
                .text
                .ends_with("mountproto=tcp,vers=3,lock")
        );
    }

    #[test]
    fn bad_options() {
        for (bad, why) in [
            ("addr=1.2.3.4", "stord's to set"),
            ("vers=5", "is not one of"),
            ("port=http", "needs a number"),
            ("soft,hard", "exclude each other"),
            ("timeo", "needs a value"),
            ("exec", "not an NFS mount option"),
            ("vers=3,nfsvers=3", "give one"),
            ("soft,soft", "twice"),
        ] {
            let e = mount_options(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/run/a\\040b"), "/run/a b");
        assert_eq!(unescape("/plain"), "/plain");
        let info = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                    40 30 0:50 / /var/lib/cairn/stord/mnt/nas4 rw,nosuid shared:1 - nfs4 \
                    10.0.2.2:/v4 rw,vers=4.1,addr=10.0.2.2\n\
                    41 30 0:51 / /srv/my\\040pool rw - tmpfs tmpfs rw\n\
                    42 41 0:52 / /srv/my\\040pool rw - nfs nas:/x rw,vers=3\n";
        assert_eq!(
            mounted_on(info, Path::new("/var/lib/cairn/stord/mnt/nas4")),
            Some(("nfs4".into(), "10.0.2.2:/v4".into()))
        );
        // The topmost of two mounts on one directory.
        assert_eq!(
            mounted_on(info, Path::new("/srv/my pool")),
            Some(("nfs".into(), "nas:/x".into()))
        );
        assert_eq!(mounted_on(info, Path::new("/srv")), None);
        assert!(mounted(Path::new("/")).is_some() || !Path::new("/proc/self/mountinfo").exists());
    }
}
