//! Digest authentication of requests: agents' REGISTERs and trunks' INVITEs.
//!
//! Joins the pure digest maths ([`super::digest`]) with policy: which algorithms
//! are offered, when a nonce is stale rather than wrong, replay protection (each
//! nonce's count must grow, so a captured Authorization cannot be sent again),
//! and how failures feed the per-source [`AuthThrottle`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use super::digest::{self, Algorithm, NonceCheck, NonceIssuer};
use super::throttle::{AuthThrottle, FailureVerdict};
use crate::config::{AuthSettings, DigestAlgorithm};

/// What to do with a request after looking at its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Credentials verified for this username.
    Authenticated { username: String },
    /// No usable credentials yet: challenge (stale = the password was right but
    /// the nonce is old, so the phone may retry silently).
    Challenge { stale: bool },
    /// Wrong credentials: challenge again, and the source was charged a failure.
    Failed { reason: String, banned: bool },
}

#[derive(Debug)]
pub struct DigestAuthority {
    realm: String,
    algorithms: Vec<Algorithm>,
    nonces: NonceIssuer,
    opaque: String,
    throttle: Arc<AuthThrottle>,
    /// Highest nonce count seen per nonce, and when the nonce was first used.
    nonce_counts: DashMap<String, (u32, Instant)>,
    nonce_ttl: Duration,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DigestAuthority {
    pub fn new(realm: &str, settings: &AuthSettings, throttle: Arc<AuthThrottle>) -> Self {
        let algorithms = settings
            .algorithms
            .iter()
            .map(|a| match a {
                DigestAlgorithm::Sha256 => Algorithm::Sha256,
                DigestAlgorithm::Md5 => Algorithm::Md5,
            })
            .collect();
        let nonces = NonceIssuer::new(settings.nonce_ttl);
        let opaque = nonces.issue(0).chars().rev().take(16).collect();
        Self {
            realm: realm.to_string(),
            algorithms,
            nonces,
            opaque,
            throttle,
            nonce_counts: DashMap::new(),
            nonce_ttl: settings.nonce_ttl,
        }
    }

    /// Forgets the counts of nonces that have expired anyway.
    pub fn sweep(&self, now: Instant) {
        let keep = self.nonce_ttl + Duration::from_secs(10);
        self.nonce_counts
            .retain(|_, (_, first)| now.duration_since(*first) < keep);
    }

    /// Records `nc` for `nonce`; false when it is not higher than the last one (a replay).
    fn fresh_count(&self, nonce: &str, nc: &str) -> bool {
        let Ok(nc) = u32::from_str_radix(nc, 16) else {
            return false;
        };
        let mut entry = self
            .nonce_counts
            .entry(nonce.to_string())
            .or_insert((0, Instant::now()));
        if nc <= entry.0 {
            return false;
        }
        entry.0 = nc;
        true
    }

    pub fn throttle(&self) -> &AuthThrottle {
        &self.throttle
    }

    /// One challenge header value per offered algorithm, strongest first.
    pub fn challenges(&self, stale: bool) -> Vec<String> {
        let nonce = self.nonces.issue(unix_now());
        digest::challenges(&self.realm, &nonce, &self.opaque, &self.algorithms, stale)
    }

    /// Checks the `Authorization`/`Proxy-Authorization` values of a request.
    /// `password_of` maps a username to its password (None: unknown user).
    pub fn authenticate<'a>(
        &self,
        credentials: impl IntoIterator<Item = &'a str>,
        method: &str,
        source: IpAddr,
        password_of: impl Fn(&str) -> Option<String>,
    ) -> AuthOutcome {
        let mut ours = None;
        for value in credentials {
            match digest::parse_credentials(value) {
                Ok(creds) if creds.realm == self.realm => {
                    ours = Some(Ok(creds));
                    break;
                }
                Ok(_) => {}
                Err(e) => ours = Some(Err(e)),
            }
        }
        let creds = match ours {
            None => return AuthOutcome::Challenge { stale: false },
            Some(Err(e)) => return self.fail(source, format!("malformed credentials: {e}")),
            Some(Ok(creds)) => creds,
        };
        if !self.algorithms.contains(&creds.algorithm) {
            return self.fail(
                source,
                format!("algorithm {} was not offered", creds.algorithm.name()),
            );
        }
        let Some(password) = password_of(&creds.username) else {
            return self.fail(source, format!("unknown user {:?}", creds.username));
        };
        if creds.qop.is_none() {
            // Without qop there is no nonce count, so no protection from replay.
            return self.fail(source, "credentials without qop=auth".into());
        }
        if !digest::verify(&creds, method, &password) {
            return self.fail(source, format!("wrong password for {:?}", creds.username));
        }
        match self.nonces.check(&creds.nonce, unix_now()) {
            NonceCheck::Valid => {
                let nc = creds.nc.as_deref().unwrap_or("");
                if self.fresh_count(&creds.nonce, nc) {
                    AuthOutcome::Authenticated {
                        username: creds.username,
                    }
                } else {
                    // A replayed (or reordered) Authorization: the password
                    // is proven, the request is not; ask for a new nonce.
                    AuthOutcome::Challenge { stale: true }
                }
            }
            // The password was right: an expired nonce, or one from before a
            // restart, only needs a fresh one.
            NonceCheck::Stale | NonceCheck::Invalid => AuthOutcome::Challenge { stale: true },
        }
    }

