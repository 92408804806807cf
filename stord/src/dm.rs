//! Device-mapper through its ioctls on `/dev/mapper/control` (linux/dm-ioctl.h): the image has
//! neither libdevmapper nor dmsetup, and stord needs only a handful of calls — make a device,
//! load and swap its table, suspend and resume it, send a target a message, read its status.
//!
//! Every call is one `struct dm_ioctl` (312 bytes) followed by its data in one buffer; the
//! kernel answers in the same buffer, and says when it was too small (`DM_BUFFER_FULL_FLAG`),
//! in which case the call is made again with a bigger one.

use std::fs::File;
use std::os::fd::AsRawFd as _;

use nix::errno::Errno;

const CONTROL: &str = "/dev/mapper/control";
const HEADER: usize = 312;
const NAME_LEN: usize = 128;
/// `struct dm_target_spec`: sector_start, length, status, next, target_type[16].
const SPEC: usize = 40;
const TYPE_LEN: usize = 16;

const READONLY_FLAG: u32 = 1 << 0;
const SUSPEND_FLAG: u32 = 1 << 1;
const STATUS_TABLE_FLAG: u32 = 1 << 4;
const BUFFER_FULL_FLAG: u32 = 1 << 8;
const SKIP_LOCKFS_FLAG: u32 = 1 << 10;
const NOFLUSH_FLAG: u32 = 1 << 11;

#[derive(Clone, Copy)]
enum Cmd {
    ListDevices = 2,
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    DevStatus = 7,
    TableLoad = 9,
    TableStatus = 12,
    TargetMsg = 14,
}

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("device-mapper is not available ({CONTROL}: {0}); the kernel needs dm-mod")]
    NoControl(std::io::Error),
    #[error("device-mapper {what} of {name:?}: {errno}")]
    Kernel {
        what: &'static str,
        name: String,
        errno: Errno,
    },
    #[error("device-mapper {what}: {why}")]
    Bad { what: &'static str, why: String },
}

impl DmError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            DmError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// One line of a table: `sector_start length target_type params`, in 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub length: u64,
    pub kind: String,
    pub params: String,
}

/// What `DM_DEV_STATUS` says of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevInfo {
    /// The block device's number (`major:minor` as the kernel packs it: `huge_encode_dev`).
    pub dev: u64,
    pub open_count: i32,
    pub suspended: bool,
    pub target_count: u32,
}

impl DevInfo {
    pub fn major(&self) -> u64 {
        (self.dev & 0xfff00) >> 8
    }

    pub fn minor(&self) -> u64 {
        (self.dev & 0xff) | ((self.dev >> 12) & 0xfff00)
    }

    /// `MAJOR:MINOR`, as tables name other devices.
    pub fn dev_name(&self) -> String {
        format!("{}:{}", self.major(), self.minor())
    }
}

pub struct Control {
    file: File,
}

