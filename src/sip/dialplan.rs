//! Outbound dial plan: the one check every number hotline dials out through a
//! trunk passes (callbacks today), and the trunk's outbound call ceilings.
//!
//! A number is normalised to E.164 by the trunk's rules (country code,
//! national and international prefixes), held to length limits, and must
//! match one of the trunk's allowed patterns; anything else is refused with
//! a reason. [`OutboundGate`] counts calls in progress and calls of the last
//! hour per trunk, so a flood of callbacks cannot run up a bill.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use tokio::time::Instant;

/// The longest number E.164 allows (country code included).
pub const E164_MAX_DIGITS: usize = 15;

/// Why a number may not be dialled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DialRefusal {
    #[error("not a phone number")]
    Malformed,
    #[error("too short")]
    TooShort,
    #[error("too long")]
    TooLong,
    #[error("not an allowed destination")]
    NotAllowed,
    #[error("too many outbound calls in progress on the trunk")]
    ConcurrentLimit,
    #[error("too many outbound calls on the trunk within the hour")]
    HourlyLimit,
    #[error("the trunk takes no outbound calls")]
    NoOutbound,
}

impl DialRefusal {
    /// The `reason` label of metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            DialRefusal::Malformed => "malformed",
            DialRefusal::TooShort => "too_short",
            DialRefusal::TooLong => "too_long",
            DialRefusal::NotAllowed => "not_allowed",
            DialRefusal::ConcurrentLimit => "concurrent_limit",
            DialRefusal::HourlyLimit => "hourly_limit",
            DialRefusal::NoOutbound => "no_outbound",
        }
    }

    pub const ALL: &[DialRefusal] = &[
        DialRefusal::Malformed,
        DialRefusal::TooShort,
        DialRefusal::TooLong,
        DialRefusal::NotAllowed,
        DialRefusal::ConcurrentLimit,
        DialRefusal::HourlyLimit,
        DialRefusal::NoOutbound,
    ];
}

/// A configuration of the dial plan that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialPlanError {
    #[error("`{0}` must be 1 to 3 digits")]
    CountryCode(String),
    #[error("`{0}` must be digits (or empty)")]
    NationalPrefix(String),
    #[error("`{0}` must be digits (or empty)")]
    InternationalPrefix(String),
    #[error("`{pattern}` is not a regular expression: {message}")]
    Pattern { pattern: String, message: String },
    #[error("lengths {min}-{max} must satisfy 1 <= min <= max <= {E164_MAX_DIGITS}")]
    Lengths { min: usize, max: usize },
}

/// One trunk's dial plan.
#[derive(Debug, Clone)]
pub struct DialPlan {
    country_code: String,
    national_prefix: String,
    international_prefix: String,
    min_digits: usize,
    max_digits: usize,
    /// As written, for equality and messages.
    patterns: Vec<String>,
    /// Anchored: a pattern matches the whole E.164 number (digits, no "+").
    allow: Vec<Regex>,
}

impl PartialEq for DialPlan {
    fn eq(&self, other: &Self) -> bool {
        self.country_code == other.country_code
            && self.national_prefix == other.national_prefix
            && self.international_prefix == other.international_prefix
            && self.min_digits == other.min_digits
            && self.max_digits == other.max_digits
            && self.patterns == other.patterns
    }
}

impl Eq for DialPlan {}

/// The demo country's numbers (+86): mobiles 1[3-9]x xxxx xxxx, and fixed
/// lines of area code 10, 2x or a three-digit code, with 7 or 8 digits.
/// Premium and shared-cost ranges (400, 800, 95xxx...) and every other
/// country are left out.
pub const DEFAULT_ALLOW: &[&str] = &[
    "861[3-9][0-9]{9}",
    "86(10|2[0-9]|[3-9][1-9][0-9])[0-9]{7,8}",
];

impl Default for DialPlan {
    fn default() -> Self {
        let patterns: Vec<String> = DEFAULT_ALLOW.iter().map(|p| p.to_string()).collect();
        match DialPlan::new("86", "0", "00", 8, E164_MAX_DIGITS, &patterns) {
            Ok(plan) => plan,
            // The defaults are constants checked by the tests below.
            Err(_) => DialPlan {
                country_code: "86".into(),
                national_prefix: "0".into(),
                international_prefix: "00".into(),
                min_digits: 8,
                max_digits: E164_MAX_DIGITS,
                patterns: Vec::new(),
                allow: Vec::new(),
            },
        }
    }
}

