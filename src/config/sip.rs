//! `[sip]`: the SIP listeners, the realm, the transaction timer T1, the grace
//! at shutdown and the session timers.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSip {
    pub udp: String,
    pub tcp: String,
    pub external: String,
    pub realm: String,
    pub user_agent: String,
    #[serde(with = "humantime_serde")]
    pub t1: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub session_expires: Duration,
    #[serde(with = "humantime_serde")]
    pub min_se: Duration,
}

impl Default for RawSip {
    fn default() -> Self {
        Self {
            udp: "127.0.0.1:5060".into(),
            tcp: "127.0.0.1:5060".into(),
            external: String::new(),
            realm: "hotline".into(),
            user_agent: format!("hotline/{}", env!("CARGO_PKG_VERSION")),
            t1: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(2),
            session_expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SipSettings {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub external: Option<SocketAddr>,
    pub realm: String,
    pub user_agent: String,
    pub t1: Duration,
    pub shutdown_grace: Duration,
    /// RFC 4028 session interval hotline asks for and accepts at most;
    /// `None` = no session timers.
    pub session_expires: Option<Duration>,
    /// The shortest session interval hotline accepts (`Min-SE`), ≥ 1s.
    pub min_se: Duration,
}

impl Section for RawSip {
    type Checked = SipSettings;

    fn check(&self, problems: &mut Problems) -> SipSettings {
        let udp = parse_listen("sip.udp", &self.udp, problems);
        let tcp = parse_listen("sip.tcp", &self.tcp, problems);
        let external = parse_listen("sip.external", &self.external, problems);
        if self.udp.trim().is_empty() && self.tcp.trim().is_empty() {
            problems.add(
                "sip.udp",
                "both sip.udp and sip.tcp are empty: hotline needs at least one SIP listener",
            );
        }
        if self.realm.trim().is_empty() || self.realm.contains('"') {
            problems.add(
                "sip.realm",
                "must be a non-empty name without double quotes",
            );
        }
        if self.t1 < Duration::from_millis(50) || self.t1 > Duration::from_secs(10) {
            problems.add(
                "sip.t1",
                format!(
                    "{} is out of range: expected between 50ms and 10s (RFC 3261 recommends 500ms)",
                    humantime::format_duration(self.t1)
                ),
            );
        }
        if self.min_se < Duration::from_secs(1) {
            problems.add("sip.min_se", "must be at least 1s");
        }
        if !self.session_expires.is_zero() && self.session_expires < self.min_se {
            problems.add(
                "sip.session_expires",
                format!(
                    "{} is below sip.min_se ({}); \"0s\" turns session timers off",
                    humantime::format_duration(self.session_expires),
                    humantime::format_duration(self.min_se)
                ),
            );
        }
        SipSettings {
            udp,
            tcp,
            external,
            realm: self.realm.clone(),
            user_agent: self.user_agent.clone(),
            t1: self.t1,
            shutdown_grace: self.shutdown_grace,
            session_expires: super::nonzero(self.session_expires),
            min_se: self.min_se,
        }
    }
}

/// A listener address; `None` when empty (the listener is off) or invalid
/// (then a problem names `key`).
pub(super) fn parse_listen(key: &str, value: &str, problems: &mut Problems) -> Option<SocketAddr> {
    if value.trim().is_empty() {
        return None;
    }
    match value.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(
                key,
                format!(
                    "`{value}` is not an address:port such as \"127.0.0.1:5060\" or \"[::1]:5060\" (empty disables)"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::check_section;

    #[test]
    fn an_empty_listener_is_off_but_one_must_be_on() {
        let (sip, keys) = check_section(&RawSip {
            udp: " ".into(),
            ..RawSip::default()
        });
        assert_eq!(sip.udp, None);
        assert_eq!(sip.tcp, Some("127.0.0.1:5060".parse().unwrap()));
        assert!(keys.is_empty(), "{keys:?}");
        let (_, keys) = check_section(&RawSip {
            udp: String::new(),
            tcp: String::new(),
            ..RawSip::default()
        });
        assert_eq!(keys, ["sip.udp"]);
    }

    #[test]
    fn session_timers_are_off_at_zero_and_never_below_min_se() {
        let (sip, keys) = check_section(&RawSip {
            session_expires: Duration::ZERO,
            ..RawSip::default()
        });
        assert_eq!(sip.session_expires, None);
        assert!(keys.is_empty(), "{keys:?}");
        let (_, keys) = check_section(&RawSip {
            session_expires: Duration::from_secs(60),
            ..RawSip::default()
        });
        assert_eq!(keys, ["sip.session_expires"]);
    }

    #[test]
    fn every_bad_value_of_the_section_is_named_in_one_run() {
        let (_, keys) = check_section(&RawSip {
            udp: "localhost".into(),
            external: "192.0.2.1".into(),
            realm: "a\"b".into(),
            t1: Duration::from_millis(10),
            min_se: Duration::ZERO,
            session_expires: Duration::ZERO,
            ..RawSip::default()
        });
        assert_eq!(
            keys,
            [
                "sip.udp",
                "sip.external",
                "sip.realm",
                "sip.t1",
                "sip.min_se"
            ]
        );
    }
}
