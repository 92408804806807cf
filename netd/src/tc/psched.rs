//! The packet scheduler's clock: converting sizes at a rate into psched ticks (and back) exactly
//! as iproute2 does (`tc_core_init`, `tc_calc_xmittime`, `tc_calc_xmitsize`, `tc_calc_rtable`),
//! so what netd sends is byte-for-byte what `tc` would send and `tc -d` reads it back unchanged.

use std::sync::OnceLock;

/// iproute2's TIME_UNITS_PER_SEC: tc's "time" is microseconds.
const USEC_PER_SEC: f64 = 1_000_000.0;

/// The kernel's tick scale from `/proc/net/psched`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psched {
    /// Ticks per microsecond; 15.625 on every current kernel (a tick is 64 ns).
    pub tick_in_usec: f64,
}

impl Psched {
    /// What every kernel since 2.6.x with high-resolution timers reports
    /// (`000003e8 00000040 000f4240 3b9aca00`).
    pub const MODERN: Psched = Psched {
        tick_in_usec: 15.625,
    };

    /// Parses the first three hex words of `/proc/net/psched` as `tc_core_init` does.
    pub fn parse(text: &str) -> Option<Psched> {
        let mut words = text
            .split_whitespace()
            .map(|w| u32::from_str_radix(w, 16).ok());
        let mut t2us = f64::from(words.next()??);
        let us2t = f64::from(words.next()??);
        let clock_res = f64::from(words.next()??);
        if us2t == 0.0 || clock_res == 0.0 {
            return None;
        }
        // iproute2's compatibility hack: a kernel with nanosecond resolution advertises 1000.
        if clock_res == 1_000_000_000.0 {
            t2us = us2t;
        }
        let clock_factor = clock_res / USEC_PER_SEC;
        Some(Psched {
            tick_in_usec: t2us / us2t * clock_factor,
        })
    }

    /// The running kernel's scale, read once: it never changes while the system runs. A kernel
    /// without `/proc/net/psched` (no CONFIG_PROC_FS) gets the modern constant, as tc would
    /// compute from the same kernel.
    pub fn kernel() -> Psched {
        static CACHE: OnceLock<Psched> = OnceLock::new();
        *CACHE.get_or_init(|| {
            match std::fs::read_to_string("/proc/net/psched")
                .ok()
                .as_deref()
                .and_then(Psched::parse)
            {
                Some(p) => p,
                None => {
                    tracing::warn!("cannot read /proc/net/psched; assuming 64 ns psched ticks");
                    Psched::MODERN
                }
            }
        })
    }

    /// Ticks to send `size` bytes at `rate` bytes/s (iproute2's `tc_calc_xmittime`, including
    /// its truncation to whole microseconds first). `None` when it does not fit the kernel's
    /// 32-bit tick fields (a huge burst at a tiny rate).
    pub fn xmittime(&self, rate_bytes: u64, size: u64) -> Option<u32> {
        if rate_bytes == 0 {
            return None;
        }
        let usec = USEC_PER_SEC * (size as f64 / rate_bytes as f64);
        if usec > f64::from(u32::MAX) {
            return None;
        }
        // tc_core_time2tick(unsigned int time): the double is truncated to whole µs first.
        let ticks = f64::from(usec as u32) * self.tick_in_usec;
        if ticks > f64::from(u32::MAX) {
            return None;
        }
        Some(ticks as u32)
    }

    /// Bytes that `ticks` allow at `rate` bytes/s (iproute2's `tc_calc_xmitsize`): how `tc -d`
    /// prints a burst.
    pub fn xmitsize(&self, rate_bytes: u64, ticks: u32) -> u64 {
        let usec = (f64::from(ticks) / self.tick_in_usec) as u32;
        (rate_bytes as f64 * f64::from(usec) / USEC_PER_SEC) as u64
    }

    /// The 256-entry rate table (`tc_calc_rtable` with mpu 0, linklayer ethernet): entry i is
    /// the time to send (i+1) << cell_log bytes. Entries that overflow saturate, which only
    /// happens below 1 byte/s — never at Cairn's minimum rate.
    pub fn rate_table(&self, rate_bytes: u64, cell_log: u8) -> [u32; 256] {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let size = ((i as u64) + 1) << cell_log;
            *slot = self.xmittime(rate_bytes, size).unwrap_or(u32::MAX);
        }
        table
    }
}

/// iproute2's cell size for an MTU: the smallest shift that puts `mtu` into 256 cells. With
/// the default (mtu 0 → 2047) and htb's 1600 both give 3.
pub fn cell_log(mtu: u32) -> u8 {
    let mtu = if mtu == 0 { 2047 } else { mtu };
    let mut log = 0u8;
    while (mtu >> log) > 255 {
        log += 1;
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_file_of_this_era_gives_64ns_ticks() {
        let p = Psched::parse("000003e8 00000040 000f4240 3b9aca00\n");
        assert_eq!(p, Some(Psched::MODERN));
        // An old 1 µs-resolution kernel: 1 tick per µs.
        let old = Psched::parse("00000001 00000001 000f4240 000f4240");
        assert_eq!(old.map(|p| p.tick_in_usec), Some(1.0));
        assert_eq!(Psched::parse("zz"), None);
        assert_eq!(Psched::parse("000003e8 00000000 000f4240"), None);
    }

    #[test]
    fn xmittime_matches_iproute2() {
        let p = Psched::MODERN;
        // Values seen in iproute2 6.1's messages (testdata/*.hex).
        assert_eq!(p.xmittime(12_500_000, 125_000), Some(156_250)); // 100mbit, 10 ms
        assert_eq!(p.xmittime(1_250, 1_514), Some(18_925_000)); // 10kbit, 1514 B
        assert_eq!(p.xmittime(1_250_000, 8), Some(93)); // 6.4 µs → 6 µs → 93.75 → 93
        assert_eq!(p.xmittime(1_000, 1 << 30), None); // 12 days of ticks: does not fit
        assert_eq!(p.xmittime(0, 1), None);
    }

    #[test]
    fn xmitsize_inverts_xmittime_as_tc_prints_it() {
        let p = Psched::MODERN;
        assert_eq!(p.xmitsize(12_500_000, 156_250), 125_000);
        assert_eq!(p.xmitsize(1_250, 18_925_000), 1_514);
    }

    #[test]
    fn cell_log_like_tc_calc_rtable() {
        assert_eq!(cell_log(0), 3);
        assert_eq!(cell_log(1600), 3);
        assert_eq!(cell_log(255), 0);
        assert_eq!(cell_log(256), 1);
        assert_eq!(cell_log(9000), 6);
    }

    #[test]
    fn rate_table_first_entries() {
        let t = Psched::MODERN.rate_table(1_250_000, 3);
        assert_eq!(&t[..4], &[93, 187, 296, 390]);
        // Last entry: 2048 bytes at 1.25 MB/s = 1638.4 µs → 1638 × 15.625.
        assert_eq!(t[255], 25_593);
    }
}