    fn fail(&self, source: IpAddr, reason: String) -> AuthOutcome {
        let banned = matches!(
            self.throttle.record_failure(source, Instant::now()),
            FailureVerdict::Banned { .. }
        );
        AuthOutcome::Failed { reason, banned }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn authority(max_failures: u32) -> DigestAuthority {
        let settings = AuthSettings {
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            nonce_ttl: Duration::from_secs(300),
            max_failures,
            failure_window: Duration::from_secs(60),
            ban_time: Duration::from_secs(300),
        };
        DigestAuthority::new(
            "hotline",
            &settings,
            Arc::new(AuthThrottle::new(
                max_failures,
                settings.failure_window,
                settings.ban_time,
            )),
        )
    }

    fn nonce_of(a: &DigestAuthority) -> String {
        let challenge = a.challenges(false).remove(0);
        challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string()
    }

    fn answer(a: &DigestAuthority, password: &str, algorithm: Algorithm) -> String {
        let nonce = nonce_of(a);
        digest::authorization_value(
            "1001",
            password,
            "hotline",
            &nonce,
            "sip:127.0.0.1",
            "REGISTER",
            algorithm,
            "abcdef",
            1,
            None,
        )
    }

    fn lookup(user: &str) -> Option<String> {
        (user == "1001").then(|| "demo1001".to_string())
    }

    #[test]
    fn challenges_offer_every_configured_algorithm_in_order() {
        let c = authority(5).challenges(false);
        assert_eq!(c.len(), 2);
        assert!(c[0].contains("algorithm=SHA-256"), "{}", c[0]);
        assert!(c[1].contains("algorithm=MD5"), "{}", c[1]);
        assert!(c.iter().all(|h| h.contains("qop=\"auth\"")));
    }

    #[test]
    fn no_credentials_is_a_challenge_not_a_failure() {
        let a = authority(1);
        assert_eq!(
            a.authenticate([], "REGISTER", SRC, lookup),
            AuthOutcome::Challenge { stale: false }
        );
        assert!(!a.throttle().is_banned(SRC, Instant::now()));
    }

    #[test]
    fn right_password_authenticates_with_both_algorithms() {
        let a = authority(5);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let value = answer(&a, "demo1001", alg);
            assert_eq!(
                a.authenticate([value.as_str()], "REGISTER", SRC, lookup),
                AuthOutcome::Authenticated {
                    username: "1001".into()
                }
            );
        }
    }

    #[test]
    fn wrong_password_fails_and_bans_at_the_limit() {
        let a = authority(2);
        let value = answer(&a, "wrong", Algorithm::Md5);
        let first = a.authenticate([value.as_str()], "REGISTER", SRC, lookup);
        assert!(
            matches!(first, AuthOutcome::Failed { banned: false, .. }),
            "{first:?}"
        );
        let second = a.authenticate([value.as_str()], "REGISTER", SRC, lookup);
        assert!(
            matches!(second, AuthOutcome::Failed { banned: true, .. }),
            "{second:?}"
        );
    }

    #[test]
    fn right_password_with_a_foreign_nonce_is_stale() {
        let a = authority(5);
        let other = authority(5);
        let value = answer(&other, "demo1001", Algorithm::Md5);
        assert_eq!(
            a.authenticate([value.as_str()], "REGISTER", SRC, lookup),
            AuthOutcome::Challenge { stale: true }
        );
    }

    #[test]
    fn method_is_part_of_the_digest() {
        let a = authority(5);
        let value = answer(&a, "demo1001", Algorithm::Sha256);
        assert!(matches!(
            a.authenticate([value.as_str()], "INVITE", SRC, lookup),
            AuthOutcome::Failed { .. }
        ));
    }

    #[test]
    fn a_replayed_authorization_is_not_accepted_twice() {
        let a = authority(5);
        let value = answer(&a, "demo1001", Algorithm::Md5);
        assert!(matches!(
            a.authenticate([value.as_str()], "REGISTER", SRC, lookup),
            AuthOutcome::Authenticated { .. }
        ));
        assert_eq!(
            a.authenticate([value.as_str()], "REGISTER", SRC, lookup),
            AuthOutcome::Challenge { stale: true }
        );
        // the next count on the same nonce is fine
        let next = value.replace("nc=00000001", "nc=00000002");
        let creds = digest::parse_credentials(&next).unwrap();
        let response = digest::expected_response(&creds, "REGISTER", "demo1001");
        let next = next.replace(&creds.response, &response);
        assert!(matches!(
            a.authenticate([next.as_str()], "REGISTER", SRC, lookup),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn credentials_without_qop_are_refused() {
        let a = authority(5);
        let nonce = nonce_of(&a);
        let mut creds = digest::parse_credentials(&format!(
            "Digest username=\"1001\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"x\""
        ))
        .unwrap();
        creds.response = digest::expected_response(&creds, "REGISTER", "demo1001");
        let value = format!(
            "Digest username=\"1001\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{}\"",
            creds.response
        );
        assert!(matches!(
            a.authenticate([value.as_str()], "REGISTER", SRC, lookup),
            AuthOutcome::Failed { .. }
        ));
    }

    #[test]
    fn credentials_for_another_realm_are_ignored() {
        let a = authority(5);
        let value = answer(&a, "demo1001", Algorithm::Md5).replace("hotline", "elsewhere");
        assert_eq!(
            a.authenticate([value.as_str()], "REGISTER", SRC, lookup),
            AuthOutcome::Challenge { stale: false }
        );
    }
}
