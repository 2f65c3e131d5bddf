//! `[numbers.NUMBER]`: the hotline numbers callers dial, and where each sends
//! its callers (an IVR flow, or a queue with an optional greeting).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNumber {
    pub description: String,
    pub ivr: String,
    pub queue: String,
    pub greeting: String,
    #[serde(with = "humantime_serde")]
    pub answer_after: Duration,
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
}

/// Where a hotline number sends its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberTarget {
    Ivr(String),
    Queue {
        queue: String,
        greeting: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotlineNumber {
    pub number: String,
    pub description: String,
    pub target: NumberTarget,
    pub answer_after: Duration,
    /// Longest call from hotline's answer: then it ends (reason
    /// `max_duration`); `None` = no limit.
    pub max_duration: Option<Duration>,
}

impl Section for BTreeMap<String, RawNumber> {
    /// The numbers with a target; one without is a problem.
    type Checked = BTreeMap<String, HotlineNumber>;

    fn check(&self, problems: &mut Problems) -> BTreeMap<String, HotlineNumber> {
        self.iter()
            .filter_map(|(number, raw)| Some((number.clone(), raw.check(number, problems)?)))
            .collect()
    }
}

impl RawNumber {
    fn check(&self, number: &str, problems: &mut Problems) -> Option<HotlineNumber> {
        let key = format!("numbers.{number}");
        if !is_dial_string(number) {
            problems.add(
                key.clone(),
                "a hotline number is 1-32 characters of digits, letters, + * # - _ .",
            );
        }
        let target = match (self.ivr.trim(), self.queue.trim()) {
            (ivr, "") if !ivr.is_empty() => {
                if !self.greeting.is_empty() {
                    problems.add(
                        format!("{key}.greeting"),
                        "a greeting belongs to a number with `queue`; an IVR flow plays its own prompts",
                    );
                }
                Some(NumberTarget::Ivr(ivr.to_string()))
            }
            ("", queue) if !queue.is_empty() => Some(NumberTarget::Queue {
                queue: queue.to_string(),
                greeting: (!self.greeting.trim().is_empty())
                    .then(|| self.greeting.trim().to_string()),
            }),
            ("", "") => {
                problems.add(
                    key.clone(),
                    "needs a target: set `ivr` (an IVR flow) or `queue` (a queue)",
                );
                None
            }
            _ => {
                problems.add(key.clone(), "set either `ivr` or `queue`, not both");
                None
            }
        };
        if self.answer_after > Duration::from_secs(120) {
            problems.add(
                format!("{key}.answer_after"),
                "must not exceed 2m (callers and carriers give up long before)",
            );
        }
        Some(HotlineNumber {
            number: number.to_string(),
            description: self.description.clone(),
            target: target?,
            answer_after: self.answer_after,
            max_duration: super::nonzero(self.max_duration),
        })
    }
}

/// A hotline number or an agent id: 1-32 characters a phone can dial.
pub(super) fn is_dial_string(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn both_ivr_and_queue_is_ambiguous() {
        let err = load("[numbers.\"7\"]\nivr = \"a\"\nqueue = \"b\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["numbers.7".to_string()]);
    }

    #[test]
    fn a_number_checks_its_own_values_and_keeps_its_target() {
        let numbers = BTreeMap::from([
            (
                "7".to_string(),
                RawNumber {
                    ivr: "main".into(),
                    greeting: "hello".into(),
                    answer_after: Duration::from_secs(121),
                    ..RawNumber::default()
                },
            ),
            (
                "8".to_string(),
                RawNumber {
                    queue: " q ".into(),
                    greeting: " hi ".into(),
                    ..RawNumber::default()
                },
            ),
            ("9".to_string(), RawNumber::default()),
        ]);
        let (checked, keys) = check_section(&numbers);
        assert_eq!(
            keys,
            ["numbers.7.greeting", "numbers.7.answer_after", "numbers.9"]
        );
        assert_eq!(checked["7"].target, NumberTarget::Ivr("main".into()));
        assert_eq!(
            checked["8"].target,
            NumberTarget::Queue {
                queue: "q".into(),
                greeting: Some("hi".into())
            }
        );
        assert!(
            !checked.contains_key("9"),
            "a number without a target is dropped"
        );
    }
}
