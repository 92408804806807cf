//! File-level work of a dir pool: reflinks, sparse copies, preallocation and the sizes a
//! filesystem reports.

use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};
use sha2::{Digest, Sha256};

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// The filesystem shares the blocks (xfs with reflink, btrfs): instant, no space used.
    Reflink,
    /// Only the data extents were copied; holes stay holes.
    Sparse,
}

impl Copied {
    pub fn as_str(self) -> &'static str {
        match self {
            Copied::Reflink => "reflink",
            Copied::Sparse => "sparse copy",
        }
    }
}

/// Copies `from` to the new file `to` (which must not exist): a reflink where the filesystem
/// has them, else a sparse copy. `to` is synced; on an error it is removed.
pub fn copy(from: &Path, to: &Path) -> std::io::Result<Copied> {
    let src = File::open(from)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let result = copy_into(&src, &dst).and_then(|how| {
        dst.sync_all()?;
        Ok(how)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    result
}

fn copy_into(src: &File, dst: &File) -> std::io::Result<Copied> {
    // SAFETY: two open descriptors; FICLONE reads the source's number from the argument.
    match unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as libc::c_ulong) } {
        Ok(_) => return Ok(Copied::Reflink),
        // Not this filesystem's (or not across these two): copy the data instead.
        Err(Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EXDEV | Errno::EINVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let len = length(src)?;
    walk(src, |at, piece| match piece {
        Piece::Data(bytes) => write_nonzero(dst, bytes, at),
        Piece::Hole(_) => Ok(()),
    })?;
    dst.set_len(len)?;
    Ok(Copied::Sparse)
}

/// Writes the data of `from` (a file or a block device) into `to` at the same offsets,
/// leaving out holes and blocks of zeros: `to` is a new thin volume or a sparse file, which
/// read as zeros where nothing was written.
pub fn copy_data(from: &Path, to: &File) -> std::io::Result<()> {
    let src = File::open(from)?;
    walk(&src, |at, piece| match piece {
        Piece::Data(bytes) => write_nonzero(to, bytes, at),
        Piece::Hole(_) => Ok(()),
    })?;
    to.sync_all()
}

/// Writes `bytes` at `at`, skipping the 64 KiB blocks that are all zeros (a block device
/// reads as data everywhere: this keeps copies of it sparse).
fn write_nonzero(dst: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    const BLOCK: usize = 64 << 10;
    let mut off = 0;
    while off < bytes.len() {
        let piece = &bytes[off..(off + BLOCK).min(bytes.len())];
        if piece.iter().any(|&b| b != 0) {
            std::os::unix::fs::FileExt::write_all_at(dst, piece, at + off as u64)?;
        }
        off += piece.len();
    }
    Ok(())
}

/// The length of a file or a block device (whose metadata says 0).
fn length(file: &File) -> std::io::Result<u64> {
    let mut f = file;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))
}

/// A stretch of a file, as [`walk`] finds it.
enum Piece<'a> {
    Data(&'a [u8]),
    /// That many bytes of hole (zeros, with no storage behind them).
    Hole(u64),
}

