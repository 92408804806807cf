//! Persistent tap devices: created here with TUNSETIFF + TUNSETPERSIST and closed again, so the
//! VMM opens the same device by name later (a second TUNSETIFF with the name attaches to it).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use crate::net::NetError;
use crate::net::kernel::Kernel;

pub fn create(k: &Kernel, name: &str) -> Result<(), NetError> {
    let what = || format!("create tap {name}");
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| NetError::io(format!("{}: open /dev/net/tun", what()), e))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    // IFF_VNET_HDR: the VMM exchanges virtio-net headers with the tap (offloads).
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    k.count();
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(NetError::io(what(), std::io::Error::last_os_error()));
    }
    k.count();
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(NetError::io(
            format!("{}: TUNSETPERSIST", what()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
