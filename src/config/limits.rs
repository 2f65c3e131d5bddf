//! `[limits]`: the ceilings that keep a flood from one place from taking the
//! service from everyone else (calls, INVITE rates, connections, slow
//! clients). Each trunk's own ceilings are written under its `[trunks.NAME]`
//! and gathered here by `cross`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

/// `[limits]`: ceilings that keep a flood from one place from taking the
/// service from everyone else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_calls: usize,
    pub invite_rate: f64,
    pub invite_burst: u32,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_source: usize,
    #[serde(with = "humantime_serde")]
    pub tcp_first_message_timeout: Duration,
    pub http_max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
    pub overload_min_calls: u64,
    pub overload_store_backlog: u64,
    pub overload_pacer_late_ticks: u64,
    pub overload_bus_lag: u64,
    #[serde(with = "humantime_serde")]
    pub overload_cooldown: Duration,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_calls: 1000,
            invite_rate: 20.0,
            invite_burst: 40,
            tcp_max_connections: 1000,
            tcp_max_connections_per_source: 100,
            tcp_first_message_timeout: Duration::from_secs(10),
            http_max_connections: 256,
            http_header_timeout: Duration::from_secs(10),
            overload_min_calls: 100,
            overload_store_backlog: 20_000,
            overload_pacer_late_ticks: 25,
            overload_bus_lag: 2_048,
            overload_cooldown: Duration::from_secs(5),
        }
    }
}

/// The validated `[limits]`, with each trunk's own `max_calls`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsSettings {
    /// Calls up at once in total; 0: no ceiling.
    pub max_calls: usize,
    /// Per trunk name, where one is set.
    pub trunk_max_calls: BTreeMap<String, usize>,
    /// INVITEs a second from each address of a trunk's `sources`, per trunk
    /// name, where one is set (instead of `invite_rate`).
    pub trunk_invite_rate: BTreeMap<String, f64>,
    /// New INVITEs a second per source address; 0: no limit.
    pub invite_rate: f64,
    pub invite_burst: u32,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_source: usize,
    pub tcp_first_message_timeout: Duration,
    pub http_max_connections: usize,
    pub http_header_timeout: Duration,
    /// Calls up below which nothing is refused as overload.
    pub overload_min_calls: u64,
    /// Events and rows waiting for the store past which new calls are
    /// refused as overload; 0: not watched.
    pub overload_store_backlog: u64,
    /// Media pacer ticks more than 2 ms late within a second past which new
    /// calls are refused as overload; 0: not watched.
    pub overload_pacer_late_ticks: u64,
    /// Events the event bus's slowest subscriber (or the metrics' queue)
    /// may lag behind before new calls are refused as overload; 0: not
    /// watched.
    pub overload_bus_lag: u64,
    /// How long every overload signal must stay under half its mark before
    /// new calls are taken again (and the Retry-After of a shed call).
    pub overload_cooldown: Duration,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        RawLimits::default().resolve(BTreeMap::new(), BTreeMap::new())
    }
}

impl RawLimits {
    fn resolve(
        &self,
        trunk_max_calls: BTreeMap<String, usize>,
        trunk_invite_rate: BTreeMap<String, f64>,
    ) -> LimitsSettings {
        LimitsSettings {
            max_calls: self.max_calls,
            trunk_max_calls,
            trunk_invite_rate,
            invite_rate: self.invite_rate,
            invite_burst: self.invite_burst,
            tcp_max_connections: self.tcp_max_connections,
            tcp_max_connections_per_source: self.tcp_max_connections_per_source,
            tcp_first_message_timeout: self.tcp_first_message_timeout,
            http_max_connections: self.http_max_connections,
            http_header_timeout: self.http_header_timeout,
            overload_min_calls: self.overload_min_calls,
            overload_store_backlog: self.overload_store_backlog,
            overload_pacer_late_ticks: self.overload_pacer_late_ticks,
            overload_bus_lag: self.overload_bus_lag,
            overload_cooldown: self.overload_cooldown,
        }
    }
}

impl Section for RawLimits {
    /// The ceilings, without the trunks' own (gathered by `cross`).
    type Checked = LimitsSettings;

