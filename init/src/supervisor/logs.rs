//! What the services write, kept for `host.log`: each daemon's stdout and stderr go into a
//! pipe that a thread of init reads line by line; every line goes on to the console (or a
//! sandbox's STATE/log/NAME.log) as before, and into a ring of recent lines per service that
//! Init1's `Logs` serves. init's own log lines join the ring as service `init`.
//!
//! Nothing here may hold a daemon up or grow init: the reader never waits for the console (a
//! slow serial port) — lines go to one console thread through a bounded queue, and what does
//! not fit is dropped and counted — and each service's ring keeps at most `RING_BYTES`.
//! Reading is plain blocking reads on threads: no tokio::process, PID 1 keeps all reaping.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::api::event::{LogLine, LogPage};
use model::logline::{Level, split};

/// Bytes of text kept per service (the oldest lines go first).
pub const RING_BYTES: usize = 256 * 1024;
/// A longer line is cut here (the rest of it is dropped, not kept as further lines).
pub const MAX_LINE: usize = 8 * 1024;
/// Lines waiting for the console; more are dropped and counted.
const CONSOLE_QUEUE: usize = 1024;
/// How many evicted lines' numbers a ring remembers to say how many a reader lost.
const EVICTED_MEMORY: usize = 4096;
/// At most this many lines per answer.
pub const MAX_LINES: usize = 1000;

struct Kept {
    seq: u64,
    time: u64,
    level: Level,
    text: String,
}

#[derive(Default)]
struct ServiceRing {
    lines: VecDeque<Kept>,
    bytes: usize,
    /// The numbers of the lines evicted last, oldest first (at most `EVICTED_MEMORY`).
    evicted: VecDeque<u64>,
    /// Evicted lines whose number was forgotten too: a reader behind them lost at least this.
    forgotten: u64,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    services: BTreeMap<String, ServiceRing>,
}

/// The rings of every service, and a wake-up for readers waiting for a new line.
pub struct Logs {
    inner: Mutex<Inner>,
    capacity: usize,
    new_line: tokio::sync::Notify,
}

/// init's one set of rings.
pub static LOGS: LazyLock<Logs> = LazyLock::new(|| Logs::new(RING_BYTES));

/// Why a `Logs` request was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LogsError {
    #[error("no service named {0:?}: netd, stord, hostd, apid or init (\"\" for all)")]
    NoSuchService(String),
    #[error("no log level {0:?}: trace, debug, info, warn or error")]
    NoSuchLevel(String),
}

/// The services whose lines are kept.
pub fn known_service(name: &str) -> bool {
    name == "init" || model::dbus::SERVICES.iter().any(|(n, _)| *n == name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Logs {
    pub fn new(capacity: usize) -> Logs {
        Logs {
            inner: Mutex::new(Inner {
                next_seq: 1,
                ..Inner::default()
            }),
            capacity,
            new_line: tokio::sync::Notify::new(),
        }
    }

    /// Keeps one line (without its newline) of `service`.
    pub fn push(&self, service: &str, line: &str) {
        let (level, text) = split(line);
        if text.is_empty() {
            return;
        }
        let mut text = text.to_string();
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        {
            let Ok(mut inner) = self.inner.lock() else {
                return;
            };
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let ring = inner.services.entry(service.to_string()).or_default();
            ring.bytes += text.len();
            ring.lines.push_back(Kept {
                seq,
                time: now(),
                level,
                text,
            });
            while ring.bytes > self.capacity
                && let Some(old) = ring.lines.pop_front()
            {
                ring.bytes -= old.text.len();
                ring.evicted.push_back(old.seq);
                if ring.evicted.len() > EVICTED_MEMORY {
                    ring.evicted.pop_front();
                    ring.forgotten += 1;
                }
            }
        }
        self.new_line.notify_waiters();
    }

    /// The lines of `service` (all when empty) at `min` or above after `since`, at most
    /// `max`, and how many after `since` are no longer kept.
    pub fn page(
        &self,
        service: &str,
        min: Level,
        since: u64,
        max: usize,
    ) -> Result<LogPage, LogsError> {
        if !service.is_empty() && !known_service(service) {
            return Err(LogsError::NoSuchService(service.to_string()));
        }
        let Ok(inner) = self.inner.lock() else {
            return Ok(LogPage::default());
        };
        let mut lines = Vec::new();
        let mut lost = 0;
        for (name, ring) in &inner.services {
            if !service.is_empty() && name != service {
                continue;
            }
            let evicted_after = ring
                .evicted
                .iter()
                .rev()
                .take_while(|&&s| s > since)
                .count();
            lost += evicted_after as u64;
            if evicted_after == ring.evicted.len() && ring.forgotten > 0 {
                lost += ring.forgotten;
            }
            lines.extend(
                ring.lines
                    .iter()
                    .filter(|l| l.seq > since && l.level >= min)
                    .map(|l| LogLine {
                        seq: l.seq,
                        time: l.time,
                        service: name.clone(),
                        level: l.level.as_str().to_string(),
                        text: l.text.clone(),
                    }),
            );
        }
        lines.sort_by_key(|l| l.seq);
        lines.truncate(max.clamp(1, MAX_LINES));
        // The next call starts after what this one saw, or after every line there is now:
        // lines below `min` need not be looked at again.
        let next = match lines.last() {
            Some(l) if lines.len() >= max.clamp(1, MAX_LINES) => l.seq,
            _ => inner.next_seq - 1,
        }
        .max(since.min(inner.next_seq - 1));
        Ok(LogPage {
            lines,
            next,
            lost: (lost > 0).then_some(lost),
        })
    }

    /// As `page`, but with nothing to answer yet waits up to `wait` for a line.
    pub async fn wait_page(
        &self,
        service: &str,
        min: Level,
        since: u64,
        max: usize,
        wait: Duration,
    ) -> Result<LogPage, LogsError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.new_line.notified();
            tokio::pin!(notified);
            // Registered before looking, so a line pushed in between still wakes us.
            notified.as_mut().enable();
            let page = self.page(service, min, since, max)?;
            if !page.lines.is_empty() || page.lost.is_some() || wait.is_zero() {
                return Ok(page);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.page(service, min, since, max);
            }
        }
    }
}

