//! The i8042 keyboard controller, as much of it as Linux and our test guest use: the
//! controller self-tests and command byte, keyboard ACKs, the CPU reset line (command 0xfe, how
//! guests reboot with `reboot=k`), and Ctrl-Alt-Del injection, which is how a stop asks a guest
//! to shut down (no ACPI here, as in Firecracker).

use vmm_sys_util::eventfd::EventFd;

use std::collections::VecDeque;

use super::BusDevice;

/// Data port 0x60; status/command port 0x64 is offset 4 of the same range.
pub const I8042_BASE: u64 = 0x60;
pub const I8042_LEN: u64 = 5;
/// The keyboard's ISA IRQ.
pub const KBD_GSI: u32 = 1;

const OFF_DATA: u64 = 0;
const OFF_CMD: u64 = 4;

const SB_OUT_FULL: u8 = 0x01;
const SB_SYSTEM: u8 = 0x04;
const SB_CMD_DATA: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

const CB_KBD_INT: u8 = 0x01;
const CB_POST_OK: u8 = 0x04;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_KBD_OUT: u8 = 0xd2;
const CMD_RESET_CPU: u8 = 0xfe;

const KBD_ACK: u8 = 0xfa;
const KBD_RESET_OK: u8 = 0xaa;
const KBD_CMD_RESET: u8 = 0xff;
const KBD_CMD_IDENTIFY: u8 = 0xf2;
const KBD_CMD_LEDS: u8 = 0xed;
const KBD_CMD_RATE: u8 = 0xf3;

/// Scan code set 2: Ctrl, Alt, Del pressed then released.
const CTRL_ALT_DEL: [u8; 12] = [
    0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14, 0x00,
];

/// What a written byte on the data port is for.
#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Pending {
    None,
    Ctr,
    OutputPort,
    KbdOut,
    KbdArg,
}

/// The controller; `reset` is written when the guest pulses the CPU reset line.
pub struct I8042 {
    status: u8,
    ctr: u8,
    outp: u8,
    pending: Pending,
    out: VecDeque<u8>,
    irq: EventFd,
    reset: EventFd,
}

impl I8042 {
    pub fn new(irq: EventFd, reset: EventFd) -> Self {
        I8042 {
            status: SB_SYSTEM | SB_KBD_ENABLED,
            ctr: CB_KBD_INT | CB_POST_OK,
            outp: 0x01,
            pending: Pending::None,
            out: VecDeque::new(),
            irq,
            reset,
        }
    }

    fn push(&mut self, byte: u8) {
        self.out.push_back(byte);
        self.status |= SB_OUT_FULL;
        if self.ctr & CB_KBD_INT != 0 {
            // A lost edge only delays the guest's read; it polls the status port too.
            let _ = self.irq.write(1);
        }
    }

    /// Presses and releases Ctrl-Alt-Del.
    pub fn ctrl_alt_del(&mut self) {
        for b in CTRL_ALT_DEL.iter().take(CTRL_ALT_DEL.len() - 1) {
            self.push(*b);
        }
    }

    fn command(&mut self, cmd: u8) {
        self.status |= SB_CMD_DATA;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR => self.pending = Pending::Ctr,
            CMD_AUX_TEST => self.push(0xff),
            CMD_SELF_TEST => self.push(0x55),
            CMD_KBD_TEST => self.push(0x00),
            CMD_KBD_DISABLE => self.status &= !SB_KBD_ENABLED,
            CMD_KBD_ENABLE => self.status |= SB_KBD_ENABLED,
            CMD_READ_OUTP => self.push(self.outp),
            CMD_WRITE_OUTP => self.pending = Pending::OutputPort,
            CMD_WRITE_KBD_OUT => self.pending = Pending::KbdOut,
            CMD_RESET_CPU => {
                let _ = self.reset.write(1);
            }
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        self.status &= !SB_CMD_DATA;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Ctr => self.ctr = byte,
            Pending::OutputPort => {
                self.outp = byte;
                // Bit 0 of the output port is the CPU reset line, active low.
                if byte & 1 == 0 {
                    let _ = self.reset.write(1);
                }
            }
            Pending::KbdOut => self.push(byte),
            Pending::KbdArg => self.push(KBD_ACK),
            Pending::None => match byte {
                KBD_CMD_RESET => {
                    self.push(KBD_ACK);
                    self.push(KBD_RESET_OK);
                }
                KBD_CMD_IDENTIFY => {
                    self.push(KBD_ACK);
                    self.push(0xab);
                    self.push(0x83);
                }
                KBD_CMD_LEDS | KBD_CMD_RATE => {
                    self.push(KBD_ACK);
                    self.pending = Pending::KbdArg;
                }
                _ => self.push(KBD_ACK),
            },
        }
    }

    pub fn state(&self) -> I8042State {
        I8042State {
            status: self.status,
            ctr: self.ctr,
            outp: self.outp,
            pending: self.pending,
            out: self.out.iter().copied().collect(),
        }
    }

    pub fn restore(&mut self, s: &I8042State) {
        self.status = s.status;
        self.ctr = s.ctr;
        self.outp = s.outp;
        self.pending = s.pending;
        self.out = s.out.iter().copied().collect();
    }
}

/// The controller's registers and queued bytes, for snapshots.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    status: u8,
    ctr: u8,
    outp: u8,
    pending: Pending,
    out: Vec<u8>,
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            OFF_DATA => {
                let v = self.out.pop_front().unwrap_or(0);
                if self.out.is_empty() {
                    self.status &= !SB_OUT_FULL;
                } else if self.ctr & CB_KBD_INT != 0 {
                    let _ = self.irq.write(1);
                }
                v
            }
            OFF_CMD => self.status,
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&b) = data.first() else { return };
        match offset {
            OFF_DATA => self.data(b),
            OFF_CMD => self.command(b),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> (I8042, EventFd, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let d = I8042::new(irq.try_clone().unwrap(), reset.try_clone().unwrap());
        (d, irq, reset)
    }

    fn read(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_signals_reset() {
        let (mut d, _, reset) = dev();
        assert!(reset.read().is_err());
        d.write(OFF_CMD, &[CMD_RESET_CPU]);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn self_test_command_byte_and_ctrl_alt_del() {
        let (mut d, irq, _) = dev();
        d.write(OFF_CMD, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut d, OFF_CMD) & SB_OUT_FULL, SB_OUT_FULL);
        assert_eq!(read(&mut d, OFF_DATA), 0x55);
        d.write(OFF_CMD, &[CMD_WRITE_CTR]);
        d.write(OFF_DATA, &[0x45]);
        d.write(OFF_CMD, &[CMD_READ_CTR]);
        assert_eq!(read(&mut d, OFF_DATA), 0x45);
        let _ = irq.read();
        d.ctrl_alt_del();
        assert!(irq.read().unwrap() >= 1);
        let codes: Vec<u8> = (0..11).map(|_| read(&mut d, OFF_DATA)).collect();
        assert_eq!(&codes[..4], &[0x14, 0x11, 0xe0, 0x71]);
        assert_eq!(read(&mut d, OFF_CMD) & SB_OUT_FULL, 0);
    }
}
