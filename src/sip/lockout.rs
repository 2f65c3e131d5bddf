//! Lockout of digest-authentication guessers that cannot be turned against
//! the service.
//!
//! Failures are counted per (source address, username), and only for answers
//! to a nonce hotline issued to that very source (the caller checks that), so
//! a spoofed datagram can never charge anyone. A (source, user) pair that
//! reaches the limit is locked out for a while: that user's authentication
//! attempts from that address are refused, every other user behind the same
//! address carries on. Only when one address fails far more often than any
//! real office does (many users guessed from one place) is the whole address
//! locked out, and even then only for authentication, never for traffic a
//! trunk's ACL admits. Pure logic with the time passed in.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// How many failures lock out what, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures of one user from one address within `window`.
    pub max_failures_per_user: u32,
    /// Failures of all users together from one address within `window`.
    pub max_failures_per_source: u32,
    pub window: Duration,
    pub ban_time: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            window_start: now,
            failures: 0,
            banned_until: None,
        }
    }

    fn banned_at(&self, now: Instant) -> Option<Instant> {
        self.banned_until.filter(|until| now < *until)
    }

    /// Counts one failure; the new ban's end when it reaches `max`.
    fn fail(&mut self, now: Instant, policy: &LockoutPolicy, max: u32) -> Option<Instant> {
        if let Some(until) = self.banned_at(now) {
            return Some(until);
        }
        if self.banned_until.is_some() || now.duration_since(self.window_start) >= policy.window {
            *self = Record::new(now);
        }
        self.failures += 1;
        if self.failures >= max.max(1) {
            let until = now + policy.ban_time;
            self.banned_until = Some(until);
            return Some(until);
        }
        None
    }

    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.banned_at(now).is_none() && now.duration_since(self.window_start) >= window
    }
}

/// What is locked out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum BanScope {
    /// One username from one address.
    User(String),
    /// Every authentication from the address.
    Source,
}

impl BanScope {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            BanScope::User(_) => "user",
            BanScope::Source => "source",
        }
    }
}

/// A lockout in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub source: IpAddr,
    pub scope: BanScope,
    pub until: Instant,
    pub failures: u32,
}

impl Ban {
    /// Why, for logs and the API.
    pub fn reason(&self) -> String {
        match &self.scope {
            BanScope::User(user) => format!(
                "{} failed authentications as {user:?} from this address",
                self.failures
            ),
            BanScope::Source => format!(
                "{} failed authentications (all users) from this address",
                self.failures
            ),
        }
    }
}

/// Outcome of recording one failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Below both limits.
    Counted { failures: u32 },
    /// This failure reached a limit (or one was already in force).
    Banned(Ban),
}

#[derive(Debug)]
pub struct Lockout {
    policy: LockoutPolicy,
    users: DashMap<(IpAddr, String), Record>,
    sources: DashMap<IpAddr, Record>,
    user_bans: AtomicU64,
    source_bans: AtomicU64,
}

