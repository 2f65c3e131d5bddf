//! `[acd]`: how calls are offered to agents (rings, the queue header), how
//! agents are paced (cooldowns, wrap-up, breaks) and the hold limit.

use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HoldAction {
    /// The agent is alerted; the caller stays on hold.
    #[default]
    Alert,
    /// The caller is taken off hold and reconnected to the agent.
    Resume,
    /// The caller goes back to the queue.
    Requeue,
}

named_values! {
    HoldAction, "a hold action", [
        "alert" => Alert,
        "resume" => Resume,
        "requeue" => Requeue,
    ]
}

/// `[acd]`: how calls are offered to agents and how agents are paced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAcd {
    /// Registering a phone logs its agent in as ready; losing the last
    /// registration logs it out.
    pub login_on_register: bool,
    pub answer_within_rings: u32,
    #[serde(with = "humantime_serde")]
    pub ring_cycle: Duration,
    pub max_no_answer: u32,
    #[serde(with = "humantime_serde")]
    pub cooldown_busy: Duration,
    #[serde(with = "humantime_serde")]
    pub cooldown_declined: Duration,
    #[serde(with = "humantime_serde")]
    pub cooldown_unreachable: Duration,
    #[serde(with = "humantime_serde")]
    pub wrap_up: Duration,
    #[serde(with = "humantime_serde")]
    pub break_limit: Duration,
    #[serde(with = "humantime_serde")]
    pub hold_limit: Duration,
    #[serde(with = "humantime_serde")]
    pub hold_warning_before: Duration,
    pub hold_action: HoldAction,
    pub queue_header: String,
    pub max_transfers: u32,
}

impl Default for RawAcd {
    fn default() -> Self {
        Self {
            login_on_register: true,
            answer_within_rings: 2,
            ring_cycle: Duration::from_secs(3),
            max_no_answer: 1,
            cooldown_busy: Duration::from_secs(10),
            cooldown_declined: Duration::from_secs(10),
            cooldown_unreachable: Duration::from_secs(30),
            wrap_up: Duration::from_secs(60),
            break_limit: Duration::from_secs(5 * 60),
            hold_limit: Duration::from_secs(30),
            hold_warning_before: Duration::from_secs(5),
            hold_action: HoldAction::Alert,
            queue_header: "X-Hotline-Queue".into(),
            max_transfers: 2,
        }
    }
}

impl RawAcd {
    /// The settings as written, unchecked (see [`RawAcd::check`]).
    fn resolve(&self) -> AcdSettings {
        AcdSettings {
            login_on_register: self.login_on_register,
            answer_within_rings: self.answer_within_rings,
            ring_cycle: self.ring_cycle,
            max_no_answer: self.max_no_answer,
            cooldown_busy: self.cooldown_busy,
            cooldown_declined: self.cooldown_declined,
            cooldown_unreachable: self.cooldown_unreachable,
            wrap_up: self.wrap_up,
            break_limit: self.break_limit,
            hold_limit: self.hold_limit,
            hold_warning_before: self.hold_warning_before,
            hold_action: self.hold_action,
            queue_header: self.queue_header.trim().to_string(),
            max_transfers: self.max_transfers,
        }
    }
}

impl Section for RawAcd {
    type Checked = AcdSettings;

