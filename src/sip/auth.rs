//! Digest authentication of requests: agents' REGISTERs and trunks' INVITEs.
//!
//! Joins the pure digest maths ([`super::digest`]) with policy: which algorithms
//! are offered, when a nonce is stale rather than wrong, replay protection (each
//! nonce's count must grow, so a captured Authorization cannot be sent again),
//! the digest `uri` matching the Request-URI, and how failures feed the
//! [`Lockout`]. Each nonce is bound to the address it was sent to, and only a
//! wrong answer to such a nonce from that address counts as a failure: an
//! unknown user or a made-up nonce is simply challenged again, so nobody can
//! get a carrier or a colleague locked out with spoofed datagrams.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use super::digest::{self, Algorithm, NonceCheck, NonceIssuer};
use super::lockout::{Ban, FailureVerdict, Lockout};
use crate::config::{AuthSettings, DigestAlgorithm};

/// What to do with a request after looking at its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Credentials verified for this username.
    Authenticated { username: String },
    /// No usable credentials yet: challenge (stale = the password was right but
    /// the nonce is old, so the phone may retry silently).
    Challenge { stale: bool },
    /// Wrong credentials to a nonce of ours: challenge again, or refuse when
    /// this failure started a lockout.
    Failed {
        username: String,
        reason: String,
        lockout: Option<Ban>,
    },
    /// The user (or the whole address) is locked out: refused unchecked.
    LockedOut(Ban),
    /// Credentials that cannot belong to this request (400 Bad Request).
    BadRequest { reason: String },
}