/// Parses a `Logs` level argument ("" means info).
pub fn level_arg(level: &str) -> Result<Level, LogsError> {
    if level.is_empty() {
        return Ok(Level::Info);
    }
    Level::parse(level).ok_or_else(|| LogsError::NoSuchLevel(level.to_string()))
}

/// Where a service's lines go besides the ring.
#[derive(Clone)]
pub enum Console {
    /// init's stdout (the appliance's console).
    Stdout,
    /// A file of its own (a sandbox's STATE/log/NAME.log).
    File(Arc<Mutex<File>>),
}

struct ConsoleLine {
    to: Console,
    bytes: Vec<u8>,
}

/// The one thread that writes to the console, fed through a bounded queue.
static CONSOLE: LazyLock<Option<SyncSender<ConsoleLine>>> = LazyLock::new(|| {
    let (tx, rx) = sync_channel::<ConsoleLine>(CONSOLE_QUEUE);
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            for line in rx {
                match line.to {
                    Console::Stdout => {
                        let _ = std::io::stdout().lock().write_all(&line.bytes);
                    }
                    Console::File(f) => {
                        if let Ok(mut f) = f.lock() {
                            let _ = f.write_all(&line.bytes);
                        }
                    }
                }
            }
        })
        .ok()
        .map(|_| tx)
});

/// Hands a line to the console thread; false when its queue is full (the line is dropped).
fn to_console(to: &Console, bytes: Vec<u8>) -> bool {
    match CONSOLE.as_ref() {
        Some(tx) => !matches!(
            tx.try_send(ConsoleLine {
                to: to.clone(),
                bytes
            }),
            Err(TrySendError::Full(_))
        ),
        None => true,
    }
}

/// Reads `pipe` (a daemon's stdout and stderr) until every writer closed it, on a thread of
/// its own: each line into the ring as `service`, and on to `console`.
pub fn follow(service: &'static str, pipe: OwnedFd, console: Console) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("log-{service}"))
        .spawn(move || read_lines(service, File::from(pipe), &console, &LOGS))
        .map(|_| ())
}

fn read_lines(service: &str, mut pipe: impl Read, console: &Console, logs: &Logs) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    // Bytes of an over-long line beyond MAX_LINE are skipped until its newline.
    let mut skipping = false;
    let mut dropped: u64 = 0;
    let emit = |line: &[u8], dropped: &mut u64| {
        let text = String::from_utf8_lossy(line);
        logs.push(service, &text);
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        if *dropped > 0 {
            let note = format!(
                "cairn: {service}: {dropped} log lines not shown on the console (written too fast)\n"
            );
            if to_console(console, note.into_bytes()) {
                *dropped = 0;
            }
        }
        if !to_console(console, bytes) {
            *dropped += 1;
        }
    };
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                if !skipping {
                    emit(&line, &mut dropped);
                }
                line.clear();
                skipping = false;
            } else if skipping {
                continue;
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else {
                emit(&line, &mut dropped);
                line.clear();
                skipping = true;
            }
        }
    }
    if !line.is_empty() {
        emit(&line, &mut dropped);
    }
}

/// init's own log lines: to stderr as before, and into the ring as service `init`.
pub struct InitWriter;

