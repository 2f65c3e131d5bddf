//! `[trunks.NAME]`: the PBXs and carriers allowed to send calls, how each is
//! recognised (source networks, digest credentials), and hotline's own calls
//! over it (the outbound dial plan and its ceilings).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::{Problems, Section};
use crate::sip::dialplan::{DialPlan, DialPlanError, OutboundLimits};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrunk {
    pub sources: Vec<String>,
    pub username: String,
    pub password: String,
    pub numbers: Vec<String>,
    pub outbound: String,
    /// The outbound dial plan and ceilings (see `crate::sip::dialplan`).
    pub country_code: String,
    pub national_prefix: String,
    pub international_prefix: String,
    pub outbound_min_digits: usize,
    pub outbound_max_digits: usize,
    pub outbound_allow: Vec<String>,
    pub max_outbound_calls: u32,
    pub max_outbound_per_hour: u32,
    /// Calls from this trunk up at once; 0: only `limits.max_calls`.
    pub max_calls: usize,
    /// New INVITEs a second from each of this trunk's `sources`; 0: the
    /// per-source `limits.invite_rate` applies.
    pub invite_rate: f64,
}

impl Default for RawTrunk {
    fn default() -> Self {
        let limits = OutboundLimits::default();
        Self {
            sources: Vec::new(),
            username: String::new(),
            password: String::new(),
            numbers: Vec::new(),
            outbound: String::new(),
            country_code: "86".into(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
            outbound_min_digits: 8,
            outbound_max_digits: crate::sip::dialplan::E164_MAX_DIGITS,
            outbound_allow: crate::sip::dialplan::DEFAULT_ALLOW
                .iter()
                .map(|p| p.to_string())
                .collect(),
            max_outbound_calls: limits.max_concurrent,
            max_outbound_per_hour: limits.max_per_hour,
            max_calls: 0,
            invite_rate: 0.0,
        }
    }
}

/// A PBX or carrier allowed to send calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    pub sources: Vec<IpNet>,
    pub credentials: Option<TrunkCredentials>,
    /// Numbers this trunk may dial; empty means every hotline number.
    pub numbers: Vec<String>,
    /// Where hotline sends its own calls over this trunk (callbacks); none:
    /// callers from this trunk are not offered a callback.
    pub outbound: Option<SocketAddr>,
    /// Which numbers hotline may dial over this trunk.
    pub dialplan: DialPlan,
    /// Ceilings on hotline's own calls over this trunk.
    pub outbound_limits: OutboundLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkCredentials {
    pub username: String,
    pub password: String,
}

impl Section for BTreeMap<String, RawTrunk> {
    type Checked = Vec<Trunk>;

