//! `[monitor]`: supervisors joining live calls from their phones: who may,
//! the queues each may reach, and the feature codes for listen, whisper and
//! barge.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{Problems, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMonitor {
    pub supervisors: Vec<String>,
    pub listen_code: String,
    pub whisper_code: String,
    pub barge_code: String,
    /// Per supervisor phone, the queues whose agents it may monitor.
    pub queues: BTreeMap<String, Vec<String>>,
}

impl Default for RawMonitor {
    fn default() -> Self {
        Self {
            supervisors: Vec::new(),
            listen_code: "*41".into(),
            whisper_code: "*42".into(),
            barge_code: "*43".into(),
            queues: BTreeMap::new(),
        }
    }
}

/// `[monitor]`: who may monitor live calls from a phone, and the feature codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// Phone accounts allowed to dial the feature codes.
    pub supervisors: BTreeSet<String>,
    /// Per supervisor phone, the queues whose agents its feature codes
    /// reach (`monitor.queues`, else the phone account's own `queues`).
    pub scopes: BTreeMap<String, Vec<String>>,
    pub listen_code: String,
    pub whisper_code: String,
    pub barge_code: String,
}

impl Default for MonitorSettings {
    /// The documented defaults.
    fn default() -> Self {
        RawMonitor::default().check(&mut Problems::default())
    }
}

impl MonitorSettings {
    /// Whether `supervisor`'s phone may monitor an agent serving
    /// `agent_queues`: one of them must be in the supervisor's scope.
    pub fn may_monitor(&self, supervisor: &str, agent_queues: &[String]) -> bool {
        self.supervisors.contains(supervisor)
            && self
                .scopes
                .get(supervisor)
                .is_some_and(|scope| agent_queues.iter().any(|q| scope.contains(q)))
    }
}

impl Section for RawMonitor {
    /// The supervisors and codes; a supervisor without `monitor.queues` has
    /// an empty scope here, which `cross` fills with its phone account's
    /// own queues.
    type Checked = MonitorSettings;

    fn check(&self, problems: &mut Problems) -> MonitorSettings {
        for phone in self.queues.keys() {
            if !self.supervisors.iter().any(|s| s.trim() == phone) {
                problems.add(
                    format!("monitor.queues.{phone}"),
                    format!("{phone:?} is not listed in monitor.supervisors"),
                );
            }
        }
        let codes = [
            ("monitor.listen_code", &self.listen_code),
            ("monitor.whisper_code", &self.whisper_code),
            ("monitor.barge_code", &self.barge_code),
        ];
        for (key, code) in codes {
            let valid = !code.is_empty()
                && code
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '#');
            if !valid {
                problems.add(
                    key,
                    format!("{code:?} must be keypad characters (0-9, * and #), e.g. \"*41\""),
                );
            }
        }
        for (i, (key, code)) in codes.iter().enumerate() {
            if let Some((other, _)) = codes[..i]
                .iter()
                .find(|(_, c)| c.starts_with(code.as_str()) || code.starts_with(c.as_str()))
            {
                problems.add(
                    *key,
                    format!(
                        "{code:?} overlaps {other}: each code must be told apart from the others"
                    ),
                );
            }
        }
        let supervisors: BTreeSet<String> = self
            .supervisors
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        let scopes = supervisors
            .iter()
            .map(|phone| {
                let scope = self.queues.get(phone).cloned().unwrap_or_default();
                (phone.clone(), scope)
            })
            .collect();
        MonitorSettings {
            supervisors,
            scopes,
            listen_code: self.listen_code.clone(),
            whisper_code: self.whisper_code.clone(),
            barge_code: self.barge_code.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn monitor_options_take_their_documented_defaults_and_are_checked() {
        let documented = documented("[monitor]", "[metrics]");
        assert_eq!(documented.len(), 5, "{documented:#?}");
        let s = load(&format!("[monitor]\n{}\n", documented.join("\n"))).unwrap();
        assert_eq!(s.monitor, MonitorSettings::default());
        assert_eq!(s.monitor.listen_code, "*41");
        let err =
            load("[monitor]\nsupervisors = [\"9\"]\nlisten_code = \"*4a\"\nbarge_code = \"*4\"\n")
                .unwrap_err();
        let keys = issue_keys(&err);
        for key in [
            "monitor.supervisors[0]",
            "monitor.listen_code",
            "monitor.barge_code",
        ] {
            assert!(keys.contains(&key.to_string()), "{key}: {err}");
        }
    }
}
