//! What is wrong with a configuration: each problem with the key it is about,
//! gathered from every check so that one run reports them all, and the error
//! that carries them, with the file they came from, out of `config`.

use std::cmp::Ordering;
use std::path::PathBuf;

/// One problem in a configuration: which key, in which source, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

/// Everything wrong with one configuration source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_issues(origin, issues))]
    Invalid {
        origin: String,
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// The individual problems (empty for a file that could not be read).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { issues, .. } => issues,
        }
    }
}

fn render_issues(origin: &str, issues: &[ConfigIssue]) -> String {
    let mut out = String::new();
    for (i, issue) in issues.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{origin}: key `{}`: {}", issue.key, issue.message));
    }
    out
}

/// The problems found so far, in the order they are reported.
#[derive(Debug, Default)]
pub struct Problems {
    issues: Vec<ConfigIssue>,
}

impl Problems {
    /// Notes a problem with the setting at `key` (its full dotted path).
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    pub fn into_issues(self) -> Vec<ConfigIssue> {
        self.issues
    }

    /// Adds problems found by another pass (the checks across sections) so
    /// that each is listed with the problems of its own section, among them
    /// in key order: a section's problems read together, however they were
    /// found. `sections` names the sections in the order their problems
    /// were added here; a key of no listed section goes last.
    pub fn merge(&mut self, found: Problems, sections: &[&str]) {
        let rank = |key: &str| {
            let section = key.split(['.', '[']).next().unwrap_or(key);
            sections
                .iter()
                .position(|s| *s == section)
                .unwrap_or(sections.len())
        };
        let order = |a: &ConfigIssue, b: &ConfigIssue| {
            rank(&a.key)
                .cmp(&rank(&b.key))
                .then_with(|| a.key.cmp(&b.key))
        };
        let mut found = found.issues;
        found.sort_by(order);
        let mut merged = Vec::with_capacity(self.issues.len() + found.len());
        let mut found = found.into_iter().peekable();
        for issue in std::mem::take(&mut self.issues) {
            while let Some(earlier) = found.next_if(|f| order(f, &issue) == Ordering::Less) {
                merged.push(earlier);
            }
            merged.push(issue);
        }
        merged.extend(found);
        self.issues = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(problems: Problems) -> Vec<String> {
        problems.into_issues().into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn merged_problems_join_their_section_in_key_order() {
        let mut own = Problems::default();
        for key in [
            "acd.ring_cycle",
            "acd.queue_header",
            "queues.q.b",
            "queues.q.d",
        ] {
            own.add(key, "own");
        }
        let mut crossed = Problems::default();
        for key in ["queues.q.e", "monitor.x", "queues.q.a", "acd.z", "(file)"] {
            crossed.add(key, "crossed");
        }
        own.merge(crossed, &["acd", "queues", "monitor"]);
        assert_eq!(
            keys(own),
            [
                "acd.ring_cycle",
                "acd.queue_header",
                "acd.z",
                "queues.q.a",
                "queues.q.b",
                "queues.q.d",
                "queues.q.e",
                "monitor.x",
                "(file)",
            ]
        );
    }

    #[test]
    fn merging_nothing_keeps_the_order_found() {
        let mut own = Problems::default();
        own.add("sip.t1", "a");
        own.add("sip.realm", "b");
        own.merge(Problems::default(), &["sip"]);
        assert_eq!(keys(own), ["sip.t1", "sip.realm"]);
    }
}