fn put_str(
    buf: &mut [u8],
    at: usize,
    len: usize,
    s: &str,
    what: &'static str,
) -> Result<(), DmError> {
    if s.len() >= len || s.contains('\0') {
        return Err(DmError::Bad {
            what,
            why: format!("{s:?} is longer than {} bytes or holds a NUL", len - 1),
        });
    }
    buf[at..at + s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_ne_bytes(b)
}

fn cstr_at(buf: &[u8], at: usize) -> String {
    let end = buf[at..]
        .iter()
        .position(|&b| b == 0)
        .map_or(buf.len(), |n| at + n);
    String::from_utf8_lossy(&buf[at..end]).into_owned()
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// A request: the header with `name`, `flags` and `data` after it.
fn request(name: &str, flags: u32, data: &[u8], room: usize) -> Result<Vec<u8>, DmError> {
    let mut buf = vec![0u8; HEADER + data.len().max(room)];
    // The interface version stord speaks: 4.x, any minor (the kernel checks the major).
    buf[0..4].copy_from_slice(&4u32.to_ne_bytes());
    let size = u32::try_from(buf.len()).map_err(|_| DmError::Bad {
        what: "request",
        why: "too large".into(),
    })?;
    buf[12..16].copy_from_slice(&size.to_ne_bytes());
    buf[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes());
    buf[28..32].copy_from_slice(&flags.to_ne_bytes());
    put_str(&mut buf, 48, NAME_LEN, name, "device name")?;
    buf[HEADER..HEADER + data.len()].copy_from_slice(data);
    Ok(buf)
}

/// The data of a table load: one `dm_target_spec` + NUL-terminated params per target, each
/// starting 8-aligned, `next` counting from the start of the one before.
fn table_data(targets: &[Target]) -> Result<Vec<u8>, DmError> {
    let mut data = Vec::new();
    for t in targets {
        let at = data.len();
        let len = align8(SPEC + t.params.len() + 1);
        data.resize(at + len, 0);
        data[at..at + 8].copy_from_slice(&t.start.to_ne_bytes());
        data[at + 8..at + 16].copy_from_slice(&t.length.to_ne_bytes());
        let next = u32::try_from(len).map_err(|_| DmError::Bad {
            what: "table",
            why: "parameters too long".into(),
        })?;
        data[at + 20..at + 24].copy_from_slice(&next.to_ne_bytes());
        put_str(&mut data, at + 24, TYPE_LEN, &t.kind, "target type")?;
        if t.params.contains('\0') {
            return Err(DmError::Bad {
                what: "table",
                why: format!("parameters {:?} hold a NUL", t.params),
            });
        }
        data[at + SPEC..at + SPEC + t.params.len()].copy_from_slice(t.params.as_bytes());
    }
    Ok(data)
}

/// The targets of a status or table answer: `next` counts from the start of the data.
fn parse_targets(buf: &[u8]) -> Result<Vec<Target>, DmError> {
    let bad = |why: &str| DmError::Bad {
        what: "status answer",
        why: why.to_string(),
    };
    let start = u32_at(buf, 16) as usize;
    let count = u32_at(buf, 20);
    let mut out = Vec::new();
    let mut at = start;
    for _ in 0..count {
        if at + SPEC > buf.len() {
            return Err(bad("a target runs past the answer"));
        }
        let params = cstr_at(buf, at + SPEC);
        out.push(Target {
            start: u64_at(buf, at),
            length: u64_at(buf, at + 8),
            kind: cstr_at(&buf[..at + 24 + TYPE_LEN], at + 24),
            params,
        });
        let next = u32_at(buf, at + 20) as usize;
        at = start + next;
    }
    Ok(out)
}

impl Control {
    pub fn open() -> Result<Control, DmError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(CONTROL)
            .map_err(DmError::NoControl)?;
        Ok(Control { file })
    }

    /// Makes the call, growing the buffer while the kernel says it was too small.
    fn call(
        &self,
        cmd: Cmd,
        what: &'static str,
        name: &str,
        flags: u32,
        data: &[u8],
    ) -> Result<Vec<u8>, DmError> {
        let mut room = 16 << 10;
        loop {
            let mut buf = request(name, flags, data, room)?;
            let code = nix::request_code_readwrite!(0xfd, cmd as u8, HEADER);
            // SAFETY: `buf` is a whole dm_ioctl header followed by `data_size - HEADER` bytes,
            // as data_size says; the kernel writes only within data_size.
            let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), code as _, buf.as_mut_ptr()) };
            if rc < 0 {
                return Err(DmError::Kernel {
                    what,
                    name: name.to_string(),
                    errno: Errno::last(),
                });
            }
            if u32_at(&buf, 28) & BUFFER_FULL_FLAG == 0 {
                return Ok(buf);
            }
            if room >= 16 << 20 {
                return Err(DmError::Bad {
                    what,
                    why: "the answer does not fit in 16 MiB".into(),
                });
            }
            room *= 4;
        }
    }

    /// Makes an empty device `name` (no table yet); returns it.
    pub fn create(&self, name: &str) -> Result<DevInfo, DmError> {
        let buf = self.call(Cmd::DevCreate, "create", name, 0, &[])?;
        Ok(dev_info(&buf))
    }

    /// The device `name`, or None when there is none.
    pub fn info(&self, name: &str) -> Result<Option<DevInfo>, DmError> {
        match self.call(Cmd::DevStatus, "status", name, 0, &[]) {
            Ok(buf) => Ok(Some(dev_info(&buf))),
            Err(e) if e.errno() == Some(Errno::ENXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Loads `targets` as the device's inactive table; [`Control::resume`] makes it live.
    pub fn load(&self, name: &str, targets: &[Target], read_only: bool) -> Result<(), DmError> {
        let data = table_data(targets)?;
        let mut buf = request(name, if read_only { READONLY_FLAG } else { 0 }, &data, 0)?;
        let count = u32::try_from(targets.len()).unwrap_or(u32::MAX);
        buf[20..24].copy_from_slice(&count.to_ne_bytes());
        let code = nix::request_code_readwrite!(0xfd, Cmd::TableLoad as u8, HEADER);
        // SAFETY: as in `call`: a whole header and the data its data_size announces.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), code as _, buf.as_mut_ptr()) };
        if rc < 0 {
            return Err(DmError::Kernel {
                what: "table load",
                name: name.to_string(),
                errno: Errno::last(),
            });
        }
        Ok(())
    }

    /// Suspends the device: I/O is held, and a filesystem on it frozen (flushed first).
    pub fn suspend(&self, name: &str) -> Result<(), DmError> {
        self.call(Cmd::DevSuspend, "suspend", name, SUSPEND_FLAG, &[])
            .map(drop)
    }

    /// Suspends the device without flushing what it holds or freezing a filesystem on it (a
    /// full thin pool cannot flush; its held writes go on once the new table is in).
    pub fn suspend_noflush(&self, name: &str) -> Result<(), DmError> {
        let flags = SUSPEND_FLAG | NOFLUSH_FLAG | SKIP_LOCKFS_FLAG;
        self.call(Cmd::DevSuspend, "suspend", name, flags, &[])
            .map(drop)
    }

    /// Resumes the device, swapping in a loaded table first.
    pub fn resume(&self, name: &str) -> Result<(), DmError> {
        self.call(Cmd::DevSuspend, "resume", name, 0, &[]).map(drop)
    }

    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        self.call(Cmd::DevRemove, "remove", name, 0, &[]).map(drop)
    }

    /// Sends the target at sector 0 a message (a thin pool's `create_thin 1`).
    pub fn message(&self, name: &str, message: &str) -> Result<(), DmError> {
        if message.contains('\0') {
            return Err(DmError::Bad {
                what: "message",
                why: format!("{message:?} holds a NUL"),
            });
        }
        let mut data = vec![0u8; 8];
        data.extend_from_slice(message.as_bytes());
        data.push(0);
        data.resize(align8(data.len()), 0);
        self.call(Cmd::TargetMsg, "message", name, 0, &data)
            .map(drop)
    }

    /// The live table's status lines.
    pub fn status(&self, name: &str) -> Result<Vec<Target>, DmError> {
        parse_targets(&self.call(Cmd::TableStatus, "status", name, 0, &[])?)
    }

    /// The live table itself.
    pub fn table(&self, name: &str) -> Result<Vec<Target>, DmError> {
        parse_targets(&self.call(Cmd::TableStatus, "table", name, STATUS_TABLE_FLAG, &[])?)
    }

    /// The names of every device-mapper device.
    pub fn list(&self) -> Result<Vec<String>, DmError> {
        let buf = self.call(Cmd::ListDevices, "list", "", 0, &[])?;
        Ok(parse_names(&buf))
    }
}

fn dev_info(buf: &[u8]) -> DevInfo {
    DevInfo {
        dev: u64_at(buf, 40),
        open_count: u32_at(buf, 24) as i32,
        suspended: u32_at(buf, 28) & SUSPEND_FLAG != 0,
        target_count: u32_at(buf, 20),
    }
}

/// `struct dm_name_list` entries: dev (u64), next (u32, from this entry; 0 ends), name.
fn parse_names(buf: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = u32_at(buf, 16) as usize;
    // An empty list is one entry with dev 0 and no name.
    while at + 12 < buf.len() {
        if u64_at(buf, at) == 0 {
            break;
        }
        names.push(cstr_at(buf, at + 12));
        let next = u32_at(buf, at + 8) as usize;
        if next == 0 {
            break;
        }
        at += next;
    }
    names
}

/// Sectors of 512 bytes in `bytes` (rounded down).
pub fn sectors(bytes: u64) -> u64 {
    bytes / 512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_the_version_sizes_and_name_where_the_kernel_reads_them() {
        let buf = request("cairn.p:meta", SUSPEND_FLAG, &[1, 2, 3], 0).unwrap();
        assert_eq!(buf.len(), HEADER + 3);
        assert_eq!(u32_at(&buf, 0), 4);
        assert_eq!(u32_at(&buf, 12) as usize, buf.len());
        assert_eq!(u32_at(&buf, 16) as usize, HEADER);
        assert_eq!(u32_at(&buf, 28), SUSPEND_FLAG);
        assert_eq!(cstr_at(&buf, 48), "cairn.p:meta");
        assert_eq!(&buf[HEADER..], &[1, 2, 3]);
        assert!(request(&"x".repeat(NAME_LEN), 0, &[], 0).is_err());
        assert!(request("a\0b", 0, &[], 0).is_err());
    }

    #[test]
    fn tables_are_laid_out_as_the_kernel_walks_them_and_read_back() {
        let targets = vec![
            Target {
                start: 0,
                length: 2048,
                kind: "linear".into(),
                params: "253:0 2048".into(),
            },
            Target {
                start: 2048,
                length: 4096,
                kind: "thin-pool".into(),
                params: "253:1 253:2 128 64 0".into(),
            },
        ];
        let data = table_data(&targets).unwrap();
        // Each spec starts 8-aligned; the first's `next` leads to the second.
        let next = u32_at(&data, 20) as usize;
        assert_eq!(next % 8, 0);
        assert_eq!(cstr_at(&data, next + 24), "thin-pool");
        assert_eq!(cstr_at(&data, SPEC), "253:0 2048");
        // An answer counts `next` from the start of the data, not of the spec before: rewrite
        // it so and parse it back as a status answer.
        let mut answer = request("x", 0, &data, 0).unwrap();
        answer[20..24].copy_from_slice(&2u32.to_ne_bytes());
        let second = next as u32;
        answer[HEADER + 20..HEADER + 24].copy_from_slice(&second.to_ne_bytes());
        assert_eq!(parse_targets(&answer).unwrap(), targets);
        assert!(
            table_data(&[Target {
                start: 0,
                length: 1,
                kind: "a-type-name-too-long".into(),
                params: String::new(),
            }])
            .is_err()
        );
    }

    #[test]
    fn device_numbers_split_as_the_kernel_packs_them() {
        let info = DevInfo {
            dev: (253 << 8) | 3,
            open_count: 0,
            suspended: false,
            target_count: 1,
        };
        assert_eq!(info.dev_name(), "253:3");
        let big = DevInfo {
            dev: (253 << 8) | 0x34 | (0x12 << 20),
            ..info
        };
        assert_eq!(big.dev_name(), "253:4660");
    }

    #[test]
    fn name_lists_are_walked_by_their_next_offsets() {
        let mut data = vec![0u8; 64];
        data[0..8].copy_from_slice(&((253u64 << 8) | 1).to_ne_bytes());
        data[8..12].copy_from_slice(&24u32.to_ne_bytes());
        data[12..17].copy_from_slice(b"alpha");
        data[24..32].copy_from_slice(&((253u64 << 8) | 2).to_ne_bytes());
        data[36..40].copy_from_slice(b"beta");
        let buf = request("", 0, &data, 0).unwrap();
        assert_eq!(parse_names(&buf), vec!["alpha", "beta"]);
        let empty = request("", 0, &[0u8; 16], 0).unwrap();
        assert!(parse_names(&empty).is_empty());
    }
}