impl Lockout {
    pub fn new(policy: LockoutPolicy) -> Lockout {
        Lockout {
            policy,
            users: DashMap::new(),
            sources: DashMap::new(),
            user_bans: AtomicU64::new(0),
            source_bans: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// The lockout in force for `user` from `source`, if any: the address's
    /// own first, as it is the wider one.
    pub fn banned(&self, source: IpAddr, user: &str, now: Instant) -> Option<Ban> {
        if let Some(r) = self.sources.get(&source)
            && let Some(until) = r.banned_at(now)
        {
            return Some(Ban {
                source,
                scope: BanScope::Source,
                until,
                failures: r.failures,
            });
        }
        let key = (source, user.to_string());
        let r = self.users.get(&key)?;
        let until = r.banned_at(now)?;
        Some(Ban {
            source,
            scope: BanScope::User(key.1),
            until,
            failures: r.failures,
        })
    }

    /// Whether every authentication from `source` is locked out.
    pub fn source_banned(&self, source: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source)
            .is_some_and(|r| r.banned_at(now).is_some())
    }

    /// Records a failed answer of `user` from `source` to a nonce issued to it.
    pub fn record_failure(&self, source: IpAddr, user: &str, now: Instant) -> FailureVerdict {
        let policy = self.policy;
        let source_ban = self
            .sources
            .entry(source)
            .or_insert_with(|| Record::new(now))
            .fail(now, &policy, policy.max_failures_per_source);
        let (user_ban, failures) = {
            let mut entry = self
                .users
                .entry((source, user.to_string()))
                .or_insert_with(|| Record::new(now));
            let ban = entry.fail(now, &policy, policy.max_failures_per_user);
            (ban, entry.failures)
        };
        if let Some(until) = source_ban {
            let total = self.sources.get(&source).map_or(0, |r| r.failures);
            if total == policy.max_failures_per_source.max(1) {
                self.source_bans.fetch_add(1, Ordering::Relaxed);
            }
            return FailureVerdict::Banned(Ban {
                source,
                scope: BanScope::Source,
                until,
                failures: total,
            });
        }
        match user_ban {
            Some(until) => {
                if failures == policy.max_failures_per_user.max(1) {
                    self.user_bans.fetch_add(1, Ordering::Relaxed);
                }
                FailureVerdict::Banned(Ban {
                    source,
                    scope: BanScope::User(user.to_string()),
                    until,
                    failures,
                })
            }
            None => FailureVerdict::Counted { failures },
        }
    }

    /// Every lockout in force, addresses first.
    pub fn bans(&self, now: Instant) -> Vec<Ban> {
        let mut out: Vec<Ban> = self
            .sources
            .iter()
            .filter_map(|r| {
                Some(Ban {
                    source: *r.key(),
                    scope: BanScope::Source,
                    until: r.banned_at(now)?,
                    failures: r.failures,
                })
            })
            .collect();
        let mut users: Vec<Ban> = self
            .users
            .iter()
            .filter_map(|r| {
                Some(Ban {
                    source: r.key().0,
                    scope: BanScope::User(r.key().1.clone()),
                    until: r.banned_at(now)?,
                    failures: r.failures,
                })
            })
            .collect();
        out.sort_by_key(|b| b.source);
        users.sort_by(|a, b| (a.source, &a.scope).cmp(&(b.source, &b.scope)));
        out.extend(users);
        out
    }

    /// Lockouts in force now, by scope label.
    pub fn active(&self, now: Instant) -> (usize, usize) {
        let users = self
            .users
            .iter()
            .filter(|r| r.banned_at(now).is_some())
            .count();
        let sources = self
            .sources
            .iter()
            .filter(|r| r.banned_at(now).is_some())
            .count();
        (users, sources)
    }

    /// Lockouts imposed since start: (per user, per address).
    pub fn imposed(&self) -> (u64, u64) {
        (
            self.user_bans.load(Ordering::Relaxed),
            self.source_bans.load(Ordering::Relaxed),
        )
    }

    /// Forgets records whose window and lockout are both over; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let before = self.users.len() + self.sources.len();
        let window = self.policy.window;
        self.users.retain(|_, r| !r.expired(now, window));
        self.sources.retain(|_, r| !r.expired(now, window));
        before - self.users.len() - self.sources.len()
    }

