//! COM1: vm-superio's 16550 with its interrupt on an irqfd (GSI 4), output to the console
//! (a log file and an in-memory tail for the API), input from the control socket.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// COM1's base port and its eight registers.
pub const COM1: u64 = 0x3f8;
pub const COM1_LEN: u64 = 8;
/// COM1's ISA IRQ.
pub const COM1_GSI: u32 = 4;
/// How much console output is kept in memory at least (up to twice this), for
/// [`ConsoleBuffer::tail`]; the log keeps more.
pub const CONSOLE_TAIL: usize = 1 << 20;

/// Raises an interrupt by writing the irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// What the guest printed: the tail in memory, when its first line ended.
#[derive(Default)]
pub struct ConsoleBuffer {
    tail: Vec<u8>,
    /// Bytes ever written (the tail may have dropped its start).
    pub total: u64,
    pub first_line_at: Option<Instant>,
    /// The attached client (a non-blocking socket), as a container's monitor has one (see
    /// `launcher::attach`): output it cannot take at once is dropped for it rather than
    /// stalling the guest's UART; a newer client replaces it.
    attached: Vec<std::os::unix::net::UnixStream>,
}

impl ConsoleBuffer {
    /// Streams everything the guest prints from now on to `client` (made non-blocking),
    /// instead of to the client attached before, which is told so and let go.
    pub fn attach(&mut self, client: std::os::unix::net::UnixStream) -> io::Result<()> {
        client.set_nonblocking(true)?;
        for mut old in self.attached.drain(..) {
            let _ = old.write(crate::launcher::attach::TAKEN_OVER);
        }
        self.attached.push(client);
        Ok(())
    }

    /// How many clients are attached.
    pub fn attached(&self) -> usize {
        self.attached.len()
    }

    /// The last `max` bytes (at most [`CONSOLE_TAIL`]).
    pub fn tail(&self, max: usize) -> &[u8] {
        let max = max.min(CONSOLE_TAIL);
        &self.tail[self.tail.len().saturating_sub(max)..]
    }
}

/// What the log gets at once at most: output is written a line (or this much) at a time.
const LOG_BATCH: usize = 4096;

/// The serial port's output side: the shared buffer and an optional log.
pub struct ConsoleOut {
    buffer: Arc<Mutex<ConsoleBuffer>>,
    log: Option<File>,
    /// Output not yet in the log: the UART hands over one byte at a time, and a write(2) per
    /// byte (to a pty its monitor reads) cost ~40 µs each — 2 minutes for 3 MiB. Written at
    /// each line end, at [`LOG_BATCH`], and by [`SerialDevice::flush_log`] (the VMM's serve
    /// loop, for a line still open such as a prompt).
    pending: Vec<u8>,
}

impl ConsoleOut {
    fn new(buffer: Arc<Mutex<ConsoleBuffer>>, log: Option<File>) -> ConsoleOut {
        ConsoleOut {
            buffer,
            log,
            pending: Vec::new(),
        }
    }

    fn flush_log(&mut self) {
        if let Some(log) = &mut self.log
            && !self.pending.is_empty()
        {
            // A full disk (or a gone monitor) must not stop the guest; the in-memory tail
            // still has it.
            let _ = log.write_all(&self.pending);
        }
        self.pending.clear();
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.log.is_some() {
            self.pending.extend_from_slice(buf);
            if buf.contains(&b'\n') || self.pending.len() >= LOG_BATCH {
                self.flush_log();
            }
        }
        if let Ok(mut b) = self.buffer.lock() {
            if b.first_line_at.is_none() && buf.contains(&b'\n') {
                b.first_line_at = Some(Instant::now());
            }
            b.total += buf.len() as u64;
            // A full socket (a slow reader) loses this output; a closed one is let go.
            b.attached.retain_mut(|c| match c.write(buf) {
                Ok(_) => true,
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            });
            b.tail.extend_from_slice(buf);
            // Trimmed when twice the size, not at every byte past it: a drain per byte moved
            // the whole megabyte each time (a guest printing 3 MiB took 80 s).
            if b.tail.len() > 2 * CONSOLE_TAIL {
                let cut = b.tail.len() - CONSOLE_TAIL;
                b.tail.drain(..cut);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// vm-superio's register state, in a form serde can write.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    dll: u8,
    dlh: u8,
    ier: u8,
    iir: u8,
    lcr: u8,
    lsr: u8,
    mcr: u8,
    msr: u8,
    scr: u8,
    input: Vec<u8>,
}

impl From<&SerialState> for SerialSnapshot {
    fn from(s: &SerialState) -> Self {
        SerialSnapshot {
            dll: s.baud_divisor_low,
            dlh: s.baud_divisor_high,
            ier: s.interrupt_enable,
            iir: s.interrupt_identification,
            lcr: s.line_control,
            lsr: s.line_status,
            mcr: s.modem_control,
            msr: s.modem_status,
            scr: s.scratch,
            input: s.in_buffer.clone(),
        }
    }
}

impl From<&SerialSnapshot> for SerialState {
    fn from(s: &SerialSnapshot) -> Self {
        SerialState {
            baud_divisor_low: s.dll,
            baud_divisor_high: s.dlh,
            interrupt_enable: s.ier,
            interrupt_identification: s.iir,
            line_control: s.lcr,
            line_status: s.lsr,
            modem_control: s.mcr,
            modem_status: s.msr,
            scratch: s.scr,
            in_buffer: s.input.clone(),
        }
    }
}

type Uart = Serial<IrqTrigger, NoEvents, ConsoleOut>;

/// The 16550 on the port I/O bus.
pub struct SerialDevice {
    uart: Uart,
    /// Console input the UART's 64-byte FIFO has no room for yet: fed in as the guest reads
    /// (a 100-byte line used to lose everything past the 64th byte).
    pending_input: VecDeque<u8>,
}

/// Console input queued beyond the UART's FIFO at most: an API request's maximum.
pub const INPUT_QUEUE: usize = 65536;

impl SerialDevice {
    pub fn new(irq: EventFd, buffer: Arc<Mutex<ConsoleBuffer>>, log: Option<File>) -> Self {
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), ConsoleOut::new(buffer, log)),
            pending_input: VecDeque::new(),
        }
    }

