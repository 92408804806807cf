//! A guest's console as its monitor keeps it: the guest writes to a pty, never to a host file,
//! and the monitor copies what comes out of the pty's master into a log that is rotated at
//! [`CONSOLE_LOG_CAP`] (`console.log` → `console.log.1`), so that at most twice the cap stays
//! on disk whatever the guest writes (LXC's `lxc.console.logsize`).
//!
//! The guest depends on its monitor for its console: if the monitor dies, the pty's master
//! closes and the guest's console writes fail with EIO (and a session with it as controlling
//! terminal gets SIGHUP). That is accepted: a monitor that died has no one to write for.
//!
//! A container's monitor also listens on [`CONSOLE_SOCKET`] in the guest's run directory
//! (root's alone: the socket is 0600 in a 0700 directory): one client at a time is attached
//! (see [`super::attach`]) — it gets the output from then on and its bytes are the guest's
//! input. A VM's console input goes to its VMM's serial port instead (`vmm.sock`'s `attach`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::attach::Attach;

/// The size at which a console log is rotated: at most twice this stays on disk per guest.
pub const CONSOLE_LOG_CAP: u64 = 1 << 20;

/// What a read of the pty's master takes at once.
const READ_CHUNK: usize = 64 << 10;

/// The console's attach socket in a guest's run directory.
pub const CONSOLE_SOCKET: &str = "console.sock";

/// Where `log` goes when it is rotated: `console.log` → `console.log.1`.
pub fn rotated_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// An append-only log that never grows past `cap`: when it is full it becomes `rotated_path`
/// (replacing the one before) and a new one starts. Writes never fail: what cannot be written
/// (disk full, directory gone) is dropped and counted, so a guest is never held up by it.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    cap: u64,
    file: Option<File>,
    len: u64,
    dropped: u64,
}

impl RotatingLog {
    /// Appends to the log at `path` (created on the first write if need be). A log already
    /// over `cap` (one written before logs were capped) is cut to its newest `cap` bytes, as
    /// the rotated log, so that the bound holds from here on.
    pub fn open(path: &Path, cap: u64) -> RotatingLog {
        let cap = cap.max(1);
        if std::fs::metadata(path).is_ok_and(|m| m.len() > cap)
            && let Err(e) = keep_tail_as_rotated(path, cap)
        {
            eprintln!(
                "cairn monitor: cutting {} to {cap} bytes: {e}",
                path.display()
            );
            // Whatever happens, the bound holds: the oversized log goes.
            let _ = std::fs::remove_file(path);
        }
        let mut log = RotatingLog {
            path: path.to_path_buf(),
            cap,
            file: None,
            len: 0,
            dropped: 0,
        };
        log.reopen();
        log
    }

    /// Bytes dropped so far because they could not be written.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends `buf`, rotating whenever the log reaches the cap (a line may span the two
    /// files: a reader of the tail joins them).
    pub fn write(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.len >= self.cap && !self.rotate() {
                break;
            }
            if self.file.is_none() {
                self.reopen();
            }
            let Some(file) = self.file.as_mut() else {
                break;
            };
            let room = usize::try_from(self.cap - self.len).unwrap_or(usize::MAX);
            let n = buf.len().min(room);
            match file.write(&buf[..n]) {
                Ok(0) => break,
                Ok(w) => {
                    self.len += w as u64;
                    buf = &buf[w..];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if self.dropped == 0 {
                        eprintln!(
                            "cairn monitor: writing {}: {e}; dropping console output",
                            self.path.display()
                        );
                    }
                    // The next write tries again (space may have been freed); what a failed
                    // write may have put in the file is counted on the next open.
                    self.file = None;
                    break;
                }
            }
        }
        self.dropped += buf.len() as u64;
    }

    /// Opens (creating) the current log; its size is what it holds already.
    fn reopen(&mut self) {
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|f| f.metadata().map(|m| (m.len(), f)));
        match opened {
            Ok((len, f)) => {
                self.len = len;
                self.file = Some(f);
            }
            Err(e) => {
                if self.dropped == 0 {
                    eprintln!(
                        "cairn monitor: opening {}: {e}; dropping console output",
                        self.path.display()
                    );
                }
                self.file = None;
            }
        }
    }

    /// The full log becomes the rotated one and a new one starts. When it cannot be renamed,
    /// it is emptied instead: losing old output beats an unbounded file. False when neither
    /// worked (the caller drops what it had).
    fn rotate(&mut self) -> bool {
        self.file = None;
        if let Err(e) = std::fs::rename(&self.path, rotated_path(&self.path)) {
            eprintln!(
                "cairn monitor: rotating {}: {e}; emptying it",
                self.path.display()
            );
            if std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&self.path)
                .is_err()
            {
                return false;
            }
        }
        self.reopen();
        self.file.is_some() && self.len < self.cap
    }
}

