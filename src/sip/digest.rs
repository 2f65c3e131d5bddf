//! Server-side HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617,
//! RFC 7616, RFC 8760): issuing `WWW-Authenticate`/`Proxy-Authenticate`
//! challenges, parsing `Authorization`/`Proxy-Authorization` values, issuing
//! and checking stateless nonces, and verifying responses (MD5 and SHA-256,
//! `qop=auth` or RFC 2069 style without qop). Pure logic: no I/O, no async.
//! A small client-side helper ([`authorization_value`]) builds credentials.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Maximum accepted clock skew for nonces stamped in the future, in seconds.
const MAX_FUTURE_SKEW_SECS: u64 = 5;

/// Digest hash algorithm. Only the RFC names `MD5` and `SHA-256` are
/// supported; `-sess` variants and others are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The RFC name, as written in `algorithm=` parameters.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an RFC algorithm name (`MD5`, `SHA-256`), case-insensitively.
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Lowercase hex hash of `parts` joined with `:`.
    fn hash_joined(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> String {
            let mut h = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    h.update(b":");
                }
                h.update(p);
            }
            hex::encode(h.finalize())
        }
        match self {
            Algorithm::Md5 => run::<Md5>(parts),
            Algorithm::Sha256 => run::<Sha256>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors from parsing Digest credentials.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DigestError {
    #[error("authorization scheme {0:?} is not Digest")]
    UnsupportedScheme(String),
    #[error("malformed digest credentials at byte {pos}: {reason}")]
    Malformed { pos: usize, reason: &'static str },
    #[error("missing digest parameter `{0}`")]
    MissingParameter(&'static str),
    #[error("duplicate digest parameter `{0}`")]
    DuplicateParameter(String),
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("unsupported qop {0:?}")]
    UnsupportedQop(String),
    #[error("invalid nonce count {0:?} (expected 8 hex digits)")]
    InvalidNonceCount(String),
}

/// Parsed `Digest ...` credentials from an Authorization/Proxy-Authorization
/// header value. Values are unescaped. `cnonce` and `nc` are `Some` exactly
/// when `qop` is `Some` (without qop they are ignored, per RFC 2069).
///
/// The caller must still check that `realm`, `algorithm` and `nonce` match
/// what it challenged with (see [`NonceIssuer::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// `Md5` when the parameter is absent.
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    /// Nonce count exactly as sent, e.g. `"00000001"`.
    pub nc: Option<String>,
    /// Always `auth` (in the case the client sent) when present.
    pub qop: Option<String>,
    pub opaque: Option<String>,
}

/// Parses an Authorization / Proxy-Authorization header value whose scheme
/// is `Digest`.
pub fn parse_credentials(header_value: &str) -> Result<DigestCredentials, DigestError> {
    let mut cur = Cursor::new(header_value);
    cur.skip_lws();
    let scheme_start = cur.pos;
    let scheme = cur.take_while(is_token_char);
    if scheme.is_empty() {
        return Err(cur.malformed("expected authentication scheme"));
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::UnsupportedScheme(scheme.to_owned()));
    }
    if cur.skip_lws() == 0 && !cur.at_end() {
        cur.pos = scheme_start + scheme.len();
        return Err(cur.malformed("expected whitespace after scheme"));
    }

    let mut username = None;
    let mut realm = None;
    let mut nonce = None;
    let mut uri = None;
    let mut response = None;
    let mut algorithm = None;
    let mut cnonce = None;
    let mut nc = None;
    let mut qop = None;
    let mut opaque = None;
    let mut others: HashSet<String> = HashSet::new();

    loop {
        cur.skip_lws();
        match cur.peek() {
            None => break,
            // Empty list elements are allowed by the `#rule`.
            Some(',') => {
                cur.bump(',');
                continue;
            }
            Some(_) => {}
        }
        let name = cur.take_while(is_token_char);
        if name.is_empty() {
            return Err(cur.malformed("expected parameter name"));
        }
        let name = name.to_ascii_lowercase();
        cur.skip_lws();
        if cur.peek() != Some('=') {
            return Err(cur.malformed("expected '='"));
        }
        cur.bump('=');
        cur.skip_lws();
        let value = if cur.peek() == Some('"') {
            cur.quoted_string()?
        } else {
            let v = cur.take_while(is_unquoted_value_char);
            if v.is_empty() {
                return Err(cur.malformed("expected parameter value"));
            }
            v.to_owned()
        };

        let slot = match name.as_str() {
            "username" => &mut username,
            "realm" => &mut realm,
            "nonce" => &mut nonce,
            "uri" => &mut uri,
            "response" => &mut response,
            "algorithm" => &mut algorithm,
            "cnonce" => &mut cnonce,
            "nc" => &mut nc,
            "qop" => &mut qop,
            "opaque" => &mut opaque,
            // Unknown (extension) parameters are ignored, but not duplicated.
            _ if others.insert(name.clone()) => &mut None,
            _ => return Err(DigestError::DuplicateParameter(name)),
        };
        if slot.is_some() {
            return Err(DigestError::DuplicateParameter(name));
        }
        *slot = Some(value);

        cur.skip_lws();
        match cur.peek() {
            None => break,
            Some(',') => cur.bump(','),
            Some(_) => return Err(cur.malformed("expected ','")),
        }
    }

    let username = username.ok_or(DigestError::MissingParameter("username"))?;
    let realm = realm.ok_or(DigestError::MissingParameter("realm"))?;
    let nonce = nonce.ok_or(DigestError::MissingParameter("nonce"))?;
    let uri = uri.ok_or(DigestError::MissingParameter("uri"))?;
    let response = response.ok_or(DigestError::MissingParameter("response"))?;
    let algorithm = match algorithm {
        None => Algorithm::Md5,
        Some(a) => Algorithm::parse(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
    };
    let (cnonce, nc) = match &qop {
        None => (None, None),
        Some(q) => {
            if !q.eq_ignore_ascii_case("auth") {
                return Err(DigestError::UnsupportedQop(q.clone()));
            }
            let cnonce = cnonce.ok_or(DigestError::MissingParameter("cnonce"))?;
            let nc = nc.ok_or(DigestError::MissingParameter("nc"))?;
            if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DigestError::InvalidNonceCount(nc));
            }
            (Some(cnonce), Some(nc))
        }
    };

    Ok(DigestCredentials {
        username,
        realm,
        nonce,
        uri,
        response,
        algorithm,
        cnonce,
        nc,
        qop,
        opaque,
    })
}