    /// A UART continuing from a snapshot's register state.
    pub fn from_state(
        state: &SerialSnapshot,
        irq: EventFd,
        buffer: Arc<Mutex<ConsoleBuffer>>,
        log: Option<File>,
    ) -> Result<Self, String> {
        Serial::from_state(
            &state.into(),
            IrqTrigger(irq),
            NoEvents,
            ConsoleOut::new(buffer, log),
        )
        .map(|uart| SerialDevice {
            uart,
            pending_input: VecDeque::new(),
        })
        .map_err(|e| format!("{e:?}"))
    }

    pub fn state(&self) -> SerialSnapshot {
        SerialSnapshot::from(&self.uart.state())
    }

    /// Writes the output not yet in the log (a line still open).
    pub fn flush_log(&mut self) {
        self.uart.writer_mut().flush_log();
    }

    /// Queues console input for the guest, all of it or (when the queue has no room for all
    /// of it) none: Err says how many bytes there is room for.
    pub fn input(&mut self, bytes: &[u8]) -> Result<(), usize> {
        let room = INPUT_QUEUE - self.pending_input.len();
        if bytes.len() > room {
            return Err(room);
        }
        self.pending_input.extend(bytes);
        self.refill();
        Ok(())
    }

    /// Moves queued input into the FIFO as far as it has room (raising the interrupt).
    fn refill(&mut self) {
        if self.pending_input.is_empty() {
            return;
        }
        let n = self
            .uart
            .enqueue_raw_bytes(self.pending_input.make_contiguous())
            .unwrap_or(0);
        self.pending_input.drain(..n);
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.uart.read(off);
            if off == 0 {
                // The guest took a byte from the FIFO: room for the next queued one.
                self.refill();
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(off) = u8::try_from(offset) else {
            return;
        };
        // Every byte: a `rep outsb` arrives as one exit carrying all of its bytes for this
        // one register (only the first used to be kept, so string output lost the rest).
        for &b in data {
            // An irqfd that cannot be written leaves the guest polling; nothing else to do.
            let _ = self.uart.write(off, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reaches_the_tail_and_marks_the_first_line() {
        let buffer = Arc::new(Mutex::new(ConsoleBuffer::default()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq, buffer.clone(), None);
        for b in b"hi\nthere" {
            s.write(0, &[*b]);
        }
        let b = buffer.lock().unwrap();
        assert_eq!(b.tail(100), b"hi\nthere");
        assert_eq!(b.tail(5), b"there");
        assert!(b.first_line_at.is_some());
        assert_eq!(b.total, 8);
    }

    #[test]
    fn a_string_write_keeps_every_byte() {
        let buffer = Arc::new(Mutex::new(ConsoleBuffer::default()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq, buffer.clone(), None);
        // `rep outsb` of a line: one exit, all of its bytes for the data register.
        s.write(0, b"one exit\n");
        s.write(0, b"two");
        assert_eq!(buffer.lock().unwrap().tail(100), b"one exit\ntwo");
    }

    #[test]
    fn a_line_longer_than_the_fifo_arrives_whole() {
        let buffer = Arc::new(Mutex::new(ConsoleBuffer::default()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq, buffer, None);
        let line: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        assert_eq!(s.input(&line), Ok(()));
        let mut got = Vec::new();
        let mut b = [0u8];
        loop {
            s.read(5, &mut b);
            if b[0] & 1 == 0 {
                break;
            }
            s.read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, line);
        // All or nothing: more than the queue holds is refused whole.
        assert_eq!(s.input(&vec![b'x'; INPUT_QUEUE + 1]), Err(INPUT_QUEUE));
        s.read(5, &mut b);
        assert_eq!(b[0] & 1, 0, "a refused input left bytes behind");
    }

    #[test]
    fn input_is_readable_and_raises_the_irq_when_enabled() {
        let buffer = Arc::new(Mutex::new(ConsoleBuffer::default()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = irq.try_clone().unwrap();
        let mut s = SerialDevice::new(irq, buffer, None);
        s.write(1, &[0x01]); // IER: received data available
        assert_eq!(s.input(b"x"), Ok(()));
        assert_eq!(probe.read().unwrap(), 1);
        let mut b = [0u8];
        s.read(5, &mut b);
        assert_eq!(b[0] & 1, 1, "LSR data ready");
        s.read(0, &mut b);
        assert_eq!(b[0], b'x');
    }
}