impl DialPlan {
    pub fn new(
        country_code: &str,
        national_prefix: &str,
        international_prefix: &str,
        min_digits: usize,
        max_digits: usize,
        patterns: &[String],
    ) -> Result<DialPlan, DialPlanError> {
        let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if country_code.is_empty() || country_code.len() > 3 || !digits(country_code) {
            return Err(DialPlanError::CountryCode(country_code.into()));
        }
        if !digits(national_prefix) {
            return Err(DialPlanError::NationalPrefix(national_prefix.into()));
        }
        if !digits(international_prefix) {
            return Err(DialPlanError::InternationalPrefix(
                international_prefix.into(),
            ));
        }
        if min_digits == 0 || min_digits > max_digits || max_digits > E164_MAX_DIGITS {
            return Err(DialPlanError::Lengths {
                min: min_digits,
                max: max_digits,
            });
        }
        let allow = patterns
            .iter()
            .map(|p| {
                Regex::new(&format!("^(?:{p})$")).map_err(|e| DialPlanError::Pattern {
                    pattern: p.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DialPlan {
            country_code: country_code.into(),
            national_prefix: national_prefix.into(),
            international_prefix: international_prefix.into(),
            min_digits,
            max_digits,
            patterns: patterns.to_vec(),
            allow,
        })
    }

    /// The number in E.164 (digits only, no "+"), or why it is no number.
    /// "+CC..." and "<international prefix>CC..." are international; a
    /// number starting with the national prefix, or any other digits, is a
    /// national number of the trunk's country. Spaces, dashes, dots and
    /// brackets are ignored.
    pub fn normalise(&self, number: &str) -> Result<String, DialRefusal> {
        let cleaned: String = number
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let (international, rest) = match cleaned.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, cleaned.as_str()),
        };
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) {
            return Err(DialRefusal::Malformed);
        }
        let e164 = if international {
            rest.to_string()
        } else if !self.international_prefix.is_empty()
            && let Some(rest) = rest.strip_prefix(&self.international_prefix)
        {
            rest.to_string()
        } else if !self.national_prefix.is_empty()
            && let Some(rest) = rest.strip_prefix(&self.national_prefix)
        {
            format!("{}{rest}", self.country_code)
        } else {
            format!("{}{rest}", self.country_code)
        };
        if e164.len() < self.min_digits {
            return Err(DialRefusal::TooShort);
        }
        if e164.len() > self.max_digits {
            return Err(DialRefusal::TooLong);
        }
        Ok(e164)
    }

    /// The E.164 number hotline may dial for `number`, or why not.
    pub fn check(&self, number: &str) -> Result<String, DialRefusal> {
        let e164 = self.normalise(number)?;
        if self.allow.iter().any(|re| re.is_match(&e164)) {
            Ok(e164)
        } else {
            Err(DialRefusal::NotAllowed)
        }
    }
}

/// A trunk's ceilings on hotline's own calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    /// Outbound calls in progress at once.
    pub max_concurrent: u32,
    /// Outbound calls started within any hour.
    pub max_per_hour: u32,
}

impl Default for OutboundLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 10,
            max_per_hour: 60,
        }
    }
}

#[derive(Debug, Default)]
struct TrunkUse {
    active: u32,
    started: VecDeque<Instant>,
}

/// Outbound calls per trunk, shared by every call.
#[derive(Debug, Default)]
pub struct OutboundGate {
    trunks: Mutex<HashMap<String, TrunkUse>>,
}

/// One outbound call counted against its trunk until dropped.
#[derive(Debug)]
pub struct OutboundPermit {
    gate: Arc<OutboundGate>,
    trunk: String,
}

