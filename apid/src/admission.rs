//! Fair shares of what apid has a fixed amount of — connection slots and memory for request
//! bodies — and logs that a flood cannot turn into a flood of log lines.
//!
//! Every share is counted per client as well as in total, so one address (or one IPv6 /64, which
//! a single client usually controls whole) that opens thousands of connections or stalls dozens
//! of uploads uses up its own share and leaves the rest of the server to everybody else.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The key a client's shares are counted under: its IPv4 address, or the /64 of its IPv6
/// address (an IPv4-mapped IPv6 address counts as the IPv4 address).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a share was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server-wide amount is in use.
    Total,
    /// This client holds its whole share already.
    Client,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Total => "the server-wide limit is reached",
            Refusal::Client => "this client's share is used up",
        })
    }
}

/// A countable resource with a server-wide cap and a cap per client.
#[derive(Debug)]
pub struct Shares {
    total: usize,
    per_client: usize,
    state: Mutex<SharesState>,
}

#[derive(Debug, Default)]
struct SharesState {
    used: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl Shares {
    pub fn new(total: usize, per_client: usize) -> Arc<Shares> {
        Arc::new(Shares {
            total,
            per_client: per_client.min(total),
            state: Mutex::new(SharesState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SharesState> {
        // The counts stay consistent under a panic elsewhere: every change is one statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `amount` for the client at `ip`, all or nothing.
    pub fn hold(self: &Arc<Self>, ip: IpAddr, amount: usize) -> Result<Held, Refusal> {
        let key = client_key(ip);
        self.take(key, amount)?;
        Ok(Held {
            shares: self.clone(),
            key,
            amount,
        })
    }

    /// A share of nothing yet, for the client at `ip`, to [`Held::grow_to`] later.
    pub fn nothing_held(self: &Arc<Self>, ip: IpAddr) -> Held {
        Held {
            shares: self.clone(),
            key: client_key(ip),
            amount: 0,
        }
    }

    fn take(&self, key: IpAddr, amount: usize) -> Result<(), Refusal> {
        if amount == 0 {
            return Ok(());
        }
        let mut s = self.lock();
        let mine = s.by_client.get(&key).copied().unwrap_or(0);
        if mine.saturating_add(amount) > self.per_client {
            return Err(Refusal::Client);
        }
        if s.used.saturating_add(amount) > self.total {
            return Err(Refusal::Total);
        }
        s.used += amount;
        s.by_client.insert(key, mine + amount);
        Ok(())
    }

    fn give_back(&self, key: IpAddr, amount: usize) {
        if amount == 0 {
            return;
        }
        let mut s = self.lock();
        s.used = s.used.saturating_sub(amount);
        // Entries go when they reach zero, so the map never holds more clients than hold shares.
        if let Some(mine) = s.by_client.get_mut(&key) {
            *mine = mine.saturating_sub(amount);
            if *mine == 0 {
                s.by_client.remove(&key);
            }
        }
    }

    /// What is in use, in total and by the client at `ip`.
    pub fn in_use(&self, ip: IpAddr) -> (usize, usize) {
        let s = self.lock();
        let mine = s.by_client.get(&client_key(ip)).copied().unwrap_or(0);
        (s.used, mine)
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn per_client(&self) -> usize {
        self.per_client
    }
}

/// A share in use; given back when dropped.
#[derive(Debug)]
pub struct Held {
    shares: Arc<Shares>,
    key: IpAddr,
    amount: usize,
}

impl Held {
    pub fn amount(&self) -> usize {
        self.amount
    }

    /// Grows the share to `amount` (a no-op when it is that large already). On refusal the
    /// share keeps what it had.
    pub fn grow_to(&mut self, amount: usize) -> Result<(), Refusal> {
        if amount > self.amount {
            self.shares.take(self.key, amount - self.amount)?;
            self.amount = amount;
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shares.give_back(self.key, self.amount);
    }
}

/// Lets through at most `per_second` log lines of one kind a second and counts the rest; the
/// count is logged by [`LogLimiter::flush`], which the server calls every few seconds.
#[derive(Debug)]
pub struct LogLimiter {
    what: &'static str,
    per_second: u32,
    state: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    window: Option<Instant>,
    logged: u32,
    dropped: u64,
}

impl LogLimiter {
    /// `what` names the events in the summary line, e.g. "refused connections".
    pub fn new(what: &'static str, per_second: u32) -> LogLimiter {
        LogLimiter {
            what,
            per_second,
            state: Mutex::new(LogState::default()),
        }
    }

    /// Whether one more line may be logged now; if not, the event is counted as dropped.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.window
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1))
        {
            s.window = Some(now);
            s.logged = 0;
        }
        if s.logged < self.per_second {
            s.logged += 1;
            true
        } else {
            s.dropped += 1;
            false
        }
    }

    /// The number of events not logged since the last call, reset to zero.
    pub fn take_dropped(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut s.dropped)
    }

    /// Logs how many events were not logged since the last flush, if any.
    pub fn flush(&self) {
        let dropped = self.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "… {} more {} not logged",
                grouped(dropped),
                self.what
            );
        }
    }
}

/// `12345` as `12 345`, for people reading a log.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn per_client_and_total_caps() {
        let s = Shares::new(5, 3);
        let a: Vec<_> = (0..3).map(|_| s.hold(v4(2), 1).unwrap()).collect();
        assert_eq!(s.hold(v4(2), 1).unwrap_err(), Refusal::Client);
        let b1 = s.hold(v4(3), 1).unwrap();
        let _b2 = s.hold(v4(3), 1).unwrap();
        assert_eq!(s.hold(v4(4), 1).unwrap_err(), Refusal::Total);
        assert_eq!(s.in_use(v4(2)), (5, 3));
        drop(b1);
        assert!(s.hold(v4(4), 1).is_ok());
        drop(a);
        assert_eq!(s.in_use(v4(2)), (1, 0));
        // Emptied clients leave the map.
        assert_eq!(s.lock().by_client.len(), 1);
    }

    #[test]
    fn grow_is_all_or_nothing() {
        let s = Shares::new(100, 60);
        let mut h = s.hold(v4(2), 10).unwrap();
        h.grow_to(50).unwrap();
        assert_eq!(h.grow_to(70).unwrap_err(), Refusal::Client);
        assert_eq!(h.amount(), 50);
        let _other = s.hold(v4(3), 45).unwrap();
        assert_eq!(h.grow_to(56).unwrap_err(), Refusal::Total);
        h.grow_to(20).unwrap();
        assert_eq!(h.amount(), 50);
        drop(h);
        assert_eq!(s.in_use(v4(2)), (45, 0));
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(client_key(mapped), v4(2));
    }

    #[test]
    fn log_limiter_counts_what_it_drops() {
        let l = LogLimiter::new("refused connections", 3);
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| l.allow_at(t0)).count();
        assert_eq!(allowed, 3);
        assert!(l.allow_at(t0 + Duration::from_millis(1001)));
        assert_eq!(l.take_dropped(), 997);
        assert_eq!(l.take_dropped(), 0);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(12_345), "12 345");
        assert_eq!(grouped(1_000_000), "1 000 000");
    }
}