/// RFC 3261 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// Lenient unquoted value: visible ASCII except `,`, `"` and `\`
/// (some clients send e.g. an unquoted URI).
fn is_unquoted_value_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, ',' | '"' | '\\')
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn bump(&mut self, c: char) {
        self.pos += c.len_utf8();
    }

    fn malformed(&self, reason: &'static str) -> DigestError {
        DigestError::Malformed {
            pos: self.pos,
            reason,
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c| !f(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    /// Skips linear whitespace (`SP`/`HT`, and line folds `CRLF 1*WSP`);
    /// returns the number of bytes skipped.
    fn skip_lws(&mut self) -> usize {
        let start = self.pos;
        loop {
            let rest = self.rest().as_bytes();
            let fold = if rest.starts_with(b"\r\n") {
                2
            } else if rest.starts_with(b"\n") {
                1
            } else {
                0
            };
            match rest.get(fold) {
                Some(b' ' | b'\t') => self.pos += fold + 1,
                _ => break,
            }
        }
        self.pos - start
    }

    /// Parses a quoted-string starting at the opening quote; returns the
    /// unescaped contents. CR/LF are only allowed as part of a line fold.
    fn quoted_string(&mut self) -> Result<String, DigestError> {
        let open = self.pos;
        self.bump('"');
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                self.pos = open;
                return Err(self.malformed("unterminated quoted-string"));
            };
            match c {
                '"' => {
                    self.bump(c);
                    return Ok(out);
                }
                '\\' => {
                    self.bump(c);
                    match self.peek() {
                        Some(e) if e != '\r' && e != '\n' => {
                            self.bump(e);
                            out.push(e);
                        }
                        _ => return Err(self.malformed("invalid escape in quoted-string")),
                    }
                }
                '\r' | '\n' => {
                    // Unfold: drop the line break, keep the whitespace after it.
                    let rest = self.rest().as_bytes();
                    let brk = if rest.starts_with(b"\r\n") { 2 } else { 1 };
                    if !matches!(rest.get(brk), Some(b' ' | b'\t')) {
                        return Err(self.malformed("line break in quoted-string"));
                    }
                    self.pos += brk;
                }
                _ => {
                    self.bump(c);
                    out.push(c);
                }
            }
        }
    }
}

