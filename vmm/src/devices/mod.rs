//! The VM's devices and the buses the vCPUs reach them on: port I/O (serial, i8042) and MMIO
//! (virtio-mmio transports). A vCPU exit is routed to the device that owns the address; the
//! device runs on the vCPU thread under its own lock.

pub mod i8042;
pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex};

/// A device on a bus: `offset` is relative to the start of its range.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Address ranges mapped to devices; ranges never overlap.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: Vec<(u64, u64, SharedDevice)>,
}

/// Two devices asked for overlapping ranges.
#[derive(Debug, thiserror::Error)]
#[error("bus range {start:#x}+{len:#x} overlaps a device already there")]
pub struct Overlap {
    pub start: u64,
    pub len: u64,
}

impl Bus {
    pub fn insert(&mut self, start: u64, len: u64, dev: SharedDevice) -> Result<(), Overlap> {
        let end = start.saturating_add(len);
        if len == 0
            || self
                .ranges
                .iter()
                .any(|(s, l, _)| start < s.saturating_add(*l) && *s < end)
        {
            return Err(Overlap { start, len });
        }
        self.ranges.push((start, len, dev));
        self.ranges.sort_by_key(|(s, _, _)| *s);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let i = self.ranges.partition_point(|(s, _, _)| *s <= addr);
        let (start, len, dev) = self.ranges.get(i.checked_sub(1)?)?;
        (addr - start < *len).then_some((addr - start, dev))
    }

    /// Reads from the device at `addr`; false (and `data` untouched) when none is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                // A device that panicked under its lock is gone; the bus floats high.
                match dev.lock() {
                    Ok(mut d) => d.read(offset, data),
                    Err(_) => data.fill(0xff),
                }
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; false when none is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                if let Ok(mut d) = dev.lock() {
                    d.write(offset, data);
                }
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + offset as u8);
        }
        fn write(&mut self, _: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn routes_by_range_and_refuses_overlaps() {
        let mut bus = Bus::default();
        bus.insert(0x100, 0x10, Arc::new(Mutex::new(Echo(1))))
            .unwrap();
        bus.insert(0x200, 0x10, Arc::new(Mutex::new(Echo(0x40))))
            .unwrap();
        assert!(bus.insert(0x10f, 2, Arc::new(Mutex::new(Echo(0)))).is_err());
        let mut b = [0u8; 1];
        assert!(bus.read(0x103, &mut b));
        assert_eq!(b[0], 4);
        assert!(bus.write(0x200, &[7]));
        assert!(bus.read(0x201, &mut b));
        assert_eq!(b[0], 8);
        assert!(!bus.read(0x110, &mut b));
        assert!(!bus.read(0xff, &mut b));
    }
}
