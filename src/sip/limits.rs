//! Ceilings at the SIP edge: how fast one source may start calls (a token
//! bucket per address), how many calls may be up at once (in total and per
//! trunk), which Call-IDs belong to live calls (a new INVITE reusing one must
//! not disturb the call), and how many SIP/TCP connections may be open (per
//! address and in total). Each refusal is counted by reason for the metrics
//! page. The decisions are pure functions of counts and a `now` passed in;
//! slots are released by guards, so no path can leak one.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Why the edge refused something, as the `reason` label of
/// `hotline_sip_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The global concurrent-call ceiling.
    MaxCalls,
    /// A trunk's own concurrent-call ceiling.
    TrunkMaxCalls,
    /// A source above its INVITE rate.
    InviteRate,
    /// A new INVITE whose Call-ID belongs to a live call.
    CallIdInUse,
    /// The SIP/TCP connections of one source.
    TcpPerSource,
    /// The SIP/TCP connections in total.
    TcpTotal,
    /// A SIP/TCP connection that sent no complete message in time.
    TcpFirstMessageTimeout,
    /// An authentication attempt during a lockout.
    AuthLockedOut,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::MaxCalls,
        Refusal::TrunkMaxCalls,
        Refusal::InviteRate,
        Refusal::CallIdInUse,
        Refusal::TcpPerSource,
        Refusal::TcpTotal,
        Refusal::TcpFirstMessageTimeout,
        Refusal::AuthLockedOut,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxCalls => "max_calls",
            Refusal::TrunkMaxCalls => "trunk_max_calls",
            Refusal::InviteRate => "invite_rate",
            Refusal::CallIdInUse => "call_id_in_use",
            Refusal::TcpPerSource => "tcp_connections_per_source",
            Refusal::TcpTotal => "tcp_connections",
            Refusal::TcpFirstMessageTimeout => "tcp_first_message_timeout",
            Refusal::AuthLockedOut => "auth_locked_out",
        }
    }
}

/// Refusals by reason.
#[derive(Debug, Default)]
pub struct RefusalCounts([AtomicU64; Refusal::ALL.len()]);

