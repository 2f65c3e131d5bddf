//! Bearer tokens: the SHA-256 of the presented token is looked up among the
//! configured ones (compared in constant time), giving the caller's role and
//! what it may see. Failed attempts are throttled per source address in a
//! table of bounded size whose entries expire ([`FailedAuths`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::ApiError;
use crate::config::{ApiRole, ApiToken};

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: ApiRole,
    pub agent: Option<String>,
    pub queues: Vec<String>,
    /// A supervisor's own phones (monitoring rings only these).
    pub phones: Vec<String>,
}

impl Principal {
    /// Whether this principal may see and act on `agent` (serving `queues`).
    pub fn may_act_for_agent(&self, agent: &str, agent_queues: &[String]) -> bool {
        match self.role {
            ApiRole::Admin => true,
            ApiRole::Agent => self.agent.as_deref() == Some(agent),
            ApiRole::Supervisor => agent_queues.iter().any(|q| self.queues.contains(q)),
        }
    }

    /// Whether this principal may see `queue`.
    pub fn may_see_queue(&self, queue: &str) -> bool {
        match self.role {
            ApiRole::Admin => true,
            ApiRole::Supervisor => self.queues.iter().any(|q| q == queue),
            ApiRole::Agent => false,
        }
    }

    pub fn is_supervisor_or_admin(&self) -> bool {
        matches!(self.role, ApiRole::Supervisor | ApiRole::Admin)
    }
}

/// The configured tokens.
pub struct Tokens {
    tokens: Vec<ApiToken>,
}

impl Tokens {
    pub fn new(tokens: Vec<ApiToken>) -> Tokens {
        Tokens { tokens }
    }

    /// The principal a presented token stands for.
    pub fn lookup(&self, presented: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every token is compared, in constant time, so timing tells nothing.
        let mut found = None;
        for token in &self.tokens {
            let same = token
                .sha256
                .iter()
                .zip(&digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if same {
                found = Some(token);
            }
        }
        found.map(|t| Principal {
            name: t.name.clone(),
            role: t.role,
            agent: t.agent.clone(),
            queues: t.queues.clone(),
            phones: t.phones.clone(),
        })
    }
}

/// One source's failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    window_start: Instant,
    count: u32,
    banned_until: Option<Instant>,
}

impl Failures {
    /// Whether the entry still matters at `now`: its ban or its window runs.
    fn is_live(&self, now: Instant, window: Duration) -> bool {
        self.banned_until.is_some_and(|until| now < until)
            || now.saturating_duration_since(self.window_start) < window
    }
}

/// Failed authentications per source address: `max_failures` within
/// `window` ban the source for `ban_time`. The table holds at most
/// `max_sources` addresses: entries whose window and ban are over are swept
/// (at most once a second, on a failure), and when every entry still
/// matters, the oldest unbanned ones make room (then the bans ending
/// first), so a flood from many addresses costs bounded memory.
#[derive(Debug)]
pub struct FailedAuths {
    max_failures: u32,
    window: Duration,
    ban_time: Duration,
    max_sources: usize,
    inner: Mutex<FailedInner>,
    /// Entries pushed out while they still mattered.
    evicted: AtomicU64,
}

#[derive(Debug, Default)]
struct FailedInner {
    sources: HashMap<IpAddr, Failures>,
    last_sweep: Option<Instant>,
}

