//! A writer for the cpio "newc" format (the one the kernel unpacks as an initramfs), and a small
//! reader used by the tests. Written here rather than shelling out to cpio(1) so the archive is
//! reproducible (fixed inode numbers, mtime 0, uid/gid 0) and can contain device nodes without root.

use std::io::{self, Read, Write};

/// The newc magic; "070702" (with checksums) is not needed since the kernel ignores them.
const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// Streams entries into `W`. Entries are written in the order given; the caller must add a
/// directory before anything inside it (the kernel's unpacker does not create parents).
pub struct Writer<W: Write> {
    out: W,
    /// Bytes written so far, to compute the 4-byte padding newc requires.
    offset: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            offset: 0,
            // Inode 0 is avoided: some unpackers treat it as "no inode".
            next_ino: 1,
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(name, S_IFDIR | (perm & 0o7777), 2, 0, (0, 0))
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        let t = target.as_bytes();
        self.header(name, S_IFLNK | 0o777, 1, t.len() as u64, (0, 0))?;
        self.data(t)?;
        self.pad()
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.header(name, S_IFCHR | (perm & 0o7777), 1, 0, (major, minor))
    }

    /// A regular file whose `size` bytes come from `content`; fails if it yields fewer or more,
    /// because a wrong size in the header would corrupt every entry after it.
    pub fn file(
        &mut self,
        name: &str,
        perm: u32,
        size: u64,
        content: &mut dyn Read,
    ) -> io::Result<()> {
        self.header(name, S_IFREG | (perm & 0o7777), 1, size, (0, 0))?;
        let mut limited = content.take(size);
        let copied = io::copy(&mut limited, &mut CountingWriter(self))?;
        let mut probe = [0u8; 1];
        if copied != size || content.read(&mut probe)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: the file changed size while it was archived"),
            ));
        }
        self.pad()
    }

    /// Writes the trailer and returns the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 1, 0, (0, 0))?;
        // Pad the archive to 512 bytes like cpio(1) does; harmless and some tools expect it.
        let rem = (self.offset % 512) as usize;
        if rem != 0 {
            self.data(&vec![0u8; 512 - rem])?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        size: u64,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: newc cannot hold files of 4 GiB or more"),
            )
        })?;
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?}: archive names must be relative and non-empty"),
            ));
        }
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let namesize = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size32, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut h = Vec::with_capacity(110 + name.len() + 4);
        h.extend_from_slice(MAGIC);
        for f in fields {
            h.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        self.data(&h)?;
        self.pad()
    }

    fn data(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.offset % 4) as usize;
        if rem != 0 {
            self.data(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }
}

/// Lets `io::copy` write file contents while the offset stays correct.
struct CountingWriter<'a, W: Write>(&'a mut Writer<W>);

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.out.write(buf)?;
        self.0.offset += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.out.flush()
    }
}

/// One entry read back from an archive (tests).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Parses a newc archive up to its trailer.
#[cfg(test)]
pub fn read_all(mut buf: &[u8]) -> io::Result<Vec<Entry>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let total = buf.len();
    let mut out = Vec::new();
    loop {
        if buf.len() < 110 || &buf[..6] != MAGIC {
            return Err(bad("missing newc header"));
        }
        let field = |i: usize| -> io::Result<u32> {
            let s = std::str::from_utf8(&buf[6 + i * 8..6 + (i + 1) * 8])
                .map_err(|_| bad("header is not ASCII"))?;
            u32::from_str_radix(s, 16).map_err(|_| bad("header field is not hex"))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_end = 110 + namesize;
        if namesize == 0 || buf.len() < name_end {
            return Err(bad("truncated name"));
        }
        let name = std::str::from_utf8(&buf[110..name_end - 1])
            .map_err(|_| bad("name is not UTF-8"))?
            .to_string();
        let consumed = total - buf.len();
        let data_start = align4(consumed + name_end) - consumed;
        let data_end = data_start + size;
        if buf.len() < data_end {
            return Err(bad("truncated data"));
        }
        let data = buf[data_start..data_end].to_vec();
        let next = (align4(consumed + data_end) - consumed).min(buf.len());
        buf = &buf[next..];
        if name == TRAILER {
            return Ok(out);
        }
        out.push(Entry {
            name,
            mode,
            rdev,
            data,
        });
    }
}

#[cfg(test)]
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.dir("etc", 0o755).unwrap();
        w.file("etc/a", 0o644, 5, &mut &b"hello"[..]).unwrap();
        w.file("etc/empty", 0o600, 0, &mut &b""[..]).unwrap();
        w.symlink("etc/link", "a").unwrap();
        w.dir("dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, 3, &mut &b"abc"[..]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_the_reader() {
        let buf = sample();
        assert_eq!(buf.len() % 512, 0);
        let e = read_all(&buf).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/a",
                "etc/empty",
                "etc/link",
                "dev",
                "dev/console",
                "init"
            ]
        );
        assert_eq!(e[0].mode, S_IFDIR | 0o755);
        assert_eq!(e[1].data, b"hello");
        assert_eq!(e[2].mode, S_IFREG | 0o600);
        assert_eq!(e[3].mode & 0o170000, S_IFLNK);
        assert_eq!(e[3].data, b"a");
        assert_eq!(e[5].rdev, (5, 1));
        assert_eq!(e[6].data, b"abc");
    }

    #[test]
    fn every_header_is_4_byte_aligned() {
        let buf = sample();
        let mut pos = 0;
        let mut seen = 0;
        while let Some(i) = buf[pos..].windows(6).position(|w| w == MAGIC) {
            assert_eq!((pos + i) % 4, 0, "header at {}", pos + i);
            pos += i + 6;
            seen += 1;
        }
        assert_eq!(seen, 8); // 7 entries + trailer
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let mut w = Writer::new(Vec::new());
        assert!(w.file("x", 0o644, 10, &mut &b"short"[..]).is_err());
        let mut w = Writer::new(Vec::new());
        assert!(w.file("x", 0o644, 2, &mut &b"longer"[..]).is_err());
    }

    #[test]
    fn absolute_names_are_refused() {
        let mut w = Writer::new(Vec::new());
        assert!(w.dir("/etc", 0o755).is_err());
    }

    /// Cross-checks with GNU cpio when it is installed (ci/deps installs it).
    #[test]
    fn gnu_cpio_lists_the_archive() {
        use std::process::{Command, Stdio};
        let Ok(mut child) = Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            eprintln!("cpio(1) not installed; skipping the cross-check");
            return;
        };
        let buf = sample();
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            [
                "etc",
                "etc/a",
                "etc/empty",
                "etc/link",
                "dev",
                "dev/console",
                "init"
            ]
        );
    }
}