/// Writes `s` as a quoted-string body: `"` and `\` are escaped, control
/// characters other than HTAB (which cannot appear safely) are dropped.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_ascii_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Result of [`NonceIssuer::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NonceCheck {
    /// Issued by us, untampered, within its lifetime.
    Valid,
    /// Issued by us but older than the TTL: re-challenge with `stale=true`.
    Stale,
    /// Not ours, tampered, malformed, or stamped too far in the future.
    Invalid,
}

/// Issues and checks stateless nonces of the form
/// `hex(ts, 16 digits) "." hex(8 random bytes) "." hex(mac[..16])` with
/// `mac = SHA-256(secret || ts_be_u64 || random)`. Only lowercase hex and
/// `.` appear, so the nonce is safe inside a quoted-string.
///
/// Nonces are not single-use: replay protection within the TTL relies on
/// the caller (e.g. nonce-count tracking) if it is needed.
#[derive(Clone)]
pub struct NonceIssuer {
    secret: [u8; 32],
    ttl: Duration,
}

impl fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl NonceIssuer {
    /// Issuer with a fresh random secret (nonces die with the process).
    pub fn new(ttl: Duration) -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret[..]);
        Self::with_secret(secret, ttl)
    }

    /// Issuer with a fixed secret (tests, or sharing nonces across nodes).
    pub fn with_secret(secret: [u8; 32], ttl: Duration) -> Self {
        NonceIssuer { secret, ttl }
    }

    /// Nonce lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a nonce stamped with `now_unix_secs`.
    pub fn issue(&self, now_unix_secs: u64) -> String {
        self.issue_bound(now_unix_secs, &[])
    }

    /// Issues a nonce that only [`check_bound`](Self::check_bound) with the
    /// same `bound` bytes (e.g. the address it was sent to) accepts.
    pub fn issue_bound(&self, now_unix_secs: u64, bound: &[u8]) -> String {
        let mut random = [0u8; 8];
        rand::fill(&mut random[..]);
        self.issue_with(now_unix_secs, random, bound)
    }

    fn issue_with(&self, ts: u64, random: [u8; 8], bound: &[u8]) -> String {
        let mac = self.mac(ts, &random, bound);
        format!(
            "{:016x}.{}.{}",
            ts,
            hex::encode(random),
            hex::encode(&mac[..16])
        )
    }

    fn mac(&self, ts: u64, random: &[u8; 8], bound: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(ts.to_be_bytes());
        h.update(random);
        h.update(bound);
        h.finalize().into()
    }

    /// Checks a nonce previously returned by [`issue`](Self::issue).
    pub fn check(&self, nonce: &str, now_unix_secs: u64) -> NonceCheck {
        self.check_bound(nonce, now_unix_secs, &[])
    }

    /// Checks a nonce from [`issue_bound`](Self::issue_bound): one issued
    /// with other `bound` bytes is [`NonceCheck::Invalid`].
    pub fn check_bound(&self, nonce: &str, now_unix_secs: u64, bound: &[u8]) -> NonceCheck {
        let Some((ts, random, mac)) = split_nonce(nonce) else {
            return NonceCheck::Invalid;
        };
        let expected = self.mac(ts, &random, bound);
        if !ct_eq(&expected[..16], &mac) {
            return NonceCheck::Invalid;
        }
        if ts > now_unix_secs.saturating_add(MAX_FUTURE_SKEW_SECS) {
            return NonceCheck::Invalid;
        }
        if now_unix_secs.saturating_sub(ts) > self.ttl.as_secs() {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

/// Splits a canonical nonce (lowercase hex only) into its parts.
fn split_nonce(nonce: &str) -> Option<(u64, [u8; 8], [u8; 16])> {
    let mut parts = nonce.split('.');
    let (ts, random, mac) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ts.len() != 16 || random.len() != 16 || mac.len() != 32 {
        return None;
    }
    let canonical = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !(canonical(ts) && canonical(random) && canonical(mac)) {
        return None;
    }
    let ts = u64::from_str_radix(ts, 16).ok()?;
    let mut r = [0u8; 8];
    hex::decode_to_slice(random, &mut r).ok()?;
    let mut m = [0u8; 16];
    hex::decode_to_slice(mac, &mut m).ok()?;
    Some((ts, r, m))
}

/// Constant-time equality (the length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// One challenge header value (for `WWW-Authenticate` / `Proxy-Authenticate`):
/// `Digest realm="…", nonce="…", opaque="…", algorithm=…, qop="auth"` plus
/// `, stale=true` when `stale`. `opaque` is omitted when empty. Values are
/// escaped as quoted-strings (control characters other than HTAB dropped).
pub fn challenge(
    realm: &str,
    nonce: &str,
    opaque: &str,
    algorithm: Algorithm,
    stale: bool,
) -> String {
    let mut out = String::with_capacity(96 + realm.len() + nonce.len() + opaque.len());
    out.push_str("Digest realm=");
    push_quoted(&mut out, realm);
    out.push_str(", nonce=");
    push_quoted(&mut out, nonce);
    if !opaque.is_empty() {
        out.push_str(", opaque=");
        push_quoted(&mut out, opaque);
    }
    out.push_str(", algorithm=");
    out.push_str(algorithm.name());
    out.push_str(", qop=\"auth\"");
    if stale {
        out.push_str(", stale=true");
    }
    out
}

/// One challenge header value per algorithm, in the order given (RFC 8760:
/// list the preferred, e.g. SHA-256, first).
pub fn challenges(
    realm: &str,
    nonce: &str,
    opaque: &str,
    algorithms: &[Algorithm],
    stale: bool,
) -> Vec<String> {
    algorithms
        .iter()
        .map(|&a| challenge(realm, nonce, opaque, a, stale))
        .collect()
}

/// `HA1 = H(username:realm:password)`, lowercase hex. Store this instead of
/// the plaintext password if desired (one per algorithm and realm).
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash_joined(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// Expected `response` given a precomputed [`ha1`].
pub fn expected_response_from_ha1(creds: &DigestCredentials, method: &str, ha1: &str) -> String {
    let alg = creds.algorithm;
    let ha2 = alg.hash_joined(&[method.as_bytes(), creds.uri.as_bytes()]);
    match &creds.qop {
        Some(qop) => alg.hash_joined(&[
            ha1.as_bytes(),
            creds.nonce.as_bytes(),
            creds.nc.as_deref().unwrap_or("").as_bytes(),
            creds.cnonce.as_deref().unwrap_or("").as_bytes(),
            qop.as_bytes(),
            ha2.as_bytes(),
        ]),
        None => alg.hash_joined(&[ha1.as_bytes(), creds.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// Expected `response` for the credentials and the request method, given
/// the plaintext password.
pub fn expected_response(creds: &DigestCredentials, method: &str, password: &str) -> String {
    let ha1 = ha1(creds.algorithm, &creds.username, &creds.realm, password);
    expected_response_from_ha1(creds, method, &ha1)
}

/// True when `creds.response` matches (case-insensitive hex, constant time).
pub fn verify(creds: &DigestCredentials, method: &str, password: &str) -> bool {
    response_matches(creds, &expected_response(creds, method, password))
}

/// Like [`verify`] with a precomputed [`ha1`] (lowercase hex).
pub fn verify_ha1(creds: &DigestCredentials, method: &str, ha1: &str) -> bool {
    response_matches(creds, &expected_response_from_ha1(creds, method, ha1))
}

fn response_matches(creds: &DigestCredentials, expected: &str) -> bool {
    let got = creds.response.to_ascii_lowercase();
    ct_eq(got.as_bytes(), expected.as_bytes())
}

/// Client side: an `Authorization` / `Proxy-Authorization` value with
/// `qop=auth` for the given challenge parameters.
#[allow(clippy::too_many_arguments)]
pub fn authorization_value(
    username: &str,
    password: &str,
    realm: &str,
    nonce: &str,
    uri: &str,
    method: &str,
    algorithm: Algorithm,
    cnonce: &str,
    nc: u32,
    opaque: Option<&str>,
) -> String {
    let nc = format!("{nc:08x}");
    let creds = DigestCredentials {
        username: username.to_owned(),
        realm: realm.to_owned(),
        nonce: nonce.to_owned(),
        uri: uri.to_owned(),
        response: String::new(),
        algorithm,
        cnonce: Some(cnonce.to_owned()),
        nc: Some(nc.clone()),
        qop: Some("auth".to_owned()),
        opaque: None,
    };
    let response = expected_response(&creds, method, password);
    let mut out = String::with_capacity(256);
    out.push_str("Digest username=");
    push_quoted(&mut out, username);
    out.push_str(", realm=");
    push_quoted(&mut out, realm);
    out.push_str(", nonce=");
    push_quoted(&mut out, nonce);
    out.push_str(", uri=");
    push_quoted(&mut out, uri);
    out.push_str(", response=\"");
    out.push_str(&response);
    out.push_str("\", algorithm=");
    out.push_str(algorithm.name());
    out.push_str(", cnonce=");
    push_quoted(&mut out, cnonce);
    if let Some(o) = opaque {
        out.push_str(", opaque=");
        push_quoted(&mut out, o);
    }
    out.push_str(", qop=auth, nc=");
    out.push_str(&nc);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn rfc2617_creds() -> DigestCredentials {
        parse_credentials(
            r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#
                .replace('\n', "\r\n")
                .as_str(),
        )
        .unwrap()
    }

    #[test]
    fn rfc2617_example() {
        let c = rfc2617_creds();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(
            c.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        assert_eq!(
            expected_response(&c, "GET", "Circle Of Life"),
            "6629fae49393a05397450978507c4ef1"
        );
        assert!(verify(&c, "GET", "Circle Of Life"));
        assert!(!verify(&c, "GET", "Circle of Life"));
        assert!(!verify(&c, "POST", "Circle Of Life"));
        let upper = DigestCredentials {
            response: c.response.to_ascii_uppercase(),
            ..c.clone()
        };
        assert!(verify(&upper, "GET", "Circle Of Life"));
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(verify_ha1(&c, "GET", &h));
    }

    fn rfc7616_creds(algorithm: Algorithm) -> DigestCredentials {
        DigestCredentials {
            username: "Mufasa".into(),
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            uri: "/dir/index.html".into(),
            response: String::new(),
            algorithm,
            cnonce: Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".into()),
            nc: Some("00000001".into()),
            qop: Some("auth".into()),
            opaque: Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS".into()),
        }
    }

    #[test]
    fn rfc7616_examples() {
        let c = rfc7616_creds(Algorithm::Sha256);
        assert_eq!(
            expected_response(&c, "GET", "Circle of Life"),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let c = rfc7616_creds(Algorithm::Md5);
        assert_eq!(
            expected_response(&c, "GET", "Circle of Life"),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn rfc7616_header_parses() {
        let v = r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        let c = parse_credentials(v).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!(verify(&c, "GET", "Circle of Life"));
    }

    #[test]
    fn rfc2069_round_trip_without_qop() {
        let mut c = DigestCredentials {
            username: "alice".into(),
            realm: "hotline".into(),
            nonce: "abc".into(),
            uri: "sip:hotline.example".into(),
            response: String::new(),
            algorithm: Algorithm::Md5,
            cnonce: None,
            nc: None,
            qop: None,
            opaque: None,
        };
        let ha1 = ha1(Algorithm::Md5, "alice", "hotline", "secret");
        let ha2 = Algorithm::Md5.hash_joined(&[b"REGISTER", b"sip:hotline.example"]);
        let want = Algorithm::Md5.hash_joined(&[ha1.as_bytes(), b"abc", ha2.as_bytes()]);
        assert_eq!(expected_response(&c, "REGISTER", "secret"), want);
        c.response = want.clone();
        let header = format!(
            r#"Digest username="alice",realm="hotline",nonce="abc",uri="sip:hotline.example",response="{want}",cnonce="ignored",nc=zz"#
        );
        let parsed = parse_credentials(&header).unwrap();
        assert_eq!(parsed.cnonce, None);
        assert_eq!(parsed.nc, None);
        assert_eq!(parsed, c);
        assert!(verify(&parsed, "REGISTER", "secret"));
        assert!(!verify(&parsed, "REGISTER", "wrong"));
        assert!(!verify(&parsed, "INVITE", "secret"));
    }

    #[test]
    fn client_helper_round_trip() {
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let v = authorization_value(
                "bob \"the\" agent",
                "pw",
                "hot\\line",
                "n1",
                "sip:x@y",
                "INVITE",
                alg,
                "c,1",
                0x1a,
                Some("op"),
            );
            let c = parse_credentials(&v).unwrap();
            assert_eq!(c.username, "bob \"the\" agent");
            assert_eq!(c.realm, "hot\\line");
            assert_eq!(c.cnonce.as_deref(), Some("c,1"));
            assert_eq!(c.nc.as_deref(), Some("0000001a"));
            assert_eq!(c.opaque.as_deref(), Some("op"));
            assert_eq!(c.algorithm, alg);
            assert!(verify(&c, "INVITE", "pw"));
            assert!(!verify(&c, "INVITE", "pw2"));
            assert!(!verify(&c, "BYE", "pw"));
        }
    }

    #[test]
    fn parsing_odd_syntax() {
        let v = "  dIgEsT\t USERNAME = \"a,b\\\"c\\\\d\" ,realm=\"r\"\r\n  ,, nonce\t=\"n\",uri=sip:u@h;transport=tcp,  response=\"ABCDEF\",algorithm=md5, Opaque=\"\",qop=\"auth\",nc=0000000A,cnonce=\"x y\",ext=\"1\",";
        let c = parse_credentials(v).unwrap();
        assert_eq!(c.username, "a,b\"c\\d");
        assert_eq!(c.realm, "r");
        assert_eq!(c.nonce, "n");
        assert_eq!(c.uri, "sip:u@h;transport=tcp");
        assert_eq!(c.response, "ABCDEF");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.opaque.as_deref(), Some(""));
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.nc.as_deref(), Some("0000000A"));
        assert_eq!(c.cnonce.as_deref(), Some("x y"));

        // Folded whitespace inside a quoted string and non-ASCII content.
        let c = parse_credentials(
            "Digest username=\"jos\u{e9}\r\n de\",realm=\"\u{65e5}\",nonce=n,uri=u,response=r",
        )
        .unwrap();
        assert_eq!(c.username, "jos\u{e9} de");
        assert_eq!(c.realm, "\u{65e5}");
    }

    #[test]
    fn parsing_errors() {
        let full = [
            ("username", "\"u\""),
            ("realm", "\"r\""),
            ("nonce", "\"n\""),
            ("uri", "\"sip:a\""),
            ("response", "\"0\""),
        ];
        for skip in 0..full.len() {
            let v = full
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != skip)
                .map(|(_, (k, v))| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            assert_eq!(
                parse_credentials(&format!("Digest {v}")),
                Err(DigestError::MissingParameter(full[skip].0))
            );
        }
        let base = r#"Digest username="u", realm="r", nonce="n", uri="sip:a", response="0""#;
        assert!(parse_credentials(base).is_ok());
        let with = |extra: &str| parse_credentials(&format!("{base}, {extra}"));
        for alg in [
            "SHA-512-256",
            "AKAv1-MD5",
            "MD5-sess",
            "SHA-256-sess",
            "SHA256",
        ] {
            assert_eq!(
                with(&format!("algorithm={alg}")),
                Err(DigestError::UnsupportedAlgorithm(alg.into()))
            );
        }
        assert_eq!(
            with("algorithm=\"sha-256\"").unwrap().algorithm,
            Algorithm::Sha256
        );
        assert_eq!(
            with("qop=auth-int, nc=00000001, cnonce=\"c\""),
            Err(DigestError::UnsupportedQop("auth-int".into()))
        );
        assert_eq!(
            with("qop=auth, nc=00000001"),
            Err(DigestError::MissingParameter("cnonce"))
        );
        assert_eq!(
            with("qop=auth, cnonce=\"c\""),
            Err(DigestError::MissingParameter("nc"))
        );
        for nc in ["1", "0000001", "000000001", "0000000g", "\"\""] {
            assert!(matches!(
                with(&format!("qop=auth, cnonce=\"c\", nc={nc}")),
                Err(DigestError::InvalidNonceCount(_))
            ));
        }
        assert_eq!(
            with("Realm=\"x\""),
            Err(DigestError::DuplicateParameter("realm".into()))
        );
        assert_eq!(
            with("foo=1, FOO=2"),
            Err(DigestError::DuplicateParameter("foo".into()))
        );
        assert!(matches!(
            parse_credentials("Basic dXNlcjpwYXNz"),
            Err(DigestError::UnsupportedScheme(s)) if s == "Basic"
        ));
        for bad in [
            "",
            "   ",
            "Digest username=\"unterminated",
            "Digest username",
            "Digest username=",
            "Digest =x",
            "Digest username=\"a\" realm=\"b\"",
            "Digestusername=\"a\"",
            "Digest, username=\"a\"",
            "Digest username=\"a\r\nb\"",
            "Digest username=\"a\\",
        ] {
            assert!(parse_credentials(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn parser_never_panics() {
        let valid = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        // Every prefix.
        for (i, _) in valid.char_indices() {
            let _ = parse_credentials(&valid[..i]);
        }
        let alphabet: Vec<char> = "Digest =,\"\\\r\n\t aZ09-.:@/é日\u{0}\u{7f}\u{1F600}qopncAUTH"
            .chars()
            .collect();
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for _ in 0..20_000 {
            // Random strings, and random mutations of a valid value.
            let s: String = if rng.random_bool(0.5) {
                let len = rng.random_range(0..64);
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            } else {
                let mut chars: Vec<char> = valid.chars().collect();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..chars.len());
                    match rng.random_range(0..3) {
                        0 => {
                            chars.remove(at);
                        }
                        1 => chars.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                        _ => chars[at] = alphabet[rng.random_range(0..alphabet.len())],
                    }
                }
                chars.into_iter().collect()
            };
            if let Ok(c) = parse_credentials(&s) {
                let _ = verify(&c, "GET", "x");
            }
        }
        // Very long inputs.
        let long = format!("Digest username=\"{}\"", "\u{e9}\\\"".repeat(200_000));
        assert_eq!(
            parse_credentials(&long),
            Err(DigestError::MissingParameter("realm"))
        );
        let many = format!("Digest {}", "a=b,".repeat(50_000));
        assert!(parse_credentials(&many).is_err());
        let many_distinct: String = (0..50_000).map(|i| format!("p{i}=1,")).collect();
        let _ = parse_credentials(&format!("Digest {many_distinct}"));
        let _ = parse_credentials(&"\"".repeat(100_000));
        let _ = parse_credentials(&format!("Digest {}", " \r\n".repeat(100_000)));
    }

    #[test]
    fn nonce_lifecycle() {
        let ttl = Duration::from_secs(300);
        let issuer = NonceIssuer::with_secret([7; 32], ttl);
        let now = 1_700_000_000;
        let n = issuer.issue(now);
        assert!(
            n.bytes()
                .all(|b| b == b'.' || matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert_ne!(n, issuer.issue(now), "nonces must be unique");
        assert_eq!(issuer.check(&n, now), NonceCheck::Valid);
        assert_eq!(issuer.check(&n, now + 300), NonceCheck::Valid);
        assert_eq!(issuer.check(&n, now + 301), NonceCheck::Stale);
        assert_eq!(issuer.check(&n, now - 5), NonceCheck::Valid);
        assert_eq!(issuer.check(&n, now - 6), NonceCheck::Invalid);
        // Future timestamp with a correct MAC.
        let future = issuer.issue(now + 3600);
        assert_eq!(issuer.check(&future, now), NonceCheck::Invalid);
        assert_eq!(
            issuer.check(&issuer.issue(u64::MAX), 0),
            NonceCheck::Invalid
        );
        // Tampering: flip every character in turn.
        for i in 0..n.len() {
            let mut b = n.clone().into_bytes();
            b[i] = match b[i] {
                b'.' => b'0',
                b'0' => b'1',
                _ => b'0',
            };
            let t = String::from_utf8(b).unwrap();
            assert_eq!(issuer.check(&t, now), NonceCheck::Invalid, "{t}");
        }
        assert_eq!(issuer.check(&n.to_uppercase(), now), NonceCheck::Invalid);
        // Another secret.
        let other = NonceIssuer::with_secret([8; 32], ttl);
        assert_eq!(other.check(&n, now), NonceCheck::Invalid);
        // Garbage.
        for g in [
            "",
            ".",
            "..",
            "a.b.c",
            "日本",
            &format!("{n}."),
            &n[1..],
            &"f".repeat(66),
        ] {
            assert_eq!(issuer.check(g, now), NonceCheck::Invalid, "{g:?}");
        }
        // Random secret issuers work and differ.
        let r1 = NonceIssuer::new(ttl);
        let r2 = NonceIssuer::new(ttl);
        let n1 = r1.issue(now);
        assert_eq!(r1.check(&n1, now), NonceCheck::Valid);
        assert_eq!(r2.check(&n1, now), NonceCheck::Invalid);
        assert!(!format!("{r1:?}").contains("secret: ["));
    }

    /// Parses a challenge value with the credentials parser's tokenizer by
    /// reusing its grammar (challenge params are a subset of the same syntax).
    fn parse_challenge(v: &str) -> Vec<(String, String)> {
        let rest = v.strip_prefix("Digest ").unwrap();
        let mut cur = Cursor::new(rest);
        let mut out = Vec::new();
        loop {
            cur.skip_lws();
            let name = cur.take_while(is_token_char).to_owned();
            assert_eq!(cur.peek(), Some('='));
            cur.bump('=');
            let value = if cur.peek() == Some('"') {
                cur.quoted_string().unwrap()
            } else {
                cur.take_while(is_unquoted_value_char).to_owned()
            };
            out.push((name, value));
            match cur.peek() {
                None => return out,
                Some(',') => cur.bump(','),
                Some(c) => panic!("unexpected {c:?}"),
            }
        }
    }

    #[test]
    fn challenge_round_trip() {
        let issuer = NonceIssuer::with_secret([1; 32], Duration::from_secs(60));
        let nonce = issuer.issue(1000);
        let realm = "hot\"line\\ \r\ncorp";
        let v = challenge(realm, &nonce, "op", Algorithm::Sha256, false);
        assert!(!v.contains('\r') && !v.contains('\n'));
        let p = parse_challenge(&v);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("realm"), Some("hot\"line\\ corp"));
        assert_eq!(get("nonce"), Some(nonce.as_str()));
        assert_eq!(get("opaque"), Some("op"));
        assert_eq!(get("algorithm"), Some("SHA-256"));
        assert_eq!(get("qop"), Some("auth"));
        assert_eq!(get("stale"), None);

        let v = challenge("hotline", &nonce, "", Algorithm::Md5, true);
        assert_eq!(
            v,
            format!(
                r#"Digest realm="hotline", nonce="{nonce}", algorithm=MD5, qop="auth", stale=true"#
            )
        );
        let p = parse_challenge(&v);
        assert_eq!(p.len(), 5);
        assert!(p.contains(&("stale".into(), "true".into())));

        let all = challenges(
            "hotline",
            &nonce,
            "o",
            &[Algorithm::Sha256, Algorithm::Md5],
            false,
        );
        assert_eq!(all.len(), 2);
        assert!(all[0].contains("algorithm=SHA-256"));
        assert!(all[1].contains("algorithm=MD5"));

        // Full exchange: challenge -> client answer -> server verify.
        let p = parse_challenge(&all[0]);
        let get = |k: &str| {
            p.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let alg = Algorithm::parse(&get("algorithm")).unwrap();
        let auth = authorization_value(
            "1001",
            "pw",
            &get("realm"),
            &get("nonce"),
            "sip:hotline.example",
            "REGISTER",
            alg,
            "cn",
            1,
            Some(&get("opaque")),
        );
        let c = parse_credentials(&auth).unwrap();
        assert_eq!(issuer.check(&c.nonce, 1010), NonceCheck::Valid);
        assert!(verify(&c, "REGISTER", "pw"));
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(Algorithm::parse("md5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse("Sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse("SHA256"), None);
        assert_eq!(Algorithm::parse("MD5-sess"), None);
        assert_eq!(Algorithm::Sha256.name(), "SHA-256");
        assert_eq!(Algorithm::Md5.to_string(), "MD5");
    }
}