    fn check(&self, problems: &mut Problems) -> Vec<Trunk> {
        self.iter()
            .map(|(name, raw)| raw.check(name, problems))
            .collect()
    }
}

impl RawTrunk {
    fn check(&self, name: &str, problems: &mut Problems) -> Trunk {
        let key = format!("trunks.{name}");
        let mut sources = Vec::new();
        for (i, cidr) in self.sources.iter().enumerate() {
            match parse_cidr(cidr) {
                Some(net) => sources.push(net),
                None => problems.add(
                    format!("{key}.sources[{i}]"),
                    format!(
                        "`{cidr}` is not an address or CIDR such as \"192.0.2.0/24\" or \"2001:db8::/32\""
                    ),
                ),
            }
        }
        let credentials = match (self.username.is_empty(), self.password.is_empty()) {
            (true, true) => None,
            (false, false) => Some(TrunkCredentials {
                username: self.username.clone(),
                password: self.password.clone(),
            }),
            (true, false) => {
                problems.add(
                    format!("{key}.username"),
                    "a trunk with a password needs a username",
                );
                None
            }
            (false, true) => {
                problems.add(
                    format!("{key}.password"),
                    "a trunk with a username needs a password",
                );
                None
            }
        };
        if self.sources.is_empty() && self.username.is_empty() && self.password.is_empty() {
            problems.add(
                key.clone(),
                "admits nobody: give it `sources` (CIDRs) or `username`/`password`",
            );
        }
        let outbound = match self.outbound.trim() {
            "" => None,
            text => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    problems.add(
                        format!("{key}.outbound"),
                        format!("`{text}` is not an address and port such as \"192.0.2.7:5060\""),
                    );
                    None
                }
            },
        };
        let dialplan = match DialPlan::new(
            self.country_code.trim(),
            self.national_prefix.trim(),
            self.international_prefix.trim(),
            self.outbound_min_digits,
            self.outbound_max_digits,
            &self.outbound_allow,
        ) {
            Ok(plan) => plan,
            Err(e) => {
                let field = match e {
                    DialPlanError::CountryCode(_) => "country_code",
                    DialPlanError::NationalPrefix(_) => "national_prefix",
                    DialPlanError::InternationalPrefix(_) => "international_prefix",
                    DialPlanError::Pattern { .. } => "outbound_allow",
                    DialPlanError::Lengths { .. } => "outbound_min_digits",
                };
                problems.add(format!("{key}.{field}"), e.to_string());
                DialPlan::default()
            }
        };
        for (field, value) in [
            ("max_outbound_calls", self.max_outbound_calls),
            ("max_outbound_per_hour", self.max_outbound_per_hour),
        ] {
            if value == 0 {
                problems.add(
                    format!("{key}.{field}"),
                    "must be at least 1 (leave `outbound` empty for no outbound calls)",
                );
            }
        }
        if !self.invite_rate.is_finite() || self.invite_rate < 0.0 {
            problems.add(
                format!("{key}.invite_rate"),
                "must be a number of INVITEs a second, 0 or more (0: limits.invite_rate applies)",
            );
        }
        Trunk {
            name: name.to_string(),
            sources,
            credentials,
            numbers: self.numbers.clone(),
            outbound,
            dialplan,
            outbound_limits: OutboundLimits {
                max_concurrent: self.max_outbound_calls,
                max_per_hour: self.max_outbound_per_hour,
            },
        }
    }
}

/// Accepts "192.0.2.0/24", "2001:db8::/32" or a bare address (a /32 or /128).
fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn trunk_with_half_credentials_is_refused() {
        let err = load("[trunks.t]\nusername = \"u\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["trunks.t.password".to_string()]);
    }

    #[test]
    fn the_trunk_dial_plan_defaults_to_national_numbers_and_bad_values_name_their_key() {
        let s = load("[trunks.t]\nsources = [\"192.0.2.0/24\"]\noutbound = \"192.0.2.1:5060\"\n")
            .unwrap();
        let t = s.trunks.iter().find(|t| t.name == "t").unwrap();
        assert_eq!(t.dialplan, crate::sip::dialplan::DialPlan::default());
        assert_eq!(t.dialplan.check("13800138000"), Ok("8613800138000".into()));
        assert!(t.dialplan.check("+441632960000").is_err());
        assert_eq!(
            t.outbound_limits,
            crate::sip::dialplan::OutboundLimits::default()
        );
        let s = load(
            "[trunks.t]\nsources = [\"192.0.2.0/24\"]\ncountry_code = \"44\"\noutbound_allow = [\"447[0-9]{9}\"]\nmax_outbound_calls = 2\nmax_outbound_per_hour = 5\n",
        )
        .unwrap();
        let t = s.trunks.iter().find(|t| t.name == "t").unwrap();
        assert_eq!(t.dialplan.check("07700900123"), Ok("447700900123".into()));
        assert_eq!(t.outbound_limits.max_concurrent, 2);
        assert_eq!(t.outbound_limits.max_per_hour, 5);
        for (text, key) in [
            ("country_code = \"+86\"", "trunks.t.country_code"),
            ("national_prefix = \"o\"", "trunks.t.national_prefix"),
            (
                "international_prefix = \"+\"",
                "trunks.t.international_prefix",
            ),
            ("outbound_allow = [\"(\"]", "trunks.t.outbound_allow"),
            ("outbound_max_digits = 16", "trunks.t.outbound_min_digits"),
            ("max_outbound_calls = 0", "trunks.t.max_outbound_calls"),
            (
                "max_outbound_per_hour = 0",
                "trunks.t.max_outbound_per_hour",
            ),
        ] {
            let err = load(&format!(
                "[trunks.t]\nsources = [\"192.0.2.0/24\"]\n{text}\n"
            ))
            .unwrap_err();
            assert_eq!(keys(err), vec![key.to_string()], "{text}");
        }
    }
}