/// Calls `f` with every stretch of `src` in order: its data (in pieces of at most 1 MiB) and
/// its holes, found with SEEK_DATA/SEEK_HOLE, so a sparse file costs what it holds.
fn walk(
    src: &File,
    mut f: impl FnMut(u64, Piece<'_>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let len = length(src)?;
    let mut at = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while at < len {
        let offset = i64::try_from(at).map_err(std::io::Error::other)?;
        let data = match lseek(src, offset, Whence::SeekData) {
            Ok(d) => d as u64,
            // No data after `at`: the rest is a hole.
            Err(Errno::ENXIO) => len,
            // A block device knows no holes: all of it is data (the copies skip its zeros).
            Err(Errno::EINVAL) => at,
            Err(e) => return Err(e.into()),
        };
        if data > at {
            f(at, Piece::Hole(data - at))?;
        }
        if data >= len {
            break;
        }
        let hole = match lseek(src, data as i64, Whence::SeekHole) {
            Ok(h) => h as u64,
            Err(Errno::EINVAL) => len,
            Err(e) => return Err(e.into()),
        };
        let mut pos = data;
        while pos < hole {
            let want = usize::try_from((hole - pos).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = std::os::unix::fs::FileExt::read_at(src, &mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            f(pos, Piece::Data(&buf[..n]))?;
            pos += n as u64;
        }
        at = hole;
    }
    Ok(())
}

/// The sha256 of every byte of `src` (holes as zeros), as `sha256sum` prints it.
pub fn sha256(src: &Path) -> std::io::Result<String> {
    let file = File::open(src)?;
    let mut hash = Sha256::new();
    walk(&file, |_, piece| {
        hash_piece(&mut hash, &piece);
        Ok(())
    })?;
    Ok(model::hex(&hash.finalize()))
}

fn hash_piece(hash: &mut Sha256, piece: &Piece<'_>) {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    match piece {
        Piece::Data(bytes) => hash.update(bytes),
        Piece::Hole(len) => {
            let mut n = *len;
            while n > 0 {
                let k = n.min(ZEROS.len() as u64) as usize;
                hash.update(&ZEROS[..k]);
                n -= k as u64;
            }
        }
    }
}

/// Copies `from` into the new file `to`, sparse (holes stay holes), and returns the sha256
/// of every byte; `to` is synced, and removed on an error. `progress` is told the bytes
/// gone through (data and holes) after each piece.
pub fn copy_hashed(from: &Path, to: &Path, progress: &dyn Fn(u64)) -> std::io::Result<String> {
    let src = File::open(from)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let mut hash = Sha256::new();
    let result = walk(&src, |at, piece| {
        hash_piece(&mut hash, &piece);
        let done = match piece {
            Piece::Data(bytes) => {
                write_nonzero(&dst, bytes, at)?;
                at + bytes.len() as u64
            }
            Piece::Hole(len) => at + len,
        };
        progress(done);
        Ok(())
    })
    .and_then(|()| dst.set_len(length(&src)?))
    .and_then(|()| dst.sync_all());
    if let Err(e) = result {
        let _ = std::fs::remove_file(to);
        return Err(e);
    }
    Ok(model::hex(&hash.finalize()))
}

/// Allocates every byte of `file` up to `len` (a fully provisioned volume).
pub fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    let len = i64::try_from(len).map_err(std::io::Error::other)?;
    nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, len)
        .map_err(std::io::Error::from)
}

/// Why the file at `path`, `len` bytes long, is no raw disk image a volume can be made of:
/// empty, not whole sectors, or another format's header (a guest would see the container's
/// bytes, not the disk inside it).
pub fn check_raw_image(path: &Path, len: u64) -> Result<(), String> {
    if len == 0 {
        return Err("the image is empty".into());
    }
    if !len.is_multiple_of(512) {
        return Err(format!(
            "{len} bytes is not a whole number of 512-byte sectors"
        ));
    }
    let mut head = Vec::with_capacity(512);
    File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| e.to_string())?;
    match image_format(&head) {
        None => Ok(()),
        Some(format) => Err(format!(
            "it is a {format} image, not a raw one (convert it first: qemu-img convert -O raw)"
        )),
    }
}

/// The container format whose magic `head` (a file's first bytes) starts with.
fn image_format(head: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 5] = [
        (b"QFI\xfb", "qcow2"),
        (b"KDMV", "VMDK"),
        (b"vhdxfile", "VHDX"),
        (b"conectix", "VHD"),
        (b"<<< ", "VDI"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, format)| *format)
}

/// Bytes a file holds on its filesystem (its blocks, not its length).
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// (capacity, used, free to unprivileged writers) of the filesystem holding `path`.
pub fn space(path: &Path) -> std::io::Result<(u64, u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = st.fragment_size();
    let capacity = st.blocks() * frsize;
    let free = st.blocks_free() * frsize;
    let avail = st.blocks_available() * frsize;
    Ok((capacity, capacity.saturating_sub(free), avail))
}
