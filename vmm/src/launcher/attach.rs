//! The one client attached to a container's console (`cairnctl ct console`, through hostd and
//! apid): what the guest prints goes to it as well as to the log, and what it sends is the
//! guest's input. Part of the monitor's console loop ([`super::console`]), so nothing here may
//! wait: the socket is used with MSG_DONTWAIT, the pty's master is non-blocking.
//!
//! One attacher at a time, and the newest wins (as `virsh console --force`): a session whose
//! client vanished without closing can always be replaced, and two people typing into one
//! shell at once is never what either wanted. The one pushed out is told so, then closed.
//!
//! Bounded whatever either side does: output the client cannot take at once (its socket buffer
//! is full: a slow or stalled reader) is dropped for it — the log still has it and the guest is
//! never held up; input waits in at most [`INPUT_CAP`] bytes while the guest does not read its
//! console, and the client is not read meanwhile (it waits, its socket buffer full).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send};

/// Input held for a guest that is not reading its console, at most.
pub const INPUT_CAP: usize = 4096;

/// What a client pushed out by a newer one reads last.
pub const TAKEN_OVER: &[u8] = b"\r\n[cairn: another session attached to this console]\r\n";

/// The listening socket and the client attached through it, if any.
#[derive(Debug)]
pub struct Attach {
    listener: UnixListener,
    client: Option<Client>,
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    /// Input the guest's pty has not taken yet.
    input: Vec<u8>,
    /// Output this client missed because it did not read in time.
    dropped: u64,
    /// It hung up: let go once its last input reached the guest.
    closed: bool,
    /// Its reading side is gone: no more output for it (what it sent is still read).
    deaf: bool,
}

impl Attach {
    /// Serves `listener` (which must be non-blocking).
    pub fn new(listener: UnixListener) -> Attach {
        Attach {
            listener,
            client: None,
        }
    }

    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// The client's fd and the poll events it waits for: POLLIN only while there is room for
    /// its input (hang-ups are reported either way).
    pub fn client_poll(&self) -> Option<(RawFd, libc::c_short)> {
        self.client.as_ref().filter(|c| !c.closed).map(|c| {
            let events = if c.input.len() < INPUT_CAP {
                libc::POLLIN
            } else {
                0
            };
            (c.stream.as_raw_fd(), events)
        })
    }

    /// Whether input waits for the guest's pty (poll it for POLLOUT).
    pub fn has_input(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.input.is_empty())
    }

    /// Whether a client is attached.
    pub fn attached(&self) -> bool {
        self.client.is_some()
    }

    /// Takes the clients that connected: each replaces the one before.
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(old) = self.client.take() {
                        let _ = send(
                            old.stream.as_raw_fd(),
                            TAKEN_OVER,
                            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                        );
                        report_drops(&old);
                    }
                    self.client = Some(Client {
                        stream,
                        input: Vec::new(),
                        dropped: 0,
                        closed: false,
                        deaf: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock: all taken. Anything else (EMFILE…) is tried again next time.
                Err(_) => return,
            }
        }
    }

    /// Reads what the client sent, up to the room left; a client that hung up is detached.
    pub fn read_client(&mut self) {
        let Some(c) = self.client.as_mut().filter(|c| !c.closed) else {
            return;
        };
        let room = INPUT_CAP.saturating_sub(c.input.len());
        if room == 0 {
            return;
        }
        let mut buf = [0u8; INPUT_CAP];
        match recv(
            c.stream.as_raw_fd(),
            &mut buf[..room],
            MsgFlags::MSG_DONTWAIT,
        ) {
            // What it typed last still goes to the guest (`echo x; exit` piped in).
            Ok(0) if !c.input.is_empty() => c.closed = true,
            Ok(0) => self.detach(),
            Ok(n) => c.input.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.detach(),
        }
    }

    /// Hands the client's input to the guest's pty, as much as it takes now.
    pub fn write_input(&mut self, master: &mut File) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        match master.write(&c.input) {
            Ok(n) => {
                c.input.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            // The pty is gone (the guest's end closed for good): the input has nowhere to go.
            Err(_) => c.input.clear(),
        }
        if c.closed && c.input.is_empty() {
            self.detach();
        }
    }

    /// Sends the guest's output to the client, as much as its socket takes now.
    pub fn output(&mut self, bytes: &[u8]) {
        let Some(c) = self.client.as_mut().filter(|c| !c.closed && !c.deaf) else {
            return;
        };
        match send(
            c.stream.as_raw_fd(),
            bytes,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => c.dropped += (bytes.len() - n) as u64,
            Err(Errno::EAGAIN | Errno::EINTR) => c.dropped += bytes.len() as u64,
            // EPIPE: it closed (perhaps right after typing, before it was even accepted); its input
            // is still read to its end.
            Err(_) => c.deaf = true,
        }
    }

    fn detach(&mut self) {
        if let Some(c) = self.client.take() {
            report_drops(&c);
        }
    }
}

fn report_drops(c: &Client) {
    if c.dropped > 0 {
        eprintln!(
            "cairn monitor: an attached console client missed {} bytes of output (it did not \
             read in time)",
            c.dropped
        );
    }
}
