//! `[agents.ID]`: the phone accounts of agents (and supervisors): digest
//! password, the queues served in order of preference, skills.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Problems, Section};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAgent {
    pub name: String,
    pub password: String,
    /// Queues the agent serves, in the agent's order of preference.
    pub queues: Vec<String>,
    /// Skills with proficiency 1-10, e.g. { billing = 7, english = 9 }.
    pub skills: BTreeMap<String, u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub password: String,
    pub queues: Vec<String>,
    pub skills: BTreeMap<String, u8>,
}

impl Section for BTreeMap<String, RawAgent> {
    type Checked = BTreeMap<String, Agent>;

    fn check(&self, problems: &mut Problems) -> BTreeMap<String, Agent> {
        self.iter()
            .map(|(id, raw)| (id.clone(), raw.check(id, problems)))
            .collect()
    }
}

impl RawAgent {
    fn check(&self, id: &str, problems: &mut Problems) -> Agent {
        let key = format!("agents.{id}");
        if !super::numbers::is_dial_string(id) {
            problems.add(
                key.clone(),
                "an agent id is 1-32 characters of digits, letters, + * # - _ .",
            );
        }
        if self.password.is_empty() {
            problems.add(
                format!("{key}.password"),
                "is required (the digest password of the agent's phone)",
            );
        }
        for (skill, level) in &self.skills {
            if !(1..=10).contains(level) {
                problems.add(
                    format!("{key}.skills.{skill}"),
                    format!("proficiency {level} is out of range: expected 1 to 10"),
                );
            }
        }
        let name = if self.name.trim().is_empty() {
            format!("Agent {id}")
        } else {
            self.name.clone()
        };
        Agent {
            id: id.to_string(),
            name,
            password: self.password.clone(),
            queues: self.queues.clone(),
            skills: self.skills.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::check_section;

    #[test]
    fn an_agent_needs_a_dialable_id_and_a_password_and_has_a_name() {
        let agents = BTreeMap::from([
            (
                "9".to_string(),
                RawAgent {
                    password: "p".into(),
                    ..RawAgent::default()
                },
            ),
            ("a b".to_string(), RawAgent::default()),
        ]);
        let (checked, keys) = check_section(&agents);
        assert_eq!(keys, ["agents.a b", "agents.a b.password"]);
        assert_eq!(checked["9"].name, "Agent 9");
        assert_eq!(
            checked.len(),
            2,
            "every agent is kept for the checks across sections"
        );
    }
}
