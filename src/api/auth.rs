//! Bearer tokens: the SHA-256 of the presented token is looked up among the
//! configured ones (compared in constant time), giving the caller's role and
//! what it may see. Failed attempts are throttled per source address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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
}
