//! Console logs as the API reads them: the newest bytes of a file that may have grown large.
//! Only the tail is read (a guest can fill its console log for days), and the answer is
//! bounded whatever a D-Bus caller asks for, so it always fits one D-Bus message.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{HostError, HostResult};

/// The most a console read answers: `vm.console`'s upper bound in the API. As text, invalid
/// UTF-8 replaced by U+FFFD, that is at most 3 MiB, far below D-Bus's 32 MiB message limit.
pub const MAX_CONSOLE_BYTES: u32 = 1 << 20;

/// The newest `max_bytes` (1 to `MAX_CONSOLE_BYTES`) of the log at `path`, as text; empty when
/// there is no log yet.
pub fn tail(path: &Path, max_bytes: u32) -> HostResult<String> {
    if max_bytes == 0 || max_bytes > MAX_CONSOLE_BYTES {
        return Err(HostError::InvalidArgs(format!(
            "max_bytes = {max_bytes} is out of range 1..={MAX_CONSOLE_BYTES}"
        )));
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(HostError::io(path.display(), e)),
    };
    let len = file
        .metadata()
        .map_err(|e| HostError::io(path.display(), e))?
        .len();
    let from = len.saturating_sub(u64::from(max_bytes));
    file.seek(SeekFrom::Start(from))
        .map_err(|e| HostError::io(path.display(), e))?;
    let mut data = Vec::new();
    // The log may grow while it is read: never more than asked for.
    file.take(u64::from(max_bytes))
        .read_to_end(&mut data)
        .map_err(|e| HostError::io(path.display(), e))?;
    Ok(bus_text(&data))
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
        assert!(matches!(
            tail(&log, MAX_CONSOLE_BYTES + 1),
            Err(HostError::InvalidArgs(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