    fn check(&self, problems: &mut Problems) -> AcdSettings {
        let mut issue = |key: &str, message: String| problems.add(format!("acd.{key}"), message);
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if !(1..=10).contains(&self.answer_within_rings) {
            issue(
                "answer_within_rings",
                format!(
                    "{} is out of range: expected 1 to 10 rings",
                    self.answer_within_rings
                ),
            );
        }
        if self.ring_cycle < Duration::from_secs(1) || self.ring_cycle > Duration::from_secs(30) {
            issue(
                "ring_cycle",
                format!(
                    "{} is out of range: expected between 1s and 30s",
                    show(self.ring_cycle)
                ),
            );
        }
        if self.max_no_answer == 0 {
            issue(
                "max_no_answer",
                "must be at least 1 (missed offers in a row before the agent is made not-ready)"
                    .into(),
            );
        }
        if self.hold_limit < Duration::from_secs(1) {
            issue("hold_limit", "must be at least 1s".into());
        } else if self.hold_warning_before >= self.hold_limit {
            issue(
                "hold_warning_before",
                format!(
                    "{} must be shorter than acd.hold_limit ({}); \"0s\" gives no warning",
                    show(self.hold_warning_before),
                    show(self.hold_limit)
                ),
            );
        }
        let header = self.queue_header.trim();
        if header.is_empty() || header.len() > 64 || !header.chars().all(is_sip_token_char) {
            issue(
                "queue_header",
                format!(
                    "`{}` is not a SIP header name: 1-64 letters, digits and - . ! % * _ + ` ' ~",
                    self.queue_header
                ),
            );
        }
        self.resolve()
    }
}

/// `[acd]`: how calls are offered to agents and how agents are paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcdSettings {
    /// Registering a phone logs its agent in as ready; losing the last
    /// registration logs it out.
    pub login_on_register: bool,
    /// Rings an agent has to answer an offer (rulebook L1), 1-10.
    pub answer_within_rings: u32,
    /// Length of one ring, 1s-30s; an offer lasts rings × cycle
    /// ([`AcdSettings::offer_timeout`]).
    pub ring_cycle: Duration,
    /// Offers missed in a row before the agent goes not-ready (no-answer); ≥ 1.
    pub max_no_answer: u32,
    /// How long an agent is skipped after answering an offer with busy.
    pub cooldown_busy: Duration,
    /// … after declining an offer.
    pub cooldown_declined: Duration,
    /// … after its phone could not be reached.
    pub cooldown_unreachable: Duration,
    /// After-call work before the agent is ready again (rulebook L4).
    pub wrap_up: Duration,
    /// Longest break (rulebook L7); zero = no limit.
    pub break_limit: Duration,
    /// Longest hold (rulebook L2); at least 1s.
    pub hold_limit: Duration,
    /// The agent is warned this long before `hold_limit`; zero = no
    /// warning. Always shorter than `hold_limit`.
    pub hold_warning_before: Duration,
    /// What happens at `hold_limit`.
    pub hold_action: HoldAction,
    /// Header carrying the queue name on an INVITE offering a call to an
    /// agent (a valid SIP header name).
    pub queue_header: String,
    /// Transfers a call may have (rulebook L6); a further one is refused.
    pub max_transfers: u32,
}

impl AcdSettings {
    /// How long one offer rings: `answer_within_rings` × `ring_cycle`.
    pub fn offer_timeout(&self) -> Duration {
        self.ring_cycle.saturating_mul(self.answer_within_rings)
    }
}

impl Default for AcdSettings {
    /// The documented defaults.
    fn default() -> Self {
        RawAcd::default().resolve()
    }
}

