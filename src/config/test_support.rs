//! Helpers of the configuration's unit tests: loading a text, the keys of its
//! problems, the documented defaults of `config/hotline.toml`.

use std::collections::BTreeMap;

use super::{ConfigError, EMBEDDED_DEFAULT, Settings};

pub(super) fn load(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(text, "test.toml", &BTreeMap::new())
}

pub(super) fn keys(err: ConfigError) -> Vec<String> {
    issue_keys(&err)
}

pub(super) fn issue_keys(err: &ConfigError) -> Vec<String> {
    err.issues().iter().map(|i| i.key.clone()).collect()
}

/// The text of `err` has an issue for exactly `key`, naming the file.
pub(super) fn assert_issue(err: &ConfigError, key: &str) {
    let text = err.to_string();
    assert!(
        text.contains(&format!("test.toml: key `{key}`:")),
        "no issue for `{key}` in:\n{text}"
    );
}

/// One agent holding `general` and `sales`, serving queues `q` and `r`.
pub(super) const AGENT: &str = "[agents.\"9\"]\npassword = \"p\"\nqueues = [\"q\", \"r\"]\nskills = { general = 5, sales = 8 }\n";

pub(super) fn load_queues(text: &str) -> Result<Settings, ConfigError> {
    let q = if text.contains("[queues.q]") {
        ""
    } else {
        "[queues.q]\n"
    };
    load(&format!("{AGENT}[queues.r]\n{q}{text}"))
}

/// The commented `# key = value  # default ...` lines of the embedded
/// default between the lines `from` and `to`, uncommented.
pub(super) fn documented(from: &str, to: &str) -> Vec<String> {
    EMBEDDED_DEFAULT
        .lines()
        .skip_while(|l| *l != from)
        .skip(1)
        .take_while(|l| !l.starts_with(to))
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        .map(str::to_string)
        .collect()
}

/// Checks one section on its own: its checked form and the keys of its
/// problems, in the order found.
pub(super) fn check_section<S: super::Section>(raw: &S) -> (S::Checked, Vec<String>) {
    let mut problems = super::Problems::default();
    let checked = raw.check(&mut problems);
    let keys = problems.into_issues().into_iter().map(|i| i.key).collect();
    (checked, keys)
}
