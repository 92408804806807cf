//! A minimal 16550 UART at 0x3f8 (COM1): the transmit holding register goes to the serial log,
//! the line status always says "transmitter empty", no input and no interrupts yet.

use std::io::Write;
use std::time::Instant;

/// COM1's base port.
pub const COM1: u16 = 0x3f8;
/// The UART's eight registers.
pub const PORTS: u16 = 8;

const DATA: u16 = 0; // THR/RBR, DLL when DLAB
const IER: u16 = 1; // DLM when DLAB
const IIR_FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const MSR: u16 = 6;
const SCR: u16 = 7;

const LCR_DLAB: u8 = 0x80;
const LSR_THRE_TEMT: u8 = 0x60;
const IIR_NO_INTERRUPT: u8 = 0x01;
const MSR_DCD_DSR_CTS: u8 = 0xb0;

/// The UART's state and what the guest wrote.
pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    out: Vec<u8>,
    log: Option<Box<dyn Write + Send>>,
    first_line_at: Option<Instant>,
}

impl Serial {
    /// A UART whose output is kept in memory and, if given, copied to `log`.
    pub fn new(log: Option<Box<dyn Write + Send>>) -> Self {
        Serial {
            ier: 0,
            lcr: 0x03,
            mcr: 0x08,
            scr: 0,
            dll: 0x0c,
            dlm: 0,
            out: Vec::new(),
            log,
            first_line_at: None,
        }
    }

    /// Whether `port` is one of this UART's.
    pub fn claims(port: u16) -> bool {
        (COM1..COM1 + PORTS).contains(&port)
    }

    /// A guest `out` to `port`.
    pub fn write(&mut self, port: u16, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match port - COM1 {
            DATA if dlab => self.dll = value,
            DATA => self.transmit(value),
            IER if dlab => self.dlm = value,
            IER => self.ier = value & 0x0f,
            LCR => self.lcr = value,
            MCR => self.mcr = value & 0x1f,
            SCR => self.scr = value,
            _ => {} // FCR, LSR, MSR: nothing to keep
        }
    }

    /// A guest `in` from `port`.
    pub fn read(&self, port: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match port - COM1 {
            DATA if dlab => self.dll,
            DATA => 0,
            IER if dlab => self.dlm,
            IER => self.ier,
            IIR_FCR => IIR_NO_INTERRUPT,
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => LSR_THRE_TEMT,
            MSR => MSR_DCD_DSR_CTS,
            SCR => self.scr,
            _ => 0,
        }
    }

    fn transmit(&mut self, byte: u8) {
        self.out.push(byte);
        if byte == b'\n' && self.first_line_at.is_none() {
            self.first_line_at = Some(Instant::now());
        }
        if let Some(log) = self.log.as_mut()
            && log.write_all(&[byte]).is_err()
        {
            // A log that fails is dropped rather than stopping the guest.
            self.log = None;
        }
    }

    /// Everything the guest wrote.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// When the guest completed its first line.
    pub fn first_line_at(&self) -> Option<Instant> {
        self.first_line_at
    }

    /// The output, with the log (if any) flushed.
    pub fn finish(mut self) -> (Vec<u8>, Option<Instant>) {
        if let Some(log) = self.log.as_mut() {
            let _ = log.flush();
        }
        (self.out, self.first_line_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmits_and_reports_empty() {
        let mut s = Serial::new(None);
        assert_eq!(s.read(COM1 + LSR) & 0x20, 0x20);
        for b in b"hi\n" {
            s.write(COM1, *b);
        }
        assert_eq!(s.output(), b"hi\n");
        assert!(s.first_line_at().is_some());
    }

    #[test]
    fn divisor_latch_does_not_transmit() {
        let mut s = Serial::new(None);
        s.write(COM1 + LCR, 0x80);
        s.write(COM1, 0x01);
        s.write(COM1 + IER, 0x00);
        assert_eq!(s.read(COM1), 0x01);
        s.write(COM1 + LCR, 0x03);
        assert!(s.output().is_empty());
    }
}