/// A character of an RFC 3261 `token` (header names are tokens).
fn is_sip_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn acd_options_take_their_documented_defaults() {
        let s = load("").unwrap();
        let a = &s.acd;
        assert!(a.login_on_register);
        assert!(s.login_on_register);
        assert_eq!(a.answer_within_rings, 2);
        assert_eq!(a.ring_cycle, Duration::from_secs(3));
        assert_eq!(a.offer_timeout(), Duration::from_secs(6));
        assert_eq!(a.max_no_answer, 1);
        assert_eq!(a.cooldown_busy, Duration::from_secs(10));
        assert_eq!(a.cooldown_declined, Duration::from_secs(10));
        assert_eq!(a.cooldown_unreachable, Duration::from_secs(30));
        assert_eq!(a.wrap_up, Duration::from_secs(60));
        assert_eq!(a.break_limit, Duration::from_secs(300));
        assert_eq!(a.hold_limit, Duration::from_secs(30));
        assert_eq!(a.hold_warning_before, Duration::from_secs(5));
        assert_eq!(a.hold_action, HoldAction::Alert);
        assert_eq!(a.queue_header, "X-Hotline-Queue");
        assert_eq!(*a, AcdSettings::default());
    }

    #[test]
    fn acd_options_accept_other_valid_values() {
        let s = load(
            r#"
[acd]
login_on_register = false
answer_within_rings = 4
ring_cycle = "5s"
max_no_answer = 3
cooldown_busy = "0s"
cooldown_declined = "1m"
cooldown_unreachable = "2m"
wrap_up = "0s"
break_limit = "0s"
hold_limit = "2m"
hold_warning_before = "0s"
hold_action = "requeue"
queue_header = "X-Queue"
"#,
        )
        .unwrap();
        let a = &s.acd;
        assert!(!a.login_on_register);
        assert!(!s.login_on_register, "the old field mirrors acd's");
        assert_eq!(a.answer_within_rings, 4);
        assert_eq!(a.ring_cycle, Duration::from_secs(5));
        assert_eq!(a.offer_timeout(), Duration::from_secs(20));
        assert_eq!(a.max_no_answer, 3);
        assert_eq!(a.cooldown_busy, Duration::ZERO);
        assert_eq!(a.cooldown_declined, Duration::from_secs(60));
        assert_eq!(a.cooldown_unreachable, Duration::from_secs(120));
        assert_eq!(a.wrap_up, Duration::ZERO);
        assert_eq!(a.break_limit, Duration::ZERO);
        assert_eq!(a.hold_limit, Duration::from_secs(120));
        assert_eq!(a.hold_warning_before, Duration::ZERO);
        assert_eq!(a.hold_action, HoldAction::Requeue);
        assert_eq!(a.queue_header, "X-Queue");
        let s = load("[acd]\nhold_action = \"resume\"\n").unwrap();
        assert_eq!(s.acd.hold_action, HoldAction::Resume);
    }

    #[test]
    fn acd_values_out_of_range_are_each_named() {
        let err = load(
            r#"
[acd]
answer_within_rings = 0
ring_cycle = "500ms"
max_no_answer = 0
hold_limit = "0s"
queue_header = "X Queue"
"#,
        )
        .unwrap_err();
        for key in [
            "acd.answer_within_rings",
            "acd.ring_cycle",
            "acd.max_no_answer",
            "acd.hold_limit",
            "acd.queue_header",
        ] {
            assert_issue(&err, key);
        }
        assert_eq!(err.issues().len(), 5, "{err}");
        let err =
            load("[acd]\nanswer_within_rings = 11\nring_cycle = \"31s\"\nqueue_header = \"\"\n")
                .unwrap_err();
        assert_eq!(
            keys(err),
            vec![
                "acd.answer_within_rings",
                "acd.ring_cycle",
                "acd.queue_header"
            ]
        );
        for header in ["X-Queue:", "X-Qüeue", "X/Queue"] {
            let err = load(&format!("[acd]\nqueue_header = \"{header}\"\n")).unwrap_err();
            assert_eq!(keys(err), vec!["acd.queue_header"], "{header}");
        }
    }

    #[test]
    fn hold_warning_must_come_before_the_limit() {
        for warning in ["30s", "1m"] {
            let err = load(&format!("[acd]\nhold_warning_before = \"{warning}\"\n")).unwrap_err();
            assert_issue(&err, "acd.hold_warning_before");
            assert!(err.to_string().contains("acd.hold_limit"), "{err}");
        }
        let s = load("[acd]\nhold_limit = \"10s\"\nhold_warning_before = \"9s\"\n").unwrap();
        assert_eq!(s.acd.hold_warning_before, Duration::from_secs(9));
    }

    #[test]
    fn a_wrong_hold_action_or_duration_in_acd_is_named() {
        let err = load("[acd]\nhold_action = \"panic\"\nwrap_up = \"a minute\"\n").unwrap_err();
        assert_issue(&err, "acd.hold_action");
        assert_issue(&err, "acd.wrap_up");
        assert!(err.to_string().contains("requeue"), "{err}");
    }
}
