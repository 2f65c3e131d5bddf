//! Brute-force protection per source address, for the CTI API's bearer
//! tokens (a TCP peer's address cannot be spoofed). SIP digest
//! authentication uses [`super::lockout`] instead, which counts per user and
//! only answers to nonces issued to the address.
//!
//! Counts failed authentications per source address in a fixed window; a source
//! that reaches the limit is banned for a while, and its requests are refused
//! until the ban ends. Lookups are lock-free per address (DashMap shards), so a
//! flood from one source does not slow the others.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
}

/// Outcome of recording one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Still below the limit.
    Counted { failures: u32 },
    /// This failure reached the limit: the source is now banned.
    Banned { until: Instant },
}

#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    ban_time: Duration,
    records: DashMap<IpAddr, Record>,
}

impl AuthThrottle {
    pub fn new(max_failures: u32, window: Duration, ban_time: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            ban_time,
            records: DashMap::new(),
        }
    }

    pub fn ban_time(&self) -> Duration {
        self.ban_time
    }

    /// Whether `source` is banned at `now`.
    pub fn is_banned(&self, source: IpAddr, now: Instant) -> bool {
        self.records
            .get(&source)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Records a failed authentication from `source`.
    pub fn record_failure(&self, source: IpAddr, now: Instant) -> FailureVerdict {
        let mut entry = self.records.entry(source).or_insert(Record {
            window_start: now,
            failures: 0,
            banned_until: None,
        });
        let record = entry.value_mut();
        if let Some(until) = record.banned_until {
            if now < until {
                return FailureVerdict::Banned { until };
            }
            record.banned_until = None;
            record.failures = 0;
            record.window_start = now;
        }
        if now.duration_since(record.window_start) >= self.window {
            record.window_start = now;
            record.failures = 0;
        }
        record.failures += 1;
        if record.failures >= self.max_failures {
            let until = now + self.ban_time;
            record.banned_until = Some(until);
            FailureVerdict::Banned { until }
        } else {
            FailureVerdict::Counted {
                failures: record.failures,
            }
        }
    }

    /// Forgets sources whose window and ban are both over; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let before = self.records.len();
        self.records.retain(|_, r| {
            let banned = r.banned_until.is_some_and(|until| now < until);
            banned || now.duration_since(r.window_start) < self.window
        });
        before - self.records.len()
    }

    pub fn tracked_sources(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn bans_after_max_failures_within_the_window() {
        let t = AuthThrottle::new(3, Duration::from_secs(60), Duration::from_secs(300));
        let now = Instant::now();
        assert_eq!(
            t.record_failure(A, now),
            FailureVerdict::Counted { failures: 1 }
        );
        assert_eq!(
            t.record_failure(A, now),
            FailureVerdict::Counted { failures: 2 }
        );
        assert!(!t.is_banned(A, now));
        assert!(matches!(
            t.record_failure(A, now),
            FailureVerdict::Banned { .. }
        ));
        assert!(t.is_banned(A, now));
        assert!(!t.is_banned(B, now), "other sources are not affected");
    }

    #[test]
    fn failures_spread_over_windows_do_not_ban() {
        let t = AuthThrottle::new(2, Duration::from_secs(10), Duration::from_secs(300));
        let now = Instant::now();
        t.record_failure(A, now);
        let later = now + Duration::from_secs(11);
        assert_eq!(
            t.record_failure(A, later),
            FailureVerdict::Counted { failures: 1 }
        );
        assert!(!t.is_banned(A, later));
    }

    #[test]
    fn ban_ends_after_ban_time_and_counting_restarts() {
        let t = AuthThrottle::new(1, Duration::from_secs(10), Duration::from_secs(30));
        let now = Instant::now();
        assert!(matches!(
            t.record_failure(A, now),
            FailureVerdict::Banned { .. }
        ));
        assert!(t.is_banned(A, now + Duration::from_secs(29)));
        let after = now + Duration::from_secs(31);
        assert!(!t.is_banned(A, after));
        assert!(matches!(
            t.record_failure(A, after),
            FailureVerdict::Banned { .. }
        ));
    }

    #[test]
    fn sweep_keeps_bans_and_open_windows_only() {
        let t = AuthThrottle::new(2, Duration::from_secs(10), Duration::from_secs(100));
        let now = Instant::now();
        t.record_failure(A, now);
        t.record_failure(B, now);
        t.record_failure(B, now);
        assert_eq!(t.sweep(now + Duration::from_secs(20)), 1);
        assert!(t.is_banned(B, now + Duration::from_secs(20)));
        assert_eq!(t.tracked_sources(), 1);
    }
}