/// Moves the newest `cap` bytes of `path` to its rotated name and removes `path`.
fn keep_tail_as_rotated(path: &Path, cap: u64) -> std::io::Result<()> {
    let mut old = File::open(path)?;
    let len = old.metadata()?.len();
    old.seek(SeekFrom::Start(len.saturating_sub(cap)))?;
    let mut tail = Vec::new();
    old.take(cap).read_to_end(&mut tail)?;
    crate::launcher::write_atomic(&rotated_path(path), &tail)?;
    std::fs::remove_file(path)
}

/// Why a guest's console could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("console pty: {what}: {errno}")]
pub struct ConsoleError {
    what: &'static str,
    errno: Errno,
}

fn pty_err(what: &'static str) -> impl FnOnce(Errno) -> ConsoleError {
    move |errno| ConsoleError { what, errno }
}

/// A guest's console before it runs: a pty (the guest gets [`Console::guest_end`]) and the
/// log its output goes to once [`Console::pump`] runs.
#[derive(Debug)]
pub struct Console {
    master: OwnedFd,
    /// The monitor's own hold on the pty's guest end: without it, the master reads EIO (and
    /// polls as hung up) whenever no guest process has the console open, e.g. before init
    /// opens it or between two programs that do.
    slave: OwnedFd,
    log: PathBuf,
    /// Where attach clients connect, once [`Console::listen`] bound it.
    listener: Option<UnixListener>,
}

impl Console {
    /// Opens a pty in the host's devpts, in raw mode so that the log holds exactly the bytes
    /// the guest wrote ("\n" stays "\n"; a guest may set its own modes).
    pub fn open(log: &Path) -> Result<Console, ConsoleError> {
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: posix_openpt takes flags only; it returns a new fd or -1.
        let fd = unsafe { libc::posix_openpt(flags) };
        if fd < 0 {
            return Err(pty_err("opening /dev/ptmx")(Errno::last()));
        }
        // SAFETY: fd was just returned by posix_openpt and nothing else owns it.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: unlockpt on the pty master we own.
        if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
            return Err(pty_err("unlocking the pty")(Errno::last()));
        }
        // TIOCGPTPEER opens the peer of this very master (no path lookup that another devpts
        // mounted over /dev/pts could divert).
        // SAFETY: TIOCGPTPEER takes open flags as its integer argument and returns a new fd.
        let fd = unsafe {
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER as _,
                flags as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(pty_err("opening the pty's peer")(Errno::last()));
        }
        // SAFETY: fd was just returned by the ioctl and nothing else owns it.
        let slave = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut t =
            nix::sys::termios::tcgetattr(slave.as_fd()).map_err(pty_err("reading its modes"))?;
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(slave.as_fd(), nix::sys::termios::SetArg::TCSANOW, &t)
            .map_err(pty_err("setting raw mode"))?;
        Ok(Console {
            master,
            slave,
            log: log.to_path_buf(),
            listener: None,
        })
    }

    /// Binds the attach socket at `path` (a stale one from an earlier run is replaced), 0600
    /// from the start: the umask is tightened around the bind, which runs while the monitor is
    /// still single-threaded (before the guest's clone).
    pub fn listen(&mut self, path: &Path) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound?;
        listener.set_nonblocking(true)?;
        self.listener = Some(listener);
        Ok(())
    }

    /// The pty's guest end (its /dev/console, its init's stdio).
    pub fn guest_end(&self) -> &OwnedFd {
        &self.slave
    }

    /// Starts copying the guest's output into the log, on a thread of the monitor (which must
    /// no longer need to be single-threaded: call it after the guest's clone).
    pub fn pump(self) -> std::io::Result<Pump> {
        let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let Console {
                    master,
                    slave,
                    log,
                    listener,
                } = self;
                let log = RotatingLog::open(&log, CONSOLE_LOG_CAP);
                let dropped = copy(File::from(master), &stop_r, log, listener);
                drop(slave);
                dropped
            })?;
        Ok(Pump {
            stop: File::from(stop_w),
            thread,
        })
    }
}

/// A running console copy.
#[derive(Debug)]
pub struct Pump {
    stop: File,
    thread: std::thread::JoinHandle<u64>,
}

impl Pump {
    /// Once the guest is gone: takes what it left in the pty and stops. Returns the bytes
    /// dropped over the guest's life.
    pub fn finish(mut self) -> u64 {
        let _ = self.stop.write_all(b"s");
        self.thread.join().unwrap_or(0)
    }
}