    fn check(&self, problems: &mut Problems) -> LimitsSettings {
        if !self.invite_rate.is_finite() || self.invite_rate < 0.0 {
            problems.add(
                "limits.invite_rate",
                "must be a number of INVITEs a second, 0 or more (0: no limit)",
            );
        }
        if self.invite_burst == 0 {
            problems.add("limits.invite_burst", "must be at least 1");
        }
        if self.tcp_max_connections == 0 {
            problems.add("limits.tcp_max_connections", "must be at least 1");
        }
        if self.tcp_max_connections_per_source == 0
            || self.tcp_max_connections_per_source > self.tcp_max_connections
        {
            problems.add(
                "limits.tcp_max_connections_per_source",
                "must be between 1 and limits.tcp_max_connections",
            );
        }
        if self.tcp_first_message_timeout < Duration::from_millis(100) {
            problems.add(
                "limits.tcp_first_message_timeout",
                "must be at least 100ms (a connection that sends no complete message within it is closed)",
            );
        }
        if self.http_max_connections == 0 {
            problems.add("limits.http_max_connections", "must be at least 1");
        }
        if self.http_header_timeout < Duration::from_millis(100) {
            problems.add(
                "limits.http_header_timeout",
                "must be at least 100ms (a client that sends no complete request head within it is disconnected)",
            );
        }
        if self.overload_store_backlog >= crate::events::BACKLOG_CAPACITY {
            problems.add(
                "limits.overload_store_backlog",
                format!(
                    "must be below {} (the store's queue capacity): the door must close before events could be lost (0: not watched)",
                    crate::events::BACKLOG_CAPACITY
                ),
            );
        }
        if self.overload_pacer_late_ticks > 50 {
            problems.add(
                "limits.overload_pacer_late_ticks",
                "must be between 0 and 50 (the pacer ticks 50 times a second; 0: not watched)",
            );
        }
        if self.overload_bus_lag >= crate::events::BUS_CAPACITY as u64 {
            problems.add(
                "limits.overload_bus_lag",
                format!(
                    "must be below {} (the event bus's capacity; 0: not watched)",
                    crate::events::BUS_CAPACITY
                ),
            );
        }
        if self.overload_cooldown < Duration::from_secs(1)
            || self.overload_cooldown > Duration::from_secs(300)
        {
            problems.add("limits.overload_cooldown", "must be between 1s and 5m");
        }
        self.resolve(BTreeMap::new(), BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn limits_have_defaults_and_name_the_bad_key() {
        let s = load("").unwrap();
        assert_eq!(s.limits, LimitsSettings::default());
        assert_eq!(s.limits.max_calls, 1000);
        assert_eq!(s.auth.max_failures_per_source, 100);
        let s = load("[auth]\nmax_failures = 1000\n").unwrap();
        assert_eq!(s.auth.max_failures_per_source, 1000);
        let s = load(
            "[limits]\nmax_calls = 2\ninvite_rate = 0.5\n[trunks.t]\nsources = [\"10.0.0.0/8\"]\nmax_calls = 1\n",
        )
        .unwrap();
        assert_eq!(s.limits.max_calls, 2);
        assert_eq!(s.limits.invite_rate, 0.5);
        assert_eq!(s.limits.trunk_max_calls.get("t"), Some(&1));
        assert_eq!(s.limits.overload_store_backlog, 20_000);
        assert_eq!(s.limits.overload_min_calls, 100);
        assert_eq!(s.limits.overload_pacer_late_ticks, 25);
        assert_eq!(s.limits.overload_cooldown, Duration::from_secs(5));
        let s = load(
            "[limits]\noverload_store_backlog = 0\noverload_pacer_late_ticks = 5\noverload_bus_lag = 100\noverload_cooldown = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(s.limits.overload_store_backlog, 0);
        assert_eq!(s.limits.overload_pacer_late_ticks, 5);
        assert_eq!(s.limits.overload_bus_lag, 100);
        assert_eq!(s.limits.overload_cooldown, Duration::from_secs(2));
        let err = load(
            "[limits]\noverload_store_backlog = 100000000\noverload_pacer_late_ticks = 51\noverload_bus_lag = 5000\noverload_cooldown = \"0s\"\n",
        )
        .unwrap_err();
        let overload_keys = keys(err);
        for key in [
            "limits.overload_store_backlog",
            "limits.overload_pacer_late_ticks",
            "limits.overload_bus_lag",
            "limits.overload_cooldown",
        ] {
            assert!(
                overload_keys.contains(&key.to_string()),
                "{key} not in {overload_keys:?}"
            );
        }
        let err = load(
            "[limits]\ninvite_burst = 0\ntcp_max_connections_per_source = 5000\nhttp_header_timeout = \"0s\"\n[auth]\nmax_failures = 10\nmax_failures_per_source = 3\n",
        )
        .unwrap_err();
        let keys = keys(err);
        for key in [
            "limits.invite_burst",
            "limits.tcp_max_connections_per_source",
            "limits.http_header_timeout",
            "auth.max_failures_per_source",
        ] {
            assert!(keys.contains(&key.to_string()), "{key} not in {keys:?}");
        }
    }
}