#[derive(Debug)]
pub struct DigestAuthority {
    realm: String,
    algorithms: Vec<Algorithm>,
    nonces: NonceIssuer,
    opaque: String,
    lockout: Arc<Lockout>,
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

/// The bytes a nonce is bound to: the address it was sent to.
fn bound(source: IpAddr) -> Vec<u8> {
    match source {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

/// Whether the digest `uri` names the Request-URI (RFC 7616 §3.4.6, RFC 2617
/// §3.2.2.5): the same text, or the same scheme, user, host and port.
pub fn uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    let (a, b) = (digest_uri.trim(), request_uri.trim());
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let (Ok(a), Ok(b)) = (
        rsipstack::sip::uri::parse_uri(a),
        rsipstack::sip::uri::parse_uri(b),
    ) else {
        return false;
    };
    let user = |u: &rsipstack::sip::Uri| u.auth.as_ref().map(|a| a.user.clone());
    a.scheme == b.scheme
        && user(&a) == user(&b)
        && a.host_with_port
            .host
            .to_string()
            .eq_ignore_ascii_case(&b.host_with_port.host.to_string())
        && a.host_with_port.port == b.host_with_port.port
}

impl DigestAuthority {
    pub fn new(realm: &str, settings: &AuthSettings, lockout: Arc<Lockout>) -> Self {
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
            lockout,
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

    pub fn lockout(&self) -> &Lockout {
        &self.lockout
    }

    /// One challenge header value per offered algorithm, strongest first,
    /// with a nonce only `source` can answer.
    pub fn challenges(&self, stale: bool, source: IpAddr) -> Vec<String> {
        let nonce = self.nonces.issue_bound(unix_now(), &bound(source));
        digest::challenges(&self.realm, &nonce, &self.opaque, &self.algorithms, stale)
    }

    /// Checks the `Authorization`/`Proxy-Authorization` values of a request.
    /// `password_of` maps a username to its password (None: unknown user).
    pub fn authenticate<'a>(
        &self,
        credentials: impl IntoIterator<Item = &'a str>,
        method: &str,
        request_uri: &str,
        source: IpAddr,
        password_of: impl Fn(&str) -> Option<String>,
    ) -> AuthOutcome {
        let now = Instant::now();
        let mut ours = None;
        for value in credentials {
            if let Ok(creds) = digest::parse_credentials(value)
                && creds.realm == self.realm
            {
                ours = Some(creds);
                break;
            }
        }
        // Unreadable or foreign credentials prove nothing: a new challenge.
        let Some(creds) = ours else {
            return AuthOutcome::Challenge { stale: false };
        };
        if !uri_matches(&creds.uri, request_uri) {
            return AuthOutcome::BadRequest {
                reason: "Bad Request (digest uri does not match the Request-URI)".into(),
            };
        }
        if let Some(ban) = self.lockout.banned(source, &creds.username, now) {
            return AuthOutcome::LockedOut(ban);
        }
        if !self.algorithms.contains(&creds.algorithm) {
            return AuthOutcome::Challenge { stale: false };
        }
        let Some(password) = password_of(&creds.username) else {
            return AuthOutcome::Challenge { stale: false };
        };
        let right = digest::verify(&creds, method, &password);
        match self
            .nonces
            .check_bound(&creds.nonce, unix_now(), &bound(source))
        {
            // Not a nonce we gave this address: a guess or a spoof costs
            // nothing but a new challenge (stale when the password was right,
            // e.g. a nonce from before a restart).
            NonceCheck::Invalid => AuthOutcome::Challenge { stale: right },
            _ if creds.qop.is_none() => {
                // Without qop there is no nonce count, so no protection from replay.
                self.fail(source, creds.username, "credentials without qop=auth", now)
            }
            _ if !right => {
                let reason = format!("wrong password for {:?}", creds.username);
                self.fail(source, creds.username, &reason, now)
            }
            NonceCheck::Stale => AuthOutcome::Challenge { stale: true },
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
        }
    }

    fn fail(&self, source: IpAddr, username: String, reason: &str, now: Instant) -> AuthOutcome {
        let lockout = match self.lockout.record_failure(source, &username, now) {
            FailureVerdict::Banned(ban) => Some(ban),
            FailureVerdict::Counted { .. } => None,
        };
        AuthOutcome::Failed {
            username,
            reason: reason.to_string(),
            lockout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::lockout::{BanScope, LockoutPolicy};
    use std::time::Duration;

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9));
    const URI: &str = "sip:127.0.0.1";

    fn authority(max_failures: u32) -> DigestAuthority {
        let settings = AuthSettings {
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            nonce_ttl: Duration::from_secs(300),
            max_failures,
            max_failures_per_source: 100,
            failure_window: Duration::from_secs(60),
            ban_time: Duration::from_secs(300),
        };
        DigestAuthority::new(
            "hotline",
            &settings,
            Arc::new(Lockout::new(LockoutPolicy {
                max_failures_per_user: max_failures,
                max_failures_per_source: 100,
                window: settings.failure_window,
                ban_time: settings.ban_time,
            })),
        )
    }

    fn nonce_for(a: &DigestAuthority, source: IpAddr) -> String {
        let challenge = a.challenges(false, source).remove(0);
        challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string()
    }

    fn answer_as(
        a: &DigestAuthority,
        user: &str,
        password: &str,
        algorithm: Algorithm,
        source: IpAddr,
    ) -> String {
        let nonce = nonce_for(a, source);
        digest::authorization_value(
            user, password, "hotline", &nonce, URI, "REGISTER", algorithm, "abcdef", 1, None,
        )
    }

    fn answer(a: &DigestAuthority, password: &str, algorithm: Algorithm) -> String {
        answer_as(a, "1001", password, algorithm, SRC)
    }

    fn lookup(user: &str) -> Option<String> {
        ["1001", "1002"]
            .contains(&user)
            .then(|| format!("demo{user}"))
    }

    fn auth(a: &DigestAuthority, value: &str, source: IpAddr) -> AuthOutcome {
        a.authenticate([value], "REGISTER", URI, source, lookup)
    }

    #[test]
    fn challenges_offer_every_configured_algorithm_in_order() {
        let c = authority(5).challenges(false, SRC);
        assert_eq!(c.len(), 2);
        assert!(c[0].contains("algorithm=SHA-256"), "{}", c[0]);
        assert!(c[1].contains("algorithm=MD5"), "{}", c[1]);
        assert!(c.iter().all(|h| h.contains("qop=\"auth\"")));
    }

    #[test]
    fn no_credentials_is_a_challenge_not_a_failure() {
        let a = authority(1);
        assert_eq!(
            a.authenticate([], "REGISTER", URI, SRC, lookup),
            AuthOutcome::Challenge { stale: false }
        );
        assert_eq!(a.lockout().tracked(), 0);
    }

    #[test]
    fn right_password_authenticates_with_both_algorithms() {
        let a = authority(5);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let value = answer(&a, "demo1001", alg);
            assert_eq!(
                auth(&a, &value, SRC),
                AuthOutcome::Authenticated {
                    username: "1001".into()
                }
            );
        }
    }

    #[test]
    fn wrong_password_fails_and_locks_the_user_out_at_the_limit() {
        let a = authority(2);
        let first = auth(&a, &answer(&a, "wrong", Algorithm::Md5), SRC);
        assert!(
            matches!(first, AuthOutcome::Failed { lockout: None, .. }),
            "{first:?}"
        );
        let second = auth(&a, &answer(&a, "wrong", Algorithm::Md5), SRC);
        assert!(
            matches!(&second, AuthOutcome::Failed { lockout: Some(ban), .. } if ban.scope == BanScope::User("1001".into())),
            "{second:?}"
        );
        // Even the right password is refused now, from that address only...
        let right = answer(&a, "demo1001", Algorithm::Md5);
        assert!(matches!(auth(&a, &right, SRC), AuthOutcome::LockedOut(_)));
        // ...while a colleague behind the same address still registers.
        let colleague = answer_as(&a, "1002", "demo1002", Algorithm::Md5, SRC);
        assert!(matches!(
            auth(&a, &colleague, SRC),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn unknown_users_and_foreign_nonces_cost_nothing() {
        let a = authority(1);
        let unknown = answer_as(&a, "9999", "x", Algorithm::Md5, SRC);
        for _ in 0..10 {
            assert_eq!(
                auth(&a, &unknown, SRC),
                AuthOutcome::Challenge { stale: false }
            );
        }
        // A nonce issued to another address (a spoofer cannot read ours).
        let spoofed = answer_as(&a, "1001", "wrong", Algorithm::Md5, OTHER);
        for _ in 0..10 {
            assert_eq!(
                auth(&a, &spoofed, SRC),
                AuthOutcome::Challenge { stale: false }
            );
        }
        // A made-up nonce.
        let made_up = digest::authorization_value(
            "1001",
            "wrong",
            "hotline",
            "abc",
            URI,
            "REGISTER",
            Algorithm::Md5,
            "c",
            1,
            None,
        );
        assert_eq!(
            auth(&a, &made_up, SRC),
            AuthOutcome::Challenge { stale: false }
        );
        assert_eq!(a.lockout().tracked(), 0);
        let right = answer(&a, "demo1001", Algorithm::Md5);
        assert!(matches!(
            auth(&a, &right, SRC),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn right_password_with_a_foreign_nonce_is_stale() {
        let a = authority(5);
        let other = authority(5);
        let value = answer(&other, "demo1001", Algorithm::Md5);
        assert_eq!(
            auth(&a, &value, SRC),
            AuthOutcome::Challenge { stale: true }
        );
    }

    #[test]
    fn method_is_part_of_the_digest() {
        let a = authority(5);
        let value = answer(&a, "demo1001", Algorithm::Sha256);
        assert!(matches!(
            a.authenticate([value.as_str()], "INVITE", URI, SRC, lookup),
            AuthOutcome::Failed { .. }
        ));
    }

    #[test]
    fn the_digest_uri_must_be_the_request_uri() {
        let a = authority(5);
        let value = answer(&a, "demo1001", Algorithm::Md5);
        assert!(matches!(
            a.authenticate(
                [value.as_str()],
                "REGISTER",
                "sip:elsewhere.example",
                SRC,
                lookup
            ),
            AuthOutcome::BadRequest { .. }
        ));
        assert!(uri_matches("sip:127.0.0.1", "SIP:127.0.0.1"));
        assert!(uri_matches(
            "sip:400@127.0.0.1:5060",
            "sip:400@127.0.0.1:5060;transport=udp"
        ));
        assert!(!uri_matches(
            "sip:400@127.0.0.1:5060",
            "sip:401@127.0.0.1:5060"
        ));
        assert!(!uri_matches("sip:127.0.0.1:5060", "sip:127.0.0.1:5070"));
    }

    proptest::proptest! {
        /// Whatever a peer writes as digest uri, comparing never panics, and
        /// a URI always names itself.
        #[test]
        fn uri_comparison_is_total_and_reflexive(a in ".{0,40}", b in "sip:[a-z0-9@.:;=]{0,30}") {
            let _ = uri_matches(&a, &b);
            proptest::prop_assert!(uri_matches(&b, &b));
        }
    }

    #[test]
    fn a_replayed_authorization_is_not_accepted_twice() {
        let a = authority(5);
        let value = answer(&a, "demo1001", Algorithm::Md5);
        assert!(matches!(
            auth(&a, &value, SRC),
            AuthOutcome::Authenticated { .. }
        ));
        assert_eq!(
            auth(&a, &value, SRC),
            AuthOutcome::Challenge { stale: true }
        );
        // the next count on the same nonce is fine
        let next = value.replace("nc=00000001", "nc=00000002");
        let creds = digest::parse_credentials(&next).unwrap();
        let response = digest::expected_response(&creds, "REGISTER", "demo1001");
        let next = next.replace(&creds.response, &response);
        assert!(matches!(
            auth(&a, &next, SRC),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn credentials_without_qop_are_refused() {
        let a = authority(5);
        let nonce = nonce_for(&a, SRC);
        let mut creds = digest::parse_credentials(&format!(
            "Digest username=\"1001\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"x\""
        ))
        .unwrap();
        creds.response = digest::expected_response(&creds, "REGISTER", "demo1001");
        let value = format!(
            "Digest username=\"1001\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{}\"",
            creds.response
        );
        assert!(matches!(auth(&a, &value, SRC), AuthOutcome::Failed { .. }));
    }

    #[test]
    fn credentials_for_another_realm_are_ignored() {
        let a = authority(5);
        let value = answer(&a, "demo1001", Algorithm::Md5).replace("hotline", "elsewhere");
        assert_eq!(
            auth(&a, &value, SRC),
            AuthOutcome::Challenge { stale: false }
        );
    }
}
