//! Digest authentication of requests: agents' REGISTERs and trunks' INVITEs.
//!
//! Joins the pure digest maths ([`super::digest`]) with policy: which algorithms
//! are offered, when a nonce is stale rather than wrong, and how failures feed
//! the per-source [`AuthThrottle`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
        }
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
        if !digest::verify(&creds, method, &password) {
            return self.fail(source, format!("wrong password for {:?}", creds.username));
        }
        match self.nonces.check(&creds.nonce, unix_now()) {
            NonceCheck::Valid => AuthOutcome::Authenticated {
                username: creds.username,
            },
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

    fn answer(a: &DigestAuthority, password: &str, algorithm: Algorithm) -> String {
        let challenge = a.challenges(false).remove(0);
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string();
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
    fn credentials_for_another_realm_are_ignored() {
        let a = authority(5);
        let value = answer(&a, "demo1001", Algorithm::Md5).replace("hotline", "elsewhere");
        assert_eq!(
            a.authenticate([value.as_str()], "REGISTER", SRC, lookup),
            AuthOutcome::Challenge { stale: false }
        );
    }
}
