//! What is wrong with a configuration: each problem with the key it is about,
//! gathered from every check so that one run reports them all, and the error
//! that carries them, with the file they came from, out of `config`.

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

    /// Adds problems found by another pass (the checks across sections),
    /// each listed among the problems of its own section next to its nearest
    /// relative: after the last problem sharing most of its key and sorting
    /// before it (else before the first sharing most), so that a section's
    /// problems, and an entry's, read together however they were found.
    /// `sections` names the sections in the order their problems were added
    /// here; a key of no listed section goes last.
    pub fn merge(&mut self, found: Problems, sections: &[&str]) {
        let rank = |key: &str| {
            let section = segments(key).next().unwrap_or(key);
            sections
                .iter()
                .position(|s| *s == section)
                .unwrap_or(sections.len())
        };
        let mut found = found.issues;
        found.sort_by(|a, b| {
            rank(&a.key)
                .cmp(&rank(&b.key))
                .then_with(|| a.key.cmp(&b.key))
        });
        for issue in found {
            let section = rank(&issue.key);
            let same: Vec<usize> = (0..self.issues.len())
                .filter(|&i| rank(&self.issues[i].key) == section)
                .collect();
            let shared = |i: &usize| shared_segments(&self.issues[*i].key, &issue.key);
            let nearest = same.iter().map(shared).max();
            let relatives: Vec<usize> = same
                .iter()
                .copied()
                .filter(|i| Some(shared(i)) == nearest)
                .collect();
            let at = match relatives
                .iter()
                .rev()
                .find(|&&i| self.issues[i].key < issue.key)
            {
                Some(&i) => i + 1,
                None => match relatives.first() {
                    Some(&first) => first,
                    None => self
                        .issues
                        .iter()
                        .rposition(|i| rank(&i.key) < section)
                        .map_or(0, |last| last + 1),
                },
            };
            self.issues.insert(at, issue);
        }
    }
}

/// The parts of a key: `queues.q.escalation[3].after` → queues, q,
/// escalation, 3], after.
fn segments(key: &str) -> impl Iterator<Item = &str> {
    key.split(['.', '['])
}

/// How many leading parts two keys share.
fn shared_segments(a: &str, b: &str) -> usize {
    segments(a)
        .zip(segments(b))
        .take_while(|(x, y)| x == y)
        .count()
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
    fn a_problem_found_across_sections_joins_its_nearest_relatives() {
        let mut own = Problems::default();
        for key in [
            "queues.q.required_skills.general",
            "queues.q.required_skills.sales",
            "queues.q.escalation[0].after",
            "queues.q.callback_key",
            "queues.r.overflow",
        ] {
            own.add(key, "own");
        }
        let mut crossed = Problems::default();
        for key in [
            "queues.q.required_skills.french",
            "queues.q.min_staffed",
            "queues.q.escalation[3].add_skills[1]",
            "numbers.7.queue",
        ] {
            crossed.add(key, "crossed");
        }
        own.merge(crossed, &["numbers", "queues"]);
        assert_eq!(
            keys(own),
            [
                "numbers.7.queue",
                "queues.q.required_skills.french",
                "queues.q.required_skills.general",
                "queues.q.required_skills.sales",
                "queues.q.escalation[0].after",
                "queues.q.escalation[3].add_skills[1]",
                "queues.q.callback_key",
                "queues.q.min_staffed",
                "queues.r.overflow",
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
