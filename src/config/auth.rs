//! `[auth]`: the digest challenge hotline sends phones and trunks, and how
//! failed attempts lock a user or an address out.

use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

/// Digest algorithms hotline can challenge with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DigestAlgorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "MD5")]
    Md5,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub algorithms: Vec<DigestAlgorithm>,
    #[serde(with = "humantime_serde")]
    pub nonce_ttl: Duration,
    pub max_failures: u32,
    /// Unset: 100, or max_failures when that is higher.
    pub max_failures_per_source: Option<u32>,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    #[serde(with = "humantime_serde")]
    pub ban_time: Duration,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            algorithms: vec![DigestAlgorithm::Md5],
            nonce_ttl: Duration::from_secs(300),
            max_failures: 5,
            max_failures_per_source: None,
            failure_window: Duration::from_secs(60),
            ban_time: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub algorithms: Vec<DigestAlgorithm>,
    pub nonce_ttl: Duration,
    pub max_failures: u32,
    pub max_failures_per_source: u32,
    pub failure_window: Duration,
    pub ban_time: Duration,
}

impl Section for RawAuth {
    type Checked = AuthSettings;

    fn check(&self, problems: &mut Problems) -> AuthSettings {
        if self.algorithms.is_empty() {
            problems.add(
                "auth.algorithms",
                "must list at least one of \"SHA-256\", \"MD5\"",
            );
        }
        if self.nonce_ttl < Duration::from_secs(1) {
            problems.add("auth.nonce_ttl", "must be at least 1s");
        }
        if self.max_failures == 0 {
            problems.add(
                "auth.max_failures",
                "must be at least 1 (a user is locked out from an address after this many failures)",
            );
        }
        if self.failure_window.is_zero() {
            problems.add("auth.failure_window", "must be at least 1s");
        }
        if self
            .max_failures_per_source
            .is_some_and(|n| n < self.max_failures)
        {
            problems.add(
                "auth.max_failures_per_source",
                "must be at least auth.max_failures (it counts every user's failures from one address together)",
            );
        }
        AuthSettings {
            algorithms: self.algorithms.clone(),
            nonce_ttl: self.nonce_ttl,
            max_failures: self.max_failures,
            max_failures_per_source: self
                .max_failures_per_source
                .unwrap_or(self.max_failures.max(100)),
            failure_window: self.failure_window,
            ban_time: self.ban_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn unknown_digest_algorithm_is_refused() {
        let err = load("[auth]\nalgorithms = [\"SHA-1\"]\n").unwrap_err();
        assert!(keys(err)[0].starts_with("auth.algorithms"));
    }

    #[test]
    fn zero_values_are_refused_each_by_its_key() {
        let (_, keys) = check_section(&RawAuth {
            algorithms: Vec::new(),
            nonce_ttl: Duration::ZERO,
            max_failures: 0,
            failure_window: Duration::ZERO,
            ..RawAuth::default()
        });
        assert_eq!(
            keys,
            [
                "auth.algorithms",
                "auth.nonce_ttl",
                "auth.max_failures",
                "auth.failure_window"
            ]
        );
    }

    #[test]
    fn the_per_source_ceiling_is_never_below_the_per_user_one() {
        let (auth, _) = check_section(&RawAuth {
            max_failures: 7,
            ..RawAuth::default()
        });
        assert_eq!(auth.max_failures_per_source, 100);
        let (auth, _) = check_section(&RawAuth {
            max_failures: 150,
            ..RawAuth::default()
        });
        assert_eq!(auth.max_failures_per_source, 150);
        let (auth, keys) = check_section(&RawAuth {
            max_failures_per_source: Some(9),
            ..RawAuth::default()
        });
        assert_eq!(auth.max_failures_per_source, 9);
        assert!(keys.is_empty(), "{keys:?}");
    }
}
