//! Console logs as the API reads them: the newest bytes of a log that its monitor rotates
//! (`vmm::launcher::console`): the current file, preceded by the rotated one when the current
//! one is shorter than asked for. Only tails are read, and the answer is bounded whatever a
//! D-Bus caller asks for, so it always fits one D-Bus message.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use vmm::launcher::console::rotated_path;

use crate::error::{HostError, HostResult};

/// The most a console read answers: `vm.console`'s upper bound in the API. As text, invalid
/// UTF-8 replaced by U+FFFD, that is at most 3 MiB, far below D-Bus's 32 MiB message limit.
pub const MAX_CONSOLE_BYTES: u32 = 1 << 20;

/// The newest `max_bytes` (1 to `MAX_CONSOLE_BYTES`) of the log at `path` and, before it, its
/// rotated predecessor, as text; empty when there is no log yet.
pub fn tail(path: &Path, max_bytes: u32) -> HostResult<String> {
    if max_bytes == 0 || max_bytes > MAX_CONSOLE_BYTES {
        return Err(HostError::InvalidArgs(format!(
            "max_bytes = {max_bytes} is out of range 1..={MAX_CONSOLE_BYTES}"
        )));
    }
    // The rotated log first: opened before the current one, a rotation in between costs
    // at most a stretch of output, never shows bytes twice.
    let rotated = open(&rotated_path(path))?;
    let mut data = match open(path)? {
        Some(current) => newest(current, path, u64::from(max_bytes))?,
        None => Vec::new(),
    };
    let short = u64::from(max_bytes) - data.len() as u64;
    if short > 0
        && let Some(rotated) = rotated
    {
        let mut older = newest(rotated, path, short)?;
        older.extend_from_slice(&data);
        data = older;
    }
    Ok(bus_text(&data))
}

/// The log file at `path`, None when there is none.
fn open(path: &Path) -> HostResult<Option<std::fs::File>> {
    match std::fs::File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HostError::io(path.display(), e)),
    }
}

/// The newest `max` bytes of `file` (the log at `path`).
fn newest(mut file: std::fs::File, path: &Path, max: u64) -> HostResult<Vec<u8>> {
    let len = file
        .metadata()
        .map_err(|e| HostError::io(path.display(), e))?
        .len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))
        .map_err(|e| HostError::io(path.display(), e))?;
    let mut data = Vec::new();
    // The log may grow while it is read: never more than asked for.
    file.take(max)
        .read_to_end(&mut data)
        .map_err(|e| HostError::io(path.display(), e))?;
    Ok(data)
}

/// Bytes from a guest or a command as a D-Bus string: invalid UTF-8 and NUL bytes become
/// U+FFFD. D-Bus strings cannot hold NUL, and a reply with one is a message the bus refuses —
/// it disconnects the sender, i.e. hostd (XML-RPC's strings cannot hold NUL either).
pub fn bus_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.into_owned()
    }
}

/// A connection to the console of the container whose monitor runs in `run_dir`: reads are the
/// console's output from now on, writes its input (`vmm::launcher::attach`: one client at a
/// time, a newer one takes over).
pub fn attach(run_dir: &Path) -> HostResult<std::os::unix::net::UnixStream> {
    let sock = run_dir.join(vmm::launcher::console::CONSOLE_SOCKET);
    std::os::unix::net::UnixStream::connect(&sock).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => HostError::Failed(format!(
            "{} is missing: the container's monitor started before console attach existed; \
             restart the container",
            sock.display()
        )),
        _ => HostError::io(sock.display(), e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_tail_and_bounds_the_request() {
        let dir = std::env::temp_dir().join(format!("hostd-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        assert_eq!(tail(&log, 10).unwrap(), "");
        std::fs::write(&log, b"0123456789abcdef").unwrap();
        assert_eq!(tail(&log, 6).unwrap(), "abcdef");
        assert_eq!(tail(&log, 100).unwrap(), "0123456789abcdef");
        std::fs::write(&log, b"a\0b\xffc").unwrap();
        assert_eq!(tail(&log, 100).unwrap(), "a\u{FFFD}b\u{FFFD}c");
        assert!(matches!(tail(&log, 0), Err(HostError::InvalidArgs(_))));
        // A short current log is preceded by the rotated one; a long one stands alone.
        std::fs::write(rotated_path(&log), b"older\n").unwrap();
        std::fs::write(&log, b"new\n").unwrap();
        assert_eq!(tail(&log, 6).unwrap(), "r\nnew\n");
        assert_eq!(tail(&log, 100).unwrap(), "older\nnew\n");
        assert_eq!(tail(&log, 3).unwrap(), "ew\n");
        assert!(matches!(
            tail(&log, MAX_CONSOLE_BYTES + 1),
            Err(HostError::InvalidArgs(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
