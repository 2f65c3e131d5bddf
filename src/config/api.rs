//! `[api]`: the CTI API's bearer tokens (role, and the agent, queues and
//! phones each is bound to), the not-ready reasons agents may choose, and the
//! API's memory bounds.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Problems, Section};

/// `[api]`: the CTI API's tokens and not-ready reasons.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub not_ready_reasons: Vec<String>,
    pub tokens: BTreeMap<String, RawApiToken>,
    pub max_failed_sources: usize,
    pub journal_max_bytes: usize,
    pub journal_entry_max_bytes: usize,
}

impl Default for RawApi {
    fn default() -> Self {
        let limits = ApiLimits::default();
        Self {
            not_ready_reasons: ["break", "lunch", "training", "meeting", "after-call-work"]
                .map(String::from)
                .to_vec(),
            tokens: BTreeMap::new(),
            max_failed_sources: limits.max_failed_sources,
            journal_max_bytes: limits.journal_max_bytes,
            journal_entry_max_bytes: limits.journal_entry_max_bytes,
        }
    }
}

/// The API's memory bounds (`api.max_failed_sources`, `api.journal_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Source addresses the failed-authentication table holds at most.
    pub max_failed_sources: usize,
    /// Bytes of event JSON the live-event journal holds at most.
    pub journal_max_bytes: usize,
    /// Largest journal entry; a larger event is kept with its long texts
    /// cut short.
    pub journal_entry_max_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_failed_sources: 10_000,
            journal_max_bytes: 16 * 1024 * 1024,
            journal_entry_max_bytes: 8 * 1024,
        }
    }
}

/// `[api.tokens.NAME]`: one bearer token, stored as its SHA-256.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApiToken {
    pub role: String,
    pub agent: String,
    pub queues: Vec<String>,
    pub sha256: String,
    /// Supervisor tokens: the phone accounts the API may ring for them.
    pub phones: Vec<String>,
}

/// Who a CTI token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiRole {
    /// One agent: itself and its own calls.
    Agent,
    /// The agents and calls of some queues.
    Supervisor,
    /// Everything.
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Agent => "agent",
            ApiRole::Supervisor => "supervisor",
            ApiRole::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: ApiRole,
    /// The agent an `agent` token is bound to.
    pub agent: Option<String>,
    /// The queues a `supervisor` token supervises.
    pub queues: Vec<String>,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// The phones of a `supervisor` token: the only ones the API rings to
    /// monitor a call for it.
    pub phones: Vec<String>,
}

/// `[api]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiSettings {
    pub not_ready_reasons: Vec<String>,
    pub tokens: Vec<ApiToken>,
    pub limits: ApiLimits,
}

impl ApiRole {
    /// The role named in the config, if the name is one.
    pub(super) fn from_config(name: &str) -> Option<ApiRole> {
        match name {
            "agent" => Some(ApiRole::Agent),
            "supervisor" => Some(ApiRole::Supervisor),
            "admin" => Some(ApiRole::Admin),
            _ => None,
        }
    }
}

impl Section for RawApi {
    type Checked = ApiSettings;

    /// Roles, what each role's token may be bound to, the hashes and the
    /// bounds; whether the agents, queues and phones named exist is checked
    /// in `cross`.
    fn check(&self, problems: &mut Problems) -> ApiSettings {
        for (i, reason) in self.not_ready_reasons.iter().enumerate() {
            if reason.trim().is_empty() || reason == "no-answer" || reason == "cooldown" {
                problems.add(
                    format!("api.not_ready_reasons[{i}]"),
                    format!("`{reason}` cannot be chosen: empty, or kept for the router's own use"),
                );
            }
        }
        let tokens = self
            .tokens
            .iter()
            .filter_map(|(name, raw)| raw.check(name, problems))
            .collect();
        if self.max_failed_sources == 0 {
            problems.add("api.max_failed_sources", "must be at least 1");
        }
        if self.journal_entry_max_bytes < 512 {
            problems.add(
                "api.journal_entry_max_bytes",
                format!(
                    "{} is too small: at least 512",
                    self.journal_entry_max_bytes
                ),
            );
        }
        if self.journal_max_bytes < self.journal_entry_max_bytes {
            problems.add(
                "api.journal_max_bytes",
                format!(
                    "{} is smaller than one entry (api.journal_entry_max_bytes = {})",
                    self.journal_max_bytes, self.journal_entry_max_bytes
                ),
            );
        }
        ApiSettings {
            not_ready_reasons: self.not_ready_reasons.clone(),
            tokens,
            limits: ApiLimits {
                max_failed_sources: self.max_failed_sources,
                journal_max_bytes: self.journal_max_bytes,
                journal_entry_max_bytes: self.journal_entry_max_bytes,
            },
        }
    }
}

