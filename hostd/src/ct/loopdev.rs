//! Mounting a filesystem image through a loop device, with the kernel's ioctls (no `mount`
//! binary: the appliance has none). The loop device is set to clear itself when the mount
//! goes, so unmounting is all the cleanup there is.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; LO_NAME_SIZE],
    crypt_name: [u8; LO_NAME_SIZE],
    encrypt_key: [u8; LO_KEY_SIZE],
    init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

/// Mounts the ext4 image `image` at `at` (nosuid, nodev) through a free loop device.
pub fn mount_image(image: &Path, at: &Path) -> std::io::Result<()> {
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Another process may take the free device between the two calls: ask again.
    for _ in 0..16 {
        // SAFETY: an open loop-control device; the ioctl takes no argument.
        let n = unsafe { loop_ctl_get_free(control.as_raw_fd()) }?;
        let dev = format!("/dev/loop{n}");
        let loop_dev = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let config = LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).map_err(std::io::Error::other)?,
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                sizelimit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_AUTOCLEAR,
                file_name: [0; LO_NAME_SIZE],
                crypt_name: [0; LO_NAME_SIZE],
                encrypt_key: [0; LO_KEY_SIZE],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: an open loop device and a loop_config laid out as the kernel's.
        match unsafe { loop_configure(loop_dev.as_raw_fd(), &config) } {
            Ok(_) => {}
            Err(Errno::EBUSY) => continue,
            Err(e) => return Err(e.into()),
        }
        let mounted = nix::mount::mount(
            Some(Path::new(&dev)),
            at,
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        );
        // The mount holds the device now; with autoclear it goes when the mount does (or
        // now, when the mount failed and this was the last reference).
        drop::<File>(loop_dev);
        return mounted.map_err(std::io::Error::from);
    }
    Err(std::io::Error::other("no free loop device"))
}

/// Unmounts `at` (detached when busy); not mounted is fine.
pub fn unmount(at: &Path) -> std::io::Result<()> {
    match nix::mount::umount2(at, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether something is mounted at `at` (per /proc/self/mountinfo).
pub fn is_mounted(at: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = at.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point == want)
}