impl FailedAuths {
    pub fn new(
        max_failures: u32,
        window: Duration,
        ban_time: Duration,
        max_sources: usize,
    ) -> Self {
        FailedAuths {
            max_failures: max_failures.max(1),
            window,
            ban_time,
            max_sources: max_sources.max(1),
            inner: Mutex::default(),
            evicted: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FailedInner> {
        // Plain data: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `source` is banned at `now`.
    pub fn is_banned(&self, source: IpAddr, now: Instant) -> bool {
        self.lock()
            .sources
            .get(&source)
            .and_then(|f| f.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a failure of `source`; true when the source is (now) banned.
    pub fn record_failure(&self, source: IpAddr, now: Instant) -> bool {
        let mut inner = self.lock();
        let due = inner
            .last_sweep
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if due {
            inner.last_sweep = Some(now);
            let window = self.window;
            inner.sources.retain(|_, f| f.is_live(now, window));
        }
        if !inner.sources.contains_key(&source) && inner.sources.len() >= self.max_sources {
            self.make_room(&mut inner.sources, now);
        }
        let entry = inner.sources.entry(source).or_insert(Failures {
            window_start: now,
            count: 0,
            banned_until: None,
        });
        if let Some(until) = entry.banned_until {
            if now < until {
                return true;
            }
            *entry = Failures {
                window_start: now,
                count: 0,
                banned_until: None,
            };
        }
        if now.saturating_duration_since(entry.window_start) >= self.window {
            entry.window_start = now;
            entry.count = 0;
        }
        entry.count += 1;
        if entry.count >= self.max_failures {
            entry.banned_until = Some(now + self.ban_time);
            return true;
        }
        false
    }

    /// Frees a tenth of the table: expired entries first, then the oldest
    /// unbanned, then the bans that end first.
    fn make_room(&self, sources: &mut HashMap<IpAddr, Failures>, now: Instant) {
        let window = self.window;
        sources.retain(|_, f| f.is_live(now, window));
        let target = self.max_sources - self.max_sources.div_ceil(10);
        if sources.len() <= target {
            return;
        }
        let mut order: Vec<(bool, Instant, IpAddr)> = sources
            .iter()
            .map(
                |(ip, f)| match f.banned_until.filter(|until| now < *until) {
                    Some(until) => (true, until, *ip),
                    None => (false, f.window_start, *ip),
                },
            )
            .collect();
        order.sort_unstable();
        let excess = sources.len() - target;
        for (_, _, ip) in order.into_iter().take(excess) {
            sources.remove(&ip);
        }
        self.evicted.fetch_add(excess as u64, Ordering::Relaxed);
    }

    /// Source addresses in the table.
    pub fn tracked_sources(&self) -> usize {
        self.lock().sources.len()
    }

    /// Entries pushed out of a full table while their window or ban ran.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// A token from the query string (`?token=`), for WebSocket clients, which
/// cannot set headers from a browser.
fn query_token(parts: &Parts) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| v.to_string())
    })
}

fn source(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Authenticates a request: 401 without a valid token, 429 for a source that
/// failed too often.
pub async fn authenticate(state: &ApiState, parts: &Parts) -> Result<Principal, ApiError> {
    let now = std::time::Instant::now();
    let ip = source(parts);
    if let Some(ip) = ip
        && state.throttle.is_banned(ip, now)
    {
        return Err(ApiError::too_many(
            "too many failed authentications from this address; try again later",
        ));
    }
    let Some(presented) = bearer(parts).or_else(|| query_token(parts)) else {
        return Err(ApiError::unauthorized(
            "missing bearer token (Authorization: Bearer TOKEN)",
        ));
    };
    match state.tokens.lookup(&presented) {
        Some(principal) => Ok(principal),
        None => {
            if let Some(ip) = ip {
                state.throttle.record_failure(ip, now);
            }
            Err(ApiError::unauthorized("invalid token"))
        }
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<ApiState>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = Arc::<ApiState>::from_ref(state);
        authenticate(&state, parts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: ApiRole, secret: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            role,
            agent: (role == ApiRole::Agent).then(|| "1001".into()),
            queues: vec!["support".into()],
            sha256: Sha256::digest(secret.as_bytes()).into(),
            phones: Vec::new(),
        }
    }

    #[test]
    fn a_token_is_found_by_its_hash_only() {
        let tokens = Tokens::new(vec![
            token("a", ApiRole::Agent, "agent-secret"),
            token("s", ApiRole::Supervisor, "supervisor-secret"),
        ]);
        let p = tokens.lookup("supervisor-secret").unwrap();
        assert_eq!((p.name.as_str(), p.role), ("s", ApiRole::Supervisor));
        assert!(tokens.lookup("supervisor-secre").is_none());
        assert!(tokens.lookup("").is_none());
        let agent = tokens.lookup("agent-secret").unwrap();
        assert!(agent.may_act_for_agent("1001", &[]));
        assert!(!agent.may_act_for_agent("1002", &["support".into()]));
        assert!(p.may_act_for_agent("1002", &["support".into()]));
        assert!(!p.may_act_for_agent("1003", &["sales".into()]));
    }

    fn addr(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn the_failure_table_stays_bounded_under_many_sources_and_keeps_recent_bans() {
        let t0 = Instant::now();
        let table = FailedAuths::new(3, Duration::from_secs(60), Duration::from_secs(300), 1_000);
        // A source banned early, before the flood.
        let banned = addr(999_999);
        for _ in 0..3 {
            table.record_failure(banned, t0);
        }
        assert!(table.is_banned(banned, t0));
        // A flood of distinct sources, one bad token each, all within the
        // window: nothing expires, the table makes room.
        for n in 0..50_000 {
            table.record_failure(addr(n), t0 + Duration::from_millis(u64::from(n)));
            assert!(table.tracked_sources() <= 1_000);
        }
        assert!(table.evicted() >= 49_000, "{}", table.evicted());
        assert!(
            table.is_banned(banned, t0 + Duration::from_secs(50)),
            "a ban outlives the unbanned entries"
        );
        // The most recent source is still counted.
        let last = addr(49_999);
        let now = t0 + Duration::from_secs(50);
        table.record_failure(last, now);
        assert!(table.record_failure(last, now), "third failure bans");
    }

    #[test]
    fn failure_entries_expire_with_their_window_and_their_ban() {
        let t0 = Instant::now();
        let table = FailedAuths::new(2, Duration::from_secs(10), Duration::from_secs(30), 100);
        for n in 0..50 {
            table.record_failure(addr(n), t0);
        }
        table.record_failure(addr(1), t0);
        assert!(table.is_banned(addr(1), t0));
        assert_eq!(table.tracked_sources(), 50);
        // After the window only the ban is left; after the ban, nothing.
        table.record_failure(addr(500), t0 + Duration::from_secs(11));
        assert_eq!(table.tracked_sources(), 2);
        assert!(table.is_banned(addr(1), t0 + Duration::from_secs(11)));
        table.record_failure(addr(501), t0 + Duration::from_secs(45));
        assert_eq!(
            table.tracked_sources(),
            1,
            "only the newest failure is left"
        );
        assert!(!table.is_banned(addr(1), t0 + Duration::from_secs(45)));
        assert_eq!(table.evicted(), 0);
    }
}