impl RawApiToken {
    /// The token, unless its role or hash is unusable.
    fn check(&self, name: &str, problems: &mut Problems) -> Option<ApiToken> {
        let key = format!("api.tokens.{name}");
        let Some(role) = ApiRole::from_config(&self.role) else {
            problems.add(
                format!("{key}.role"),
                format!(
                    "`{}` is not a role: expected \"agent\", \"supervisor\" or \"admin\"",
                    self.role
                ),
            );
            return None;
        };
        let agent = (!self.agent.is_empty()).then(|| self.agent.clone());
        match (role, &agent) {
            (ApiRole::Agent, None) => problems.add(
                format!("{key}.agent"),
                "an agent token names the agent it speaks for",
            ),
            (ApiRole::Supervisor | ApiRole::Admin, Some(_)) => problems.add(
                format!("{key}.agent"),
                "only agent tokens are bound to an agent",
            ),
            _ => {}
        }
        if role == ApiRole::Supervisor && self.queues.is_empty() {
            problems.add(
                format!("{key}.queues"),
                "a supervisor token names the queues it supervises",
            );
        }
        if role != ApiRole::Supervisor && !self.phones.is_empty() {
            problems.add(
                format!("{key}.phones"),
                "only supervisor tokens have phones (an admin may name any phone)",
            );
        }
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(self.sha256.trim(), &mut sha256).is_err() {
            problems.add(
                format!("{key}.sha256"),
                "must be the SHA-256 of the token, 64 hex digits (e.g. `printf %s \"$TOKEN\" | sha256sum`)",
            );
            return None;
        }
        Some(ApiToken {
            name: name.to_string(),
            role,
            agent,
            queues: self.queues.clone(),
            sha256,
            phones: self.phones.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::check_section;

    const SHA: &str = "fc08215c254a6e44742d4ed0717935f6fa3e854b7f896d7171b0c476071b3c53";

    fn token(role: &str) -> RawApiToken {
        RawApiToken {
            role: role.into(),
            sha256: SHA.into(),
            ..RawApiToken::default()
        }
    }

    #[test]
    fn each_role_binds_what_it_may_and_a_token_needs_its_hash() {
        let tokens = BTreeMap::from([
            ("admin".to_string(), token("admin")),
            (
                "agent".to_string(),
                RawApiToken {
                    agent: "1001".into(),
                    ..token("agent")
                },
            ),
            ("lost".to_string(), token("agent")),
            ("root".to_string(), token("root")),
            (
                "short".to_string(),
                RawApiToken {
                    sha256: "abc".into(),
                    ..token("admin")
                },
            ),
            (
                "sup".to_string(),
                RawApiToken {
                    agent: "1001".into(),
                    ..token("supervisor")
                },
            ),
        ]);
        let (api, keys) = check_section(&RawApi {
            tokens,
            not_ready_reasons: vec!["lunch".into(), "no-answer".into()],
            ..RawApi::default()
        });
        assert_eq!(
            keys,
            [
                "api.not_ready_reasons[1]",
                "api.tokens.lost.agent",
                "api.tokens.root.role",
                "api.tokens.short.sha256",
                "api.tokens.sup.agent",
                "api.tokens.sup.queues",
            ]
        );
        let names: Vec<&str> = api.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["admin", "agent", "lost", "sup"],
            "a token of no role or no hash is dropped"
        );
        assert_eq!(api.tokens[1].agent.as_deref(), Some("1001"));
        assert_eq!(api.tokens[0].sha256[0], 0xfc);
    }

    #[test]
    fn the_journal_holds_at_least_one_entry() {
        let (api, keys) = check_section(&RawApi::default());
        assert!(keys.is_empty(), "{keys:?}");
        assert_eq!(api.limits, ApiLimits::default());
        let (_, keys) = check_section(&RawApi {
            journal_max_bytes: 600,
            journal_entry_max_bytes: 700,
            ..RawApi::default()
        });
        assert_eq!(keys, ["api.journal_max_bytes"]);
    }
}