impl Write for InitWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        for line in String::from_utf8_lossy(buf).lines() {
            LOGS.push("init", line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "2026-12-04T05:44:49.123456Z  INFO hostd: hello";

    #[test]
    fn lines_are_kept_per_service_with_their_level() {
        let logs = Logs::new(1024);
        logs.push("hostd", LINE);
        logs.push("netd", "2026-12-04T05:44:49.123456Z  WARN netd: careful");
        logs.push("hostd", "2026-12-04T05:44:49.123456Z ERROR hostd: broken");
        let all = logs.page("", Level::Info, 0, 100).unwrap();
        assert_eq!(all.lines.len(), 3);
        assert_eq!(all.next, 3);
        assert_eq!(all.lost, None);
        let hostd = logs.page("hostd", Level::Info, 0, 100).unwrap();
        let texts: Vec<_> = hostd.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["hostd: hello", "hostd: broken"]);
        let warn = logs.page("", Level::Warn, 0, 100).unwrap();
        let levels: Vec<_> = warn.lines.iter().map(|l| l.level.as_str()).collect();
        assert_eq!(levels, ["warn", "error"]);
        assert_eq!(warn.next, 3, "filtered lines are not looked at again");
        assert!(
            logs.page("hostd", Level::Info, 3, 100)
                .unwrap()
                .lines
                .is_empty()
        );
        assert_eq!(
            logs.page("nope", Level::Info, 0, 1).unwrap_err(),
            LogsError::NoSuchService("nope".into())
        );
        assert!(level_arg("loud").is_err());
        assert_eq!(level_arg("").unwrap(), Level::Info);
    }

    #[test]
    fn a_ring_keeps_its_bytes_and_counts_what_a_reader_lost() {
        let logs = Logs::new(100);
        for i in 0..50 {
            logs.push("apid", &format!("line number {i:04}"));
        }
        // 16 bytes a line: 6 fit in 100.
        let page = logs.page("apid", Level::Trace, 0, 1000).unwrap();
        assert_eq!(page.lines.len(), 6);
        assert_eq!(page.lines[0].text, "line number 0044");
        assert_eq!(page.lost, Some(44));
        assert_eq!(
            logs.page("apid", Level::Trace, 40, 1000).unwrap().lost,
            Some(4)
        );
        assert_eq!(
            logs.page("apid", Level::Trace, 44, 1000).unwrap().lost,
            None
        );
        let inner = logs.inner.lock().unwrap();
        assert!(inner.services["apid"].bytes <= 100);
    }

    #[test]
    fn pages_are_bounded_and_follow_on() {
        let logs = Logs::new(1 << 20);
        for i in 0..30 {
            logs.push("stord", &format!("l{i}"));
        }
        let first = logs.page("stord", Level::Trace, 0, 10).unwrap();
        assert_eq!(first.lines.len(), 10);
        assert_eq!(first.next, 10);
        let second = logs.page("stord", Level::Trace, first.next, 10).unwrap();
        assert_eq!(second.lines[0].text, "l10");
    }

    #[test]
    fn long_lines_are_cut_and_pipes_read_to_the_end() {
        let logs = Logs::new(1 << 20);
        let mut input = Vec::new();
        input.extend_from_slice(LINE.as_bytes());
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'x', MAX_LINE * 3));
        input.extend_from_slice(b"\nlast without newline");
        let console = Console::File(Arc::new(Mutex::new(tempfile_in_target())));
        read_lines("hostd", &input[..], &console, &logs);
        let page = logs.page("hostd", Level::Trace, 0, 100).unwrap();
        let lens: Vec<_> = page.lines.iter().map(|l| l.text.len()).collect();
        assert_eq!(
            lens,
            ["hostd: hello".len(), MAX_LINE, "last without newline".len()]
        );
    }

    #[test]
    fn a_stuck_console_never_holds_the_reader_up() {
        let logs = Logs::new(1 << 22);
        let file = Arc::new(Mutex::new(tempfile_in_target()));
        let console = Console::File(file.clone());
        // The console thread blocks on this lock while the test holds it: its queue fills.
        let held = file.lock().unwrap();
        let n = CONSOLE_QUEUE * 5;
        let input: Vec<u8> = (0..n)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let started = std::time::Instant::now();
        read_lines("apid", &input[..], &console, &logs);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(held);
        // Every line is in the ring even though most never reached the console.
        let page = logs.page("apid", Level::Trace, 0, MAX_LINES).unwrap();
        assert_eq!(page.lines.len(), MAX_LINES);
        assert_eq!(page.lost, None);
        let last = logs.page("apid", Level::Trace, (n - 1) as u64, 10).unwrap();
        assert_eq!(last.lines[0].text, format!("line {}", n - 1));
    }

    fn tempfile_in_target() -> File {
        let path = std::env::temp_dir().join(format!("cairn-logs-test-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        f
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_new_line() {
        let logs = Arc::new(Logs::new(1 << 20));
        let pusher = logs.clone();
        let started = std::time::Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            pusher.push("netd", "2026-12-04T05:44:49.123456Z  WARN netd: now");
        });
        let page = logs
            .wait_page("netd", Level::Info, 0, 10, Duration::from_secs(10))
            .await
            .unwrap();
        t.join().unwrap();
        assert_eq!(page.lines.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Nothing comes: the wait ends empty.
        let page = logs
            .wait_page(
                "netd",
                Level::Info,
                page.next,
                10,
                Duration::from_millis(100),
            )
            .await
            .unwrap();
        assert!(page.lines.is_empty());
    }
}