/// Copies the master into `log` (and to an attached client, see [`Attach`]) until `stop` is
/// readable, then takes what the master still has. Reading never waits on the disk's goodwill
/// nor on a client: a write that fails is dropped, so the guest's writes to its console only
/// ever wait for this loop to come round.
fn copy(
    mut master: File,
    stop: &OwnedFd,
    mut log: RotatingLog,
    listener: Option<UnixListener>,
) -> u64 {
    let mut buf = vec![0u8; READ_CHUNK];
    // Input to the pty must never block the loop: the master goes non-blocking (its own open
    // file description: the guest's end is not affected). Without that, no attaching.
    let mut attach = listener.and_then(|l| match set_nonblocking(&master) {
        Ok(()) => Some(Attach::new(l)),
        Err(e) => {
            eprintln!("cairn monitor: console pty: {e}; console attach is off");
            None
        }
    });
    let mut master_open = true;
    loop {
        let mut master_events = libc::POLLIN;
        if attach.as_ref().is_some_and(Attach::has_input) {
            master_events |= libc::POLLOUT;
        }
        let (client_fd, client_events) = attach
            .as_ref()
            .and_then(Attach::client_poll)
            .unwrap_or((-1, 0));
        let mut fds = [
            libc::pollfd {
                fd: if master_open { master.as_raw_fd() } else { -1 },
                events: master_events,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: attach.as_ref().map_or(-1, Attach::listener_fd),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: client_fd,
                events: client_events,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of pollfds for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            break;
        }
        if let Some(attach) = attach.as_mut() {
            if fds[0].revents & libc::POLLOUT != 0 {
                attach.write_input(&mut master);
            }
            if fds[2].revents != 0 {
                attach.accept();
            }
            if fds[3].revents != 0 {
                attach.read_client();
            }
        }
        if fds[0].revents & !libc::POLLOUT != 0 {
            master_open = read_once(&mut master, &mut buf, &mut log, attach.as_mut());
        }
        if fds[1].revents != 0 {
            // The guest is gone: take what it left in the pty.
            while master_open && readable_now(&master) {
                master_open = read_once(&mut master, &mut buf, &mut log, attach.as_mut());
            }
            break;
        }
    }
    if log.dropped() > 0 {
        eprintln!(
            "cairn monitor: {} bytes of console output dropped",
            log.dropped()
        );
    }
    log.dropped()
}

/// One read of the master into the log and the attached client; false once the master has
/// nothing more to give (EOF, or EIO: no guest end open — cannot happen while we hold one, but
/// a master that only hangs up must not spin the loop).
fn read_once(
    master: &mut File,
    buf: &mut [u8],
    log: &mut RotatingLog,
    attach: Option<&mut Attach>,
) -> bool {
    match master.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            log.write(&buf[..n]);
            if let Some(a) = attach {
                a.output(&buf[..n]);
            }
            true
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
            ) =>
        {
            true
        }
        Err(_) => false,
    }
}

/// Whether `f` has something to read right now.
fn readable_now(f: &File) -> bool {
    let mut fd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; no waiting.
    let rc = unsafe { libc::poll(&mut fd, 1, 0) };
    rc > 0 && fd.revents & libc::POLLIN != 0
}

