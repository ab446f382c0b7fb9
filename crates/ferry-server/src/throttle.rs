//! Failed logins counted per client address across connections: a guesser who reconnects
//! after each connection's last attempt is still slowed down, then refused for a while.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most this many addresses are tracked; beyond it, expired entries are dropped first and
/// then the oldest, so a flood from many addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 65_536;

/// Failed logins per address (IPv6 per /64, the block one host usually has) in a window.
#[derive(Debug)]
pub struct LoginThrottle {
    /// Failures within one window that block an address.
    limit: u32,
    /// How long failures count, from the first one.
    window: Duration,
    /// (failures, start of the window) by address.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginThrottle {
    /// Blocks an address once it has `limit` failures within `window` of its first one.
    pub fn new(limit: u32, window: Duration) -> Self {
        LoginThrottle {
            limit: limit.max(1),
            window,
            failures: Mutex::default(),
        }
    }

    /// True when logins from `ip` are refused without checking the password.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures
            .get(&key(ip))
            .is_some_and(|&(n, start)| n >= self.limit && now < start + self.window)
    }

    /// Counts a failed login from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&key(ip)) {
            failures.retain(|_, &mut (_, start)| now < start + self.window);
            if failures.len() >= MAX_TRACKED
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, (_, s))| *s)
                    .map(|(k, _)| *k)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(key(ip)).or_insert((0, now));
        if now >= entry.1 + self.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// The unit an address is counted under: IPv4 addresses alone, IPv6 by /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_blocked_at_the_limit_and_others_are_not() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            throttle.record_failure(ip("192.0.2.1"));
        }
        assert!(!throttle.is_blocked(ip("192.0.2.1")));
        throttle.record_failure(ip("192.0.2.1"));
        assert!(throttle.is_blocked(ip("192.0.2.1")));
        assert!(!throttle.is_blocked(ip("192.0.2.2")));
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_count_together() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60));
        throttle.record_failure(ip("2001:db8:1:2::1"));
        throttle.record_failure(ip("2001:db8:1:2:ffff::9"));
        assert!(throttle.is_blocked(ip("2001:db8:1:2::77")));
        assert!(!throttle.is_blocked(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn the_block_ends_with_the_window() {
        let throttle = LoginThrottle::new(1, Duration::from_millis(30));
        throttle.record_failure(ip("192.0.2.1"));
        assert!(throttle.is_blocked(ip("192.0.2.1")));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!throttle.is_blocked(ip("192.0.2.1")));
        throttle.record_failure(ip("192.0.2.1"));
        assert!(throttle.is_blocked(ip("192.0.2.1")));
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let throttle = LoginThrottle::new(1, Duration::from_secs(60));
        for i in 0..(MAX_TRACKED as u32 + 10) {
            throttle.record_failure(IpAddr::V4(i.into()));
        }
        let tracked = throttle.failures.lock().unwrap().len();
        assert!(tracked <= MAX_TRACKED, "{tracked}");
        assert!(throttle.is_blocked(IpAddr::V4((MAX_TRACKED as u32 + 9).into())));
    }
}
