//! The MC146818 CMOS real-time clock at ports 0x70 (index) and 0x71 (data), reading the host's
//! UTC time. Without it every port read floats high, so the update-in-progress bit looks set for
//! ever: Linux's `rtc_cmos` probe then polls it for a second with interrupts off — tens of
//! seconds of port exits in a nested guest, reported as a soft lockup. No alarm, no periodic
//! interrupt: the guest's clock is kvm-clock; this only answers what the time is.

use std::time::{SystemTime, UNIX_EPOCH};

use super::BusDevice;

pub const CMOS_BASE: u64 = 0x70;
pub const CMOS_LEN: u64 = 2;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
/// Register A: divider 32.768 kHz, 1024 Hz rate; bit 7 (update in progress) never set.
const REG_A: u8 = 0x0a;
const REG_A_VALUE: u8 = 0x26;
/// Register B: 24-hour mode, BCD, no interrupts enabled.
const REG_B: u8 = 0x0b;
const REG_B_VALUE: u8 = 0x02;
/// Register C: no interrupt flags pending.
const REG_C: u8 = 0x0c;
/// Register D: bit 7, the battery and the RAM are valid.
const REG_D: u8 = 0x0d;
const REG_D_VALUE: u8 = 0x80;
const CENTURY: u8 = 0x32;

/// The RTC: an index latch and 128 bytes of battery-backed RAM (the guest may keep its own
/// bytes there; the time and status registers are computed on each read).
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    now: fn() -> u64,
}

impl Default for Cmos {
    fn default() -> Self {
        Cmos::with_clock(host_seconds)
    }
}

fn host_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Cmos {
    fn with_clock(now: fn() -> u64) -> Cmos {
        Cmos {
            index: 0,
            ram: [0; 128],
            now,
        }
    }

    fn register(&self, index: u8) -> u8 {
        let t = Time::from_unix((self.now)());
        match index {
            SECONDS => bcd(t.second),
            MINUTES => bcd(t.minute),
            HOURS => bcd(t.hour),
            WEEKDAY => bcd(t.weekday),
            DAY => bcd(t.day),
            MONTH => bcd(t.month),
            YEAR => bcd((t.year % 100) as u8),
            CENTURY => bcd((t.year / 100 % 100) as u8),
            REG_A => REG_A_VALUE,
            REG_B => REG_B_VALUE,
            REG_C => 0,
            REG_D => REG_D_VALUE,
            i => self.ram[usize::from(i & 0x7f)],
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            1 => self.register(self.index),
            _ => self.index,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            // Bit 7 of the index port is the NMI mask, not part of the index.
            0 => self.index = value & 0x7f,
            // The clock and status registers are the host's; only plain RAM takes writes.
            _ if self.index > REG_D && self.index != CENTURY => {
                self.ram[usize::from(self.index)] = value;
            }
            _ => {}
        }
    }
}

fn bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// A UTC calendar time.
#[derive(Debug, PartialEq, Eq)]
struct Time {
    year: u32,
    month: u8,
    day: u8,
    /// 1 = Sunday, as the MC146818 counts.
    weekday: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Time {
    fn from_unix(secs: u64) -> Time {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Howard Hinnant's days-to-civil, for days since 1970-01-01 (non-negative here).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        Time {
            year: u32::try_from(year).unwrap_or(u32::MAX),
            month: month as u8,
            day: day as u8,
            // 1970-01-01 was a Thursday (5 when Sunday is 1).
            weekday: ((days + 4) % 7 + 1) as u8,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &mut Cmos, index: u8) -> u8 {
        c.write(0, &[index | 0x80]);
        let mut b = [0xffu8];
        c.read(1, &mut b);
        b[0]
    }

    #[test]
    fn calendar_from_unix_seconds() {
        let t = Time::from_unix(0);
        assert_eq!((t.year, t.month, t.day, t.weekday), (1970, 1, 1, 5));
        // 2026-12-03 11:04:05 UTC, a Thursday.
        let t = Time::from_unix(1_796_295_845);
        assert_eq!(
            (
                t.year, t.month, t.day, t.weekday, t.hour, t.minute, t.second
            ),
            (2026, 12, 3, 5, 11, 4, 5)
        );
        // A leap day.
        let t = Time::from_unix(951_782_400);
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, 3));
    }

    #[test]
    fn the_guest_reads_the_host_time_in_bcd_and_never_an_update_in_progress() {
        let mut c = Cmos::with_clock(|| 1_796_295_845);
        assert_eq!(read(&mut c, REG_A) & 0x80, 0, "update in progress");
        assert_eq!(read(&mut c, REG_B), 0x02);
        assert_eq!(read(&mut c, REG_D), 0x80);
        let got: Vec<u8> = [YEAR, MONTH, DAY, HOURS, MINUTES, SECONDS, CENTURY]
            .iter()
            .map(|&r| read(&mut c, r))
            .collect();
        assert_eq!(got, [0x26, 0x12, 0x03, 0x11, 0x04, 0x05, 0x20]);
        // RAM keeps what the guest wrote; the clock ignores writes.
        c.write(0, &[0x40]);
        c.write(1, &[0xab]);
        assert_eq!(read(&mut c, 0x40), 0xab);
        c.write(0, &[SECONDS]);
        c.write(1, &[0x59]);
        assert_eq!(read(&mut c, SECONDS), 0x05);
    }
}