fn set_nonblocking(f: &File) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::attach::TAKEN_OVER;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmm-console-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_log_rotates_at_the_cap_and_keeps_the_newest_bytes() {
        let dir = scratch("rotate");
        let path = dir.join("console.log");
        let cap = 1000;
        let mut log = RotatingLog::open(&path, cap);
        let mut all = Vec::new();
        for i in 0..500 {
            let line = format!("line {i}\n");
            log.write(line.as_bytes());
            all.extend_from_slice(line.as_bytes());
            let cur = std::fs::metadata(&path).unwrap().len();
            let old = std::fs::metadata(rotated_path(&path)).map_or(0, |m| m.len());
            assert!(cur <= cap && old <= cap, "{cur} {old}");
        }
        // One big write rotates as often as it needs.
        let big = vec![b'x'; 2500];
        log.write(&big);
        all.extend_from_slice(&big);
        log.write(b"last\n");
        all.extend_from_slice(b"last\n");
        assert_eq!(log.dropped(), 0);
        let mut kept = std::fs::read(rotated_path(&path)).unwrap();
        kept.extend(std::fs::read(&path).unwrap());
        assert!(kept.len() as u64 > cap && kept.len() as u64 <= 2 * cap);
        assert!(all.ends_with(&kept));
        // Reopened (a restarted guest), it appends and still rotates at the cap.
        drop(log);
        let mut log = RotatingLog::open(&path, cap);
        log.write(&vec![b'y'; 600]);
        assert!(std::fs::metadata(&path).unwrap().len() <= cap);
        assert!(std::fs::read(&path).unwrap().ends_with(b"yyy"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_oversized_old_log_is_cut_to_its_tail() {
        let dir = scratch("old");
        let path = dir.join("console.log");
        let mut old = vec![b'a'; 5000];
        old.extend_from_slice(b"newest");
        std::fs::write(&path, &old).unwrap();
        let mut log = RotatingLog::open(&path, 100);
        let rotated = std::fs::read(rotated_path(&path)).unwrap();
        assert_eq!(rotated.len(), 100);
        assert!(rotated.ends_with(b"newest"));
        log.write(b"new\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_cannot_be_written_is_dropped_and_counted() {
        let dir = scratch("gone");
        let path = dir.join("no-such-dir").join("console.log");
        let mut log = RotatingLog::open(&path, 100);
        log.write(b"0123456789");
        log.write(b"abc");
        assert_eq!(log.dropped(), 13);
        // The directory comes back: writing resumes.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        log.write(b"back\n");
        assert_eq!(log.dropped(), 13);
        assert_eq!(std::fs::read(&path).unwrap(), b"back\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A real pty: bytes written to the guest end arrive in the log unchanged (raw mode: no
    /// "\r\n"), and finishing takes what was still in the pty.
    #[test]
    fn the_pump_copies_the_guest_end_into_the_log() {
        let dir = scratch("pump");
        let path = dir.join("console.log");
        let console = Console::open(&path).unwrap();
        let mut guest = File::from(console.guest_end().try_clone().unwrap());
        let pump = console.pump().unwrap();
        let mut want = Vec::new();
        for i in 0..2000 {
            let line = format!("guest line {i}\n");
            guest.write_all(line.as_bytes()).unwrap();
            want.extend_from_slice(line.as_bytes());
        }
        drop(guest);
        assert_eq!(pump.finish(), 0);
        let mut got = std::fs::read(rotated_path(&path)).unwrap_or_default();
        got.extend(std::fs::read(&path).unwrap());
        assert_eq!(got, want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn read_until(client: &mut std::os::unix::net::UnixStream, want: &[u8]) -> Vec<u8> {
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(want.len()).any(|w| w == want) {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading the console: {e}; got {got:?}"),
            }
        }
        got
    }

    /// A real pty and socket: the attached client gets the output and its bytes reach the
    /// guest's end; a second client takes over (the first is told, then closed); detaching
    /// leaves the log going; a client that never reads does not hold the guest up.
    #[test]
    fn an_attached_client_gets_the_output_and_gives_the_input() {
        use std::os::unix::net::UnixStream;
        let dir = scratch("attach");
        let path = dir.join("console.log");
        let sock = dir.join(CONSOLE_SOCKET);
        let mut console = Console::open(&path).unwrap();
        console.listen(&sock).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&sock).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let mut guest = File::from(console.guest_end().try_clone().unwrap());
        let pump = console.pump().unwrap();

        let mut first = UnixStream::connect(&sock).unwrap();
        // Attached once the monitor accepted: what the guest writes from then on arrives.
        let mut seen = Vec::new();
        for i in 0.. {
            guest.write_all(format!("tick {i}\n").as_bytes()).unwrap();
            first
                .set_read_timeout(Some(std::time::Duration::from_millis(20)))
                .unwrap();
            let mut buf = [0u8; 4096];
            if let Ok(n) = first.read(&mut buf) {
                seen.extend_from_slice(&buf[..n]);
                break;
            }
            assert!(i < 250, "nothing reached the attached client");
        }
        guest.write_all(b"hello client\n").unwrap();
        read_until(&mut first, b"hello client\n");
        first.write_all(b"typed by the client\n").unwrap();
        let mut got = vec![0u8; 64];
        let n = guest.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"typed by the client\n");

        // A second client takes over: the first reads why, then the end of its stream.
        let mut second = UnixStream::connect(&sock).unwrap();
        let told = read_until(&mut first, TAKEN_OVER);
        assert!(told.ends_with(TAKEN_OVER), "{told:?}");
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        guest.write_all(b"for the second\n").unwrap();
        read_until(&mut second, b"for the second\n");
        second.write_all(b"x").unwrap();
        let n = guest.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"x");

        // A client that never reads: the guest floods 8 MiB and is never held up; the log
        // keeps the newest output.
        let flood = vec![b'f'; 64 << 10];
        for _ in 0..128 {
            guest.write_all(&flood).unwrap();
        }
        guest.write_all(b"after the flood\n").unwrap();

        // Detached: the guest writes on and its output still reaches the log.
        drop(second);
        guest.write_all(b"after the detach\n").unwrap();
        // A client that types and hangs up at once (input piped in): its input still arrives.
        let mut third = UnixStream::connect(&sock).unwrap();
        third.write_all(b"last words\n").unwrap();
        drop(third);
        let n = guest.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"last words\n");
        drop(guest);
        assert_eq!(pump.finish(), 0);
        let log = std::fs::read(&path).unwrap();
        assert!(log.ends_with(b"after the flood\nafter the detach\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