impl RefusalCounts {
    pub fn count(&self, refusal: Refusal) {
        self.0[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, refusal: Refusal) -> u64 {
        self.0[refusal as usize].load(Ordering::Relaxed)
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn full(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token, or tells how long until one is there.
    pub fn take(&mut self, rate: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    /// Whether the bucket is full again (nothing worth remembering).
    pub fn is_full(&self, rate: f64, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= f64::from(burst)
    }
}

/// One token bucket per source address.
#[derive(Debug)]
pub struct SourceRate {
    rate: f64,
    burst: u32,
    buckets: DashMap<IpAddr, TokenBucket>,
}

impl SourceRate {
    /// `rate` per second, `burst` at once; a rate of 0 means no limit.
    pub fn new(rate: f64, burst: u32) -> SourceRate {
        SourceRate {
            rate,
            burst: burst.max(1),
            buckets: DashMap::new(),
        }
    }

    /// Admits one request from `source`, or tells when to retry.
    pub fn admit(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        self.buckets
            .entry(source)
            .or_insert_with(|| TokenBucket::full(self.burst, now))
            .take(self.rate, self.burst, now)
    }

    /// Forgets sources whose bucket has filled up again.
    pub fn sweep(&self, now: Instant) {
        self.buckets
            .retain(|_, b| !b.is_full(self.rate, self.burst, now));
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Why a call could not take a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotRefusal {
    /// The Call-ID belongs to a live call.
    CallIdInUse,
    MaxCalls {
        limit: usize,
    },
    TrunkMaxCalls {
        limit: usize,
    },
}

#[derive(Debug, Default)]
struct SlotTable {
    total: usize,
    per_trunk: HashMap<String, usize>,
    call_ids: HashMap<String, String>,
}

/// Concurrent calls in total and per trunk, and the Call-IDs they own.
#[derive(Debug, Default)]
pub struct CallSlots {
    max_calls: usize,
    table: Mutex<SlotTable>,
}

/// A call's place; dropping it frees the place and the Call-ID.
#[derive(Debug)]
pub struct CallSlot {
    slots: Arc<CallSlots>,
    call_id: String,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        let mut table = self.slots.lock();
        if let Some(trunk) = table.call_ids.remove(&self.call_id) {
            table.total = table.total.saturating_sub(1);
            if let Some(n) = table.per_trunk.get_mut(&trunk) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    table.per_trunk.remove(&trunk);
                }
            }
        }
    }
}

impl CallSlots {
    /// `max_calls` of 0 means no global ceiling.
    pub fn new(max_calls: usize) -> Arc<CallSlots> {
        Arc::new(CallSlots {
            max_calls,
            table: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        // A panic elsewhere while holding the lock leaves consistent counts.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `call_id` belongs to a live call.
    pub fn in_use(&self, call_id: &str) -> bool {
        self.lock().call_ids.contains_key(call_id)
    }

    /// Takes a slot for a call from `trunk` (ceiling `trunk_max`, 0 = none).
    pub fn take(
        self: &Arc<Self>,
        call_id: &str,
        trunk: &str,
        trunk_max: usize,
    ) -> Result<CallSlot, SlotRefusal> {
        let mut table = self.lock();
        if table.call_ids.contains_key(call_id) {
            return Err(SlotRefusal::CallIdInUse);
        }
        if self.max_calls > 0 && table.total >= self.max_calls {
            return Err(SlotRefusal::MaxCalls {
                limit: self.max_calls,
            });
        }
        let of_trunk = table.per_trunk.get(trunk).copied().unwrap_or(0);
        if trunk_max > 0 && of_trunk >= trunk_max {
            return Err(SlotRefusal::TrunkMaxCalls { limit: trunk_max });
        }
        table.total += 1;
        *table.per_trunk.entry(trunk.to_string()).or_insert(0) += 1;
        table
            .call_ids
            .insert(call_id.to_string(), trunk.to_string());
        Ok(CallSlot {
            slots: self.clone(),
            call_id: call_id.to_string(),
        })
    }

    /// Calls holding a slot, in total and per trunk.
    pub fn counts(&self) -> (usize, Vec<(String, usize)>) {
        let table = self.lock();
        let mut per_trunk: Vec<(String, usize)> = table
            .per_trunk
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        per_trunk.sort();
        (table.total, per_trunk)
    }
}

/// Open SIP/TCP connections, per source address and in total.
#[derive(Debug)]
pub struct ConnectionSlots {
    per_source: usize,
    total: usize,
    open: DashMap<SocketAddr, ()>,
    by_source: DashMap<IpAddr, usize>,
    count: AtomicUsize,
}

impl ConnectionSlots {
    pub fn new(per_source: usize, total: usize) -> ConnectionSlots {
        ConnectionSlots {
            per_source,
            total,
            open: DashMap::new(),
            by_source: DashMap::new(),
            count: AtomicUsize::new(0),
        }
    }

    /// Takes a place for a connection from `peer`; released by [`Self::release`].
    /// Called by the one accept loop only, so the check and the count cannot
    /// interleave with another open.
    pub fn open(&self, peer: SocketAddr) -> Result<(), Refusal> {
        if self.count.load(Ordering::Acquire) >= self.total {
            return Err(Refusal::TcpTotal);
        }
        let mut of_source = self.by_source.entry(peer.ip()).or_insert(0);
        if *of_source >= self.per_source {
            return Err(Refusal::TcpPerSource);
        }
        if self.open.insert(peer, ()).is_none() {
            *of_source += 1;
            self.count.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Frees the place of `peer`'s connection (once; unknown peers are ignored).
    pub fn release(&self, peer: SocketAddr) {
        if self.open.remove(&peer).is_none() {
            return;
        }
        self.count.fetch_sub(1, Ordering::AcqRel);
        if let Some(mut n) = self.by_source.get_mut(&peer.ip()) {
            *n = n.saturating_sub(1);
        }
        self.by_source.remove_if(&peer.ip(), |_, n| *n == 0);
    }

    pub fn open_count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// Every ceiling of the edge and its figures, shared by the SIP handlers,
/// the TCP acceptor, the HTTP listener and the metrics page.
#[derive(Debug)]
pub struct EdgeLimits {
    pub settings: crate::config::LimitsSettings,
    pub calls: Arc<CallSlots>,
    pub invite_rate: SourceRate,
    /// Per trunk name, the INVITE rate of each address of its `sources`,
    /// where the trunk sets one (a carrier sends more than any phone).
    pub trunk_invite_rate: BTreeMap<String, SourceRate>,
    pub tcp: ConnectionSlots,
    pub refused: RefusalCounts,
    /// HTTP connections open now.
    pub http_open: AtomicUsize,
    /// HTTP connections refused at the ceiling.
    pub http_refused: AtomicU64,
    /// HTTP connections closed for sending no complete request head in time.
    pub http_header_timeouts: AtomicU64,
    /// Whether new calls are shed for overload, and those shed.
    pub overload: Arc<super::overload::Overload>,
}

impl EdgeLimits {
    pub fn new(settings: &crate::config::LimitsSettings) -> EdgeLimits {
        EdgeLimits {
            calls: CallSlots::new(settings.max_calls),
            invite_rate: SourceRate::new(settings.invite_rate, settings.invite_burst),
            trunk_invite_rate: settings
                .trunk_invite_rate
                .iter()
                .map(|(name, &rate)| {
                    // Two seconds' worth at once, as limits.invite_burst's default.
                    let burst = (rate * 2.0).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
                    (name.clone(), SourceRate::new(rate, burst))
                })
                .collect(),
            tcp: ConnectionSlots::new(
                settings.tcp_max_connections_per_source,
                settings.tcp_max_connections,
            ),
            refused: RefusalCounts::default(),
            http_open: AtomicUsize::new(0),
            http_refused: AtomicU64::new(0),
            http_header_timeouts: AtomicU64::new(0),
            overload: Arc::new(super::overload::Overload::new(
                super::overload::OverloadThresholds::from_settings(settings),
            )),
            settings: settings.clone(),
        }
    }

    /// Admits one INVITE from `source`, which `trunk` (if any) admits by
    /// address: at the trunk's own rate where it sets one, else at
    /// `limits.invite_rate`.
    pub fn admit_invite(
        &self,
        source: IpAddr,
        trunk: Option<&str>,
        now: Instant,
    ) -> Result<(), Duration> {
        match trunk.and_then(|name| self.trunk_invite_rate.get(name)) {
            Some(rate) => rate.admit(source, now),
            None => self.invite_rate.admit(source, now),
        }
    }

    /// Forgets the rate buckets that have filled up again.
    pub fn sweep(&self, now: Instant) {
        self.invite_rate.sweep(now);
        for rate in self.trunk_invite_rate.values() {
            rate.sweep(now);
        }
    }

    /// The ceiling of one trunk's calls (0: none of its own).
    pub fn trunk_max_calls(&self, trunk: &str) -> usize {
        self.settings
            .trunk_max_calls
            .get(trunk)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_trunk_with_its_own_rate_is_held_to_it_and_everyone_else_to_the_global_one() {
        let settings = crate::config::LimitsSettings {
            invite_rate: 1.0,
            invite_burst: 2,
            trunk_invite_rate: BTreeMap::from([("carrier".to_string(), 50.0)]),
            ..Default::default()
        };
        let limits = EdgeLimits::new(&settings);
        let now = Instant::now();
        // The carrier's address: 100 at once (two seconds' worth).
        for i in 0..100 {
            assert_eq!(limits.admit_invite(A, Some("carrier"), now), Ok(()), "{i}");
        }
        assert!(limits.admit_invite(A, Some("carrier"), now).is_err());
        // A trunk without its own rate, or no trunk: the global bucket.
        for trunk in [Some("pbx"), None] {
            let source = if trunk.is_some() { B } else { A };
            assert_eq!(limits.admit_invite(source, trunk, now), Ok(()));
            assert_eq!(limits.admit_invite(source, trunk, now), Ok(()));
            assert!(limits.admit_invite(source, trunk, now).is_err());
        }
        // A second later the carrier has 50 more.
        let later = now + Duration::from_secs(1);
        for _ in 0..50 {
            assert_eq!(limits.admit_invite(A, Some("carrier"), later), Ok(()));
        }
        assert!(limits.admit_invite(A, Some("carrier"), later).is_err());
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let now = Instant::now();
        let mut b = TokenBucket::full(3, now);
        for _ in 0..3 {
            assert_eq!(b.take(2.0, 3, now), Ok(()));
        }
        let wait = b.take(2.0, 3, now).unwrap_err();
        assert!(
            wait > Duration::from_millis(490) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(b.take(2.0, 3, now + Duration::from_millis(500)), Ok(()));
        assert!(b.take(2.0, 3, now + Duration::from_millis(500)).is_err());
        assert!(b.is_full(2.0, 3, now + Duration::from_secs(2)));
    }

    #[test]
    fn sources_have_their_own_buckets() {
        let r = SourceRate::new(1.0, 2);
        let now = Instant::now();
        assert!(r.admit(A, now).is_ok());
        assert!(r.admit(A, now).is_ok());
        assert!(r.admit(A, now).is_err());
        assert!(r.admit(B, now).is_ok(), "another source is not slowed");
        r.sweep(now + Duration::from_secs(3));
        assert_eq!(r.tracked(), 0);
        assert!(SourceRate::new(0.0, 1).admit(A, now).is_ok(), "0: no limit");
    }

    #[test]
    fn call_slots_hold_both_ceilings_and_the_call_ids() {
        let slots = CallSlots::new(3);
        let a = slots.take("a", "carrier", 2).unwrap();
        assert_eq!(
            slots.take("a", "pbx", 0).unwrap_err(),
            SlotRefusal::CallIdInUse
        );
        let _b = slots.take("b", "carrier", 2).unwrap();
        assert_eq!(
            slots.take("c", "carrier", 2).unwrap_err(),
            SlotRefusal::TrunkMaxCalls { limit: 2 }
        );
        let _c = slots.take("c", "pbx", 0).unwrap();
        assert_eq!(
            slots.take("d", "pbx", 0).unwrap_err(),
            SlotRefusal::MaxCalls { limit: 3 }
        );
        assert!(slots.in_use("a"));
        drop(a);
        assert!(!slots.in_use("a"));
        assert_eq!(slots.counts().0, 2);
        assert!(slots.take("d", "carrier", 2).is_ok());
    }

    #[test]
    fn connection_slots_per_source_and_in_total() {
        let c = ConnectionSlots::new(2, 3);
        let peer = |ip: IpAddr, port| SocketAddr::new(ip, port);
        assert!(c.open(peer(A, 1)).is_ok());
        assert!(c.open(peer(A, 2)).is_ok());
        assert_eq!(c.open(peer(A, 3)), Err(Refusal::TcpPerSource));
        assert!(c.open(peer(B, 1)).is_ok());
        assert_eq!(c.open(peer(B, 2)), Err(Refusal::TcpTotal));
        c.release(peer(A, 1));
        c.release(peer(A, 1));
        assert_eq!(c.open_count(), 2);
        assert!(c.open(peer(A, 3)).is_ok());
    }

    proptest! {
        /// Over any sequence of takes and drops, the live count never passes
        /// either ceiling and always equals the slots held.
        #[test]
        fn call_slots_never_pass_a_ceiling(ops in proptest::collection::vec((0u8..6, 0u8..2, any::<bool>()), 0..80)) {
            let slots = CallSlots::new(4);
            let mut held: Vec<CallSlot> = Vec::new();
            for (id, trunk, drop_one) in ops {
                if drop_one && !held.is_empty() {
                    held.remove(0);
                } else if let Ok(slot) = slots.take(&format!("c{id}"), &format!("t{trunk}"), 3) {
                    held.push(slot);
                }
                let (total, per_trunk) = slots.counts();
                prop_assert_eq!(total, held.len());
                prop_assert!(total <= 4);
                prop_assert!(per_trunk.iter().all(|(_, n)| *n <= 3));
            }
        }

        #[test]
        fn a_bucket_never_admits_more_than_burst_plus_rate_times_time(
            steps in proptest::collection::vec(0u64..400, 1..200)
        ) {
            let start = Instant::now();
            let mut b = TokenBucket::full(5, start);
            let mut now = start;
            let mut admitted = 0u32;
            for ms in steps {
                now += Duration::from_millis(ms);
                if b.take(10.0, 5, now).is_ok() {
                    admitted += 1;
                }
            }
            let allowed = 5.0 + 10.0 * now.duration_since(start).as_secs_f64();
            prop_assert!(f64::from(admitted) <= allowed + 1e-9);
        }
    }
}