impl Drop for OutboundPermit {
    fn drop(&mut self) {
        if let Ok(mut trunks) = self.gate.trunks.lock()
            && let Some(usage) = trunks.get_mut(&self.trunk)
        {
            usage.active = usage.active.saturating_sub(1);
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

impl OutboundGate {
    /// Counts one more outbound call on `trunk` if its limits allow it.
    pub fn admit(
        self: &Arc<Self>,
        trunk: &str,
        limits: OutboundLimits,
        now: Instant,
    ) -> Result<OutboundPermit, DialRefusal> {
        let mut trunks = self
            .trunks
            .lock()
            .map_err(|_| DialRefusal::ConcurrentLimit)?;
        let usage = trunks.entry(trunk.to_string()).or_default();
        while usage
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= HOUR)
        {
            usage.started.pop_front();
        }
        if usage.active >= limits.max_concurrent {
            return Err(DialRefusal::ConcurrentLimit);
        }
        if usage.started.len() >= limits.max_per_hour as usize {
            return Err(DialRefusal::HourlyLimit);
        }
        usage.active += 1;
        usage.started.push_back(now);
        Ok(OutboundPermit {
            gate: self.clone(),
            trunk: trunk.to_string(),
        })
    }

    /// Outbound calls in progress on `trunk`.
    pub fn active(&self, trunk: &str) -> u32 {
        self.trunks
            .lock()
            .ok()
            .and_then(|t| t.get(trunk).map(|u| u.active))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan() -> DialPlan {
        DialPlan::default()
    }

    #[test]
    fn the_default_patterns_compile() {
        assert_eq!(plan().allow.len(), DEFAULT_ALLOW.len());
    }

    #[test]
    fn national_mobiles_and_fixed_lines_are_allowed_in_every_spelling() {
        let p = plan();
        for n in [
            "13800138000",
            "+8613800138000",
            "008613800138000",
            "138-0013-8000",
            "(010) 1234 5678",
            "01012345678",
            "+862112345678",
            "05711234567",
        ] {
            assert!(p.check(n).is_ok(), "{n}");
        }
        assert_eq!(p.check("01012345678").unwrap(), "861012345678");
        assert_eq!(p.check("13800138000").unwrap(), "8613800138000");
    }

    #[test]
    fn international_premium_and_short_numbers_are_refused() {
        let p = plan();
        let refused = [
            ("+441632960000", DialRefusal::NotAllowed),
            ("0044 20 7946 0000", DialRefusal::NotAllowed),
            ("+19005550100", DialRefusal::NotAllowed),
            ("4001234567", DialRefusal::NotAllowed),
            ("8001234567", DialRefusal::NotAllowed),
            ("95588", DialRefusal::TooShort),
            ("110", DialRefusal::TooShort),
            ("5550100", DialRefusal::NotAllowed),
            ("+", DialRefusal::Malformed),
            ("", DialRefusal::Malformed),
            ("anonymous", DialRefusal::Malformed),
            ("1380013800*", DialRefusal::Malformed),
            ("+8613800138000123", DialRefusal::TooLong),
        ];
        for (n, why) in refused {
            assert_eq!(p.check(n), Err(why), "{n}");
        }
    }

    #[test]
    fn bad_plans_are_refused() {
        let none: Vec<String> = Vec::new();
        assert!(DialPlan::new("", "0", "00", 8, 15, &none).is_err());
        assert!(DialPlan::new("1234", "0", "00", 8, 15, &none).is_err());
        assert!(DialPlan::new("86", "x", "00", 8, 15, &none).is_err());
        assert!(DialPlan::new("86", "0", "00", 9, 8, &none).is_err());
        assert!(DialPlan::new("86", "0", "00", 8, 16, &none).is_err());
        assert!(DialPlan::new("86", "0", "00", 8, 15, &["(".to_string()]).is_err());
    }

    #[test]
    fn a_pattern_matches_the_whole_number_only() {
        let p = DialPlan::new("44", "0", "00", 8, 15, &["447[0-9]{3}".to_string()]).unwrap();
        assert!(p.check("07123").is_err(), "too short anyway");
        let p = DialPlan::new("44", "0", "00", 4, 15, &["447[0-9]{3}".to_string()]).unwrap();
        assert_eq!(p.check("07123"), Ok("447123".into()));
        assert_eq!(p.check("071234"), Err(DialRefusal::NotAllowed));
        assert_eq!(p.check("+99447123"), Err(DialRefusal::NotAllowed));
    }

    #[test]
    fn the_gate_holds_concurrent_and_hourly_ceilings() {
        let gate = Arc::new(OutboundGate::default());
        let limits = OutboundLimits {
            max_concurrent: 2,
            max_per_hour: 3,
        };
        let t0 = Instant::now();
        let a = gate.admit("t", limits, t0).unwrap();
        let b = gate.admit("t", limits, t0).unwrap();
        assert_eq!(
            gate.admit("t", limits, t0).unwrap_err(),
            DialRefusal::ConcurrentLimit
        );
        assert!(gate.admit("other", limits, t0).is_ok(), "per trunk");
        drop(a);
        assert_eq!(gate.active("t"), 1);
        let c = gate.admit("t", limits, t0).unwrap();
        drop((b, c));
        assert_eq!(gate.active("t"), 0);
        assert_eq!(
            gate.admit("t", limits, t0 + Duration::from_secs(3599))
                .unwrap_err(),
            DialRefusal::HourlyLimit
        );
        assert!(gate.admit("t", limits, t0 + HOUR).is_ok());
    }

    proptest! {
        /// Whatever a caller puts in From, an accepted number is an allowed
        /// E.164 number within the length limits.
        #[test]
        fn whatever_is_accepted_is_an_allowed_national_number(raw in "[+0-9 ()*#a-z.-]{0,24}") {
            let p = plan();
            if let Ok(e164) = p.check(&raw) {
                prop_assert!(e164.starts_with("86"));
                prop_assert!(e164.len() >= 8 && e164.len() <= E164_MAX_DIGITS);
                prop_assert!(e164.chars().all(|c| c.is_ascii_digit()));
                prop_assert!(!e164.starts_with("86400") && !e164.starts_with("86800"));
            }
        }

        /// Any number written with another country's code is refused.
        #[test]
        fn other_countries_are_refused(cc in "[1-79][0-9]{0,2}", rest in "[0-9]{6,11}") {
            prop_assume!(!cc.starts_with("86"));
            let p = plan();
            let plus = format!("+{cc}{rest}");
            let zeros = format!("00{cc}{rest}");
            prop_assert!(p.check(&plus).is_err());
            prop_assert!(p.check(&zeros).is_err());
        }

        /// Counting never lets more calls through than the ceilings.
        #[test]
        fn the_gate_never_exceeds_its_ceilings(max_c in 1u32..5, max_h in 1u32..8, tries in 0usize..20) {
            let gate = Arc::new(OutboundGate::default());
            let limits = OutboundLimits { max_concurrent: max_c, max_per_hour: max_h };
            let now = Instant::now();
            let permits: Vec<_> = (0..tries).filter_map(|_| gate.admit("t", limits, now).ok()).collect();
            prop_assert_eq!(permits.len(), tries.min(max_c.min(max_h) as usize));
        }
    }
}