    pub fn tracked(&self) -> usize {
        self.users.len() + self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn lockout(per_user: u32, per_source: u32) -> Lockout {
        Lockout::new(LockoutPolicy {
            max_failures_per_user: per_user,
            max_failures_per_source: per_source,
            window: Duration::from_secs(60),
            ban_time: Duration::from_secs(300),
        })
    }

    #[test]
    fn a_user_is_locked_out_alone() {
        let l = lockout(3, 100);
        let now = Instant::now();
        for n in 1..3 {
            assert_eq!(
                l.record_failure(A, "1001", now),
                FailureVerdict::Counted { failures: n }
            );
        }
        assert!(l.banned(A, "1001", now).is_none());
        assert!(matches!(
            l.record_failure(A, "1001", now),
            FailureVerdict::Banned(Ban { scope: BanScope::User(ref u), .. }) if u == "1001"
        ));
        assert!(l.banned(A, "1001", now).is_some());
        assert!(
            l.banned(A, "1002", now).is_none(),
            "a colleague behind the same NAT"
        );
        assert!(
            l.banned(B, "1001", now).is_none(),
            "the same user elsewhere"
        );
        assert!(!l.source_banned(A, now));
        assert_eq!(l.imposed(), (1, 0));
    }

    #[test]
    fn many_users_failing_from_one_address_lock_it_out() {
        let l = lockout(3, 10);
        let now = Instant::now();
        for i in 0..9 {
            assert!(matches!(
                l.record_failure(A, &format!("u{i}"), now),
                FailureVerdict::Counted { failures: 1 }
            ));
        }
        assert!(matches!(
            l.record_failure(A, "u9", now),
            FailureVerdict::Banned(Ban {
                scope: BanScope::Source,
                failures: 10,
                ..
            })
        ));
        assert!(l.source_banned(A, now));
        assert_eq!(
            l.banned(A, "anyone", now).map(|b| b.scope),
            Some(BanScope::Source)
        );
        assert!(!l.source_banned(B, now));
        assert_eq!(l.imposed(), (0, 1));
        assert_eq!(l.active(now), (0, 1));
    }

    #[test]
    fn lockouts_end_and_counting_restarts() {
        let l = lockout(1, 100);
        let now = Instant::now();
        assert!(matches!(
            l.record_failure(A, "1001", now),
            FailureVerdict::Banned(_)
        ));
        assert!(
            l.banned(A, "1001", now + Duration::from_secs(299))
                .is_some()
        );
        let after = now + Duration::from_secs(301);
        assert!(l.banned(A, "1001", after).is_none());
        assert!(l.bans(after).is_empty());
        assert_eq!(l.sweep(after + Duration::from_secs(60)), 2);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn failures_spread_over_windows_do_not_lock_out() {
        let l = lockout(2, 100);
        let now = Instant::now();
        l.record_failure(A, "1001", now);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            l.record_failure(A, "1001", later),
            FailureVerdict::Counted { failures: 1 }
        );
    }

    #[test]
    fn bans_list_names_scope_and_reason() {
        let l = lockout(1, 100);
        let now = Instant::now();
        l.record_failure(A, "1001", now);
        let bans = l.bans(now);
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].scope, BanScope::User("1001".into()));
        assert!(
            bans[0].reason().contains("\"1001\""),
            "{}",
            bans[0].reason()
        );
    }

    proptest! {
        /// Whatever the order of failures, no pair is locked out before its
        /// own count reaches the limit, and an address only by its total.
        #[test]
        fn lockouts_follow_the_counts(events in proptest::collection::vec((0u8..3, 0u8..4), 0..60)) {
            let l = lockout(4, 12);
            let now = Instant::now();
            let mut per_pair = std::collections::HashMap::new();
            let mut per_source = std::collections::HashMap::new();
            for (s, u) in events {
                let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, s));
                let user = format!("u{u}");
                let source_banned = per_source.get(&s).copied().unwrap_or(0) >= 12;
                let pair_banned = per_pair.get(&(s, u)).copied().unwrap_or(0) >= 4;
                prop_assert_eq!(l.banned(ip, &user, now).is_some(), source_banned || pair_banned);
                if !(source_banned || pair_banned) {
                    *per_pair.entry((s, u)).or_insert(0) += 1;
                    *per_source.entry(s).or_insert(0) += 1;
                }
                if !source_banned && !pair_banned {
                    l.record_failure(ip, &user, now);
                }
            }
        }
    }
}
