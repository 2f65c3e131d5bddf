//! IVR flows as written in the config: a small graph of named nodes per flow.
//!
//! Owns the TOML shape of `[ivr.NAME]` and `[ivr.NAME.nodes.NODE]` and its
//! checks: every node a flow can reach exists, every value is in range. Whether
//! the queues and prompts a flow names exist is checked in `cross` (the prompts
//! against the prompt library at load, see `Flow::prompt_names`). The
//! interpreter lives in the `ivr` room.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigIssue, Problems, Section};

/// One flow: where it starts and its nodes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// The node a call enters first.
    pub start: String,
    /// Language of the flow's prompts ("en", "zh"); `media.language` when
    /// absent. Prompts missing in it fall back to "en".
    #[serde(default)]
    pub language: Option<String>,
    pub nodes: BTreeMap<String, Node>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_inter_digit() -> Duration {
    Duration::from_secs(3)
}

fn default_retries() -> u32 {
    2
}

fn default_terminator() -> String {
    "#".into()
}

fn default_invalid() -> Vec<String> {
    vec!["invalid".into()]
}

/// A node of a flow; `type` selects the kind.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Node {
    /// Plays prompts, then goes to `next`. With `barge_in`, a key stops the
    /// prompts and is kept for the next node (a menu or collect).
    Play {
        prompts: Vec<String>,
        next: String,
        #[serde(default)]
        barge_in: bool,
    },
    /// Plays `prompts` and waits for one key; `choices` maps keys to nodes. A
    /// key not in `choices` plays `invalid` and asks again; so does a timeout,
    /// up to `retries` times, after which the call goes to `default`.
    Menu {
        prompts: Vec<String>,
        choices: BTreeMap<String, String>,
        default: String,
        #[serde(default = "default_timeout", with = "humantime_serde")]
        timeout: Duration,
        #[serde(default = "default_retries")]
        retries: u32,
        #[serde(default = "default_invalid")]
        invalid: Vec<String>,
    },
    /// Collects up to `max_digits` digits (or fewer, ended by `terminator`)
    /// into the call variable `var`. A value that does not match `pattern` (a
    /// regular expression over the digits) or a timeout with too few digits
    /// plays `invalid` and asks again, `retries` times, then goes to `failure`.
    Collect {
        prompts: Vec<String>,
        var: String,
        #[serde(default = "default_min_digits")]
        min_digits: u32,
        max_digits: u32,
        #[serde(default = "default_terminator")]
        terminator: String,
        #[serde(default = "default_timeout", with = "humantime_serde")]
        timeout: Duration,
        #[serde(default = "default_inter_digit", with = "humantime_serde")]
        inter_digit_timeout: Duration,
        #[serde(default = "default_retries")]
        retries: u32,
        #[serde(default = "default_invalid")]
        invalid: Vec<String>,
        #[serde(default)]
        pattern: Option<String>,
        next: String,
        failure: String,
        /// The digits are secret (a PIN, a card number): never logged, never
        /// an event, shown as `***` in the screen pop and the API. Default:
        /// by the variable's name (see [`is_sensitive_name`]).
        #[serde(default)]
        sensitive: Option<bool>,
    },
    /// Sets call variables (values may use `{var}`), and optionally the queue,
    /// skills and priority the caller will wait with.
    Set {
        #[serde(default)]
        vars: BTreeMap<String, String>,
        #[serde(default)]
        queue: Option<String>,
        #[serde(default)]
        skills: Vec<String>,
        #[serde(default)]
        priority: Option<u32>,
        next: String,
    },
    /// Reads a value out: `value` (with `{var}`) as single digits, or as a
    /// number ("12.5" → 1 2 point 5 with `digits`; see `mode`).
    Say {
        #[serde(default)]
        before: Vec<String>,
        value: String,
        #[serde(default)]
        after: Vec<String>,
        next: String,
    },
    /// Branches on the call's local time: `open` during `schedule`, else `closed`.
    Hours {
        /// "always" (24-hour service, the default) or lines such as
        /// "mon-fri 08:00-20:00", "sat 09:00-12:00".
        #[serde(default = "default_schedule")]
        schedule: Vec<String>,
        /// Offset of local time from UTC, e.g. "+08:00".
        #[serde(default = "default_utc_offset")]
        utc_offset: String,
        /// Dates with no service, "YYYY-MM-DD".
        #[serde(default)]
        holidays: Vec<String>,
        open: String,
        closed: String,
    },
    /// An HTTP GET to `url` (with `{var}` filled in, URL-encoded); a JSON object
    /// reply sets string variables, and a `"next"` member, if it names a node of
    /// this flow, chooses where to go. Otherwise `next`; on error or timeout, `failure`.
    Lookup {
        url: String,
        #[serde(default = "default_lookup_timeout", with = "humantime_serde")]
        timeout: Duration,
        next: String,
        failure: String,
    },
    /// Hands the caller to a queue (until the router lands: music on hold).
    Queue { queue: String },
    /// Plays `prompts` (e.g. goodbye) and hangs up.
    Hangup {
        #[serde(default)]
        prompts: Vec<String>,
    },
}

fn default_min_digits() -> u32 {
    1
}

fn default_schedule() -> Vec<String> {
    vec!["always".into()]
}

fn default_utc_offset() -> String {
    "+00:00".into()
}

fn default_lookup_timeout() -> Duration {
    Duration::from_secs(3)
}

/// What a sensitive variable's value is shown as.
pub const MASK: &str = "***";

/// Whether a variable's name says it holds a secret: a `_`-separated part
/// such as `pin`, `password`, `card`, `cvv` (`pin`, `card_number`,
/// `account_pin`, `cardno`, `new_password`).
pub fn is_sensitive_name(var: &str) -> bool {
    const WORDS: &[&str] = &[
        "pin", "password", "passwd", "passcode", "card", "cvv", "cvc", "secret",
    ];
    let lower = var.to_ascii_lowercase();
    lower.split('_').any(|part| {
        WORDS
            .iter()
            .any(|w| part == *w || (w.len() > 3 && part.starts_with(w)))
    }) || lower.starts_with("pin")
        || lower.starts_with("card")
}

impl Flow {
    /// The variables this flow collects as secrets.
    pub fn sensitive_vars(&self) -> std::collections::BTreeSet<&str> {
        self.nodes
            .values()
            .filter(|n| n.is_sensitive_collect())
            .filter_map(|n| match n {
                Node::Collect { var, .. } => Some(var.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl Node {
    /// A `collect` node whose digits are secret.
    pub fn is_sensitive_collect(&self) -> bool {
        match self {
            Node::Collect { var, sensitive, .. } => {
                sensitive.unwrap_or_else(|| is_sensitive_name(var))
            }
            _ => false,
        }
    }

    /// The nodes this node can lead to, with the key that names each.
    pub fn targets(&self) -> Vec<(&'static str, &str)> {
        match self {
            Node::Play { next, .. } | Node::Set { next, .. } | Node::Say { next, .. } => {
                vec![("next", next)]
            }
            Node::Menu {
                choices, default, ..
            } => {
                let mut t: Vec<(&'static str, &str)> =
                    choices.values().map(|n| ("choices", n.as_str())).collect();
                t.push(("default", default));
                t
            }
            Node::Collect { next, failure, .. } | Node::Lookup { next, failure, .. } => {
                vec![("next", next), ("failure", failure)]
            }
            Node::Hours { open, closed, .. } => vec![("open", open), ("closed", closed)],
            Node::Queue { .. } | Node::Hangup { .. } => vec![],
        }
    }

    /// Every prompt this node may play.
    pub fn prompts(&self) -> Vec<&str> {
        let list: Vec<&Vec<String>> = match self {
            Node::Play { prompts, .. } | Node::Hangup { prompts } => vec![prompts],
            Node::Menu {
                prompts, invalid, ..
            }
            | Node::Collect {
                prompts, invalid, ..
            } => vec![prompts, invalid],
            Node::Say { before, after, .. } => vec![before, after],
            _ => vec![],
        };
        list.into_iter().flatten().map(String::as_str).collect()
    }
}

impl Flow {
    /// The queues the flow can send callers to, with the node naming each.
    pub fn queues(&self) -> Vec<(&str, &str)> {
        self.nodes
            .iter()
            .filter_map(|(name, node)| match node {
                Node::Queue { queue } => Some((name.as_str(), queue.as_str())),
                Node::Set {
                    queue: Some(queue), ..
                } => Some((name.as_str(), queue.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Every prompt name the flow can play, for checking against the library.
    pub fn prompt_names(&self) -> Vec<(&str, &str)> {
        self.nodes
            .iter()
            .flat_map(|(name, node)| node.prompts().into_iter().map(move |p| (name.as_str(), p)))
            .collect()
    }

    /// Checks the graph; `key` is the flow's config key (`ivr.main`).
    pub fn check(&self, key: &str, issues: &mut Vec<ConfigIssue>) {
        let mut issue = |k: String, message: String| issues.push(ConfigIssue { key: k, message });
        if let Some(language) = &self.language {
            if !matches!(language.as_str(), "en" | "zh") {
                issue(
                    format!("{key}.language"),
                    format!("`{language}` has no prompt set: expected \"en\" or \"zh\""),
                );
            }
        }
        if !self.nodes.contains_key(&self.start) {
            issue(
                format!("{key}.start"),
                format!("node `{}` does not exist in this flow", self.start),
            );
        }
        for (name, node) in &self.nodes {
            let node_key = format!("{key}.nodes.{name}");
            for (field, target) in node.targets() {
                if !self.nodes.contains_key(target) {
                    issue(
                        format!("{node_key}.{field}"),
                        format!("node `{target}` does not exist in this flow"),
                    );
                }
            }
            match node {
                Node::Menu {
                    choices, retries, ..
                } => {
                    for key in choices.keys() {
                        if !(key.len() == 1 && is_dtmf(key.chars().next().unwrap_or(' '))) {
                            issue(
                                format!("{node_key}.choices"),
                                format!("`{key}` is not one key (0-9, *, #, A-D)"),
                            );
                        }
                    }
                    if *retries > 10 {
                        issue(format!("{node_key}.retries"), "at most 10".into());
                    }
                }
                Node::Collect {
                    min_digits,
                    max_digits,
                    terminator,
                    var,
                    pattern,
                    ..
                } => {
                    if let Some(p) = pattern {
                        if let Err(e) = regex::Regex::new(p) {
                            issue(
                                format!("{node_key}.pattern"),
                                format!("not a regular expression: {e}"),
                            );
                        }
                    }
                    if *max_digits == 0 || *max_digits > 64 || min_digits > max_digits {
                        issue(
                            format!("{node_key}.max_digits"),
                            "needs 1 <= min_digits <= max_digits <= 64".into(),
                        );
                    }
                    if !(terminator.is_empty()
                        || terminator.len() == 1
                            && is_dtmf(terminator.chars().next().unwrap_or(' ')))
                    {
                        issue(
                            format!("{node_key}.terminator"),
                            format!("`{terminator}` is not one key (or empty for none)"),
                        );
                    }
                    if !is_var_name(var) {
                        issue(
                            format!("{node_key}.var"),
                            format!("`{var}` is not a variable name (letters, digits, _)"),
                        );
                    }
                }
                Node::Hours {
                    schedule,
                    utc_offset,
                    holidays,
                    ..
                } => {
                    if let Err(e) =
                        crate::ivr::hours::Schedule::parse(schedule, utc_offset, holidays)
                    {
                        issue(format!("{node_key}.schedule"), e);
                    }
                }
                Node::Lookup { url, .. } if !url.starts_with("http://") => {
                    issue(
                        format!("{node_key}.url"),
                        format!("`{url}` must be an http:// URL"),
                    );
                }
                Node::Set { vars, .. } => {
                    for var in vars.keys() {
                        if !is_var_name(var) {
                            issue(
                                format!("{node_key}.vars"),
                                format!("`{var}` is not a variable name (letters, digits, _)"),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether `c` is a DTMF key.
pub fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Section for BTreeMap<String, Flow> {
    type Checked = BTreeMap<String, std::sync::Arc<Flow>>;

    fn check(&self, problems: &mut Problems) -> Self::Checked {
        for (name, flow) in self {
            let mut issues = Vec::new();
            flow.check(&format!("ivr.{name}"), &mut issues);
            for issue in issues {
                problems.add(issue.key, issue.message);
            }
        }
        self.iter()
            .map(|(name, flow)| (name.clone(), std::sync::Arc::new(flow.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::keys;
    use crate::config::test_support::load;

    #[test]
    fn every_flow_is_checked_under_its_own_key() {
        let err = load(
            "[ivr.a]\nstart = \"x\"\n[ivr.a.nodes.y]\ntype = \"hangup\"\n\
             [ivr.b]\nstart = \"p\"\n[ivr.b.nodes.p]\ntype = \"play\"\nprompts = []\nnext = \"gone\"\n",
        )
        .unwrap_err();
        assert_eq!(keys(err), ["ivr.a.start", "ivr.b.nodes.p.next"]);
        let s = load("[ivr.a]\nstart = \"y\"\n[ivr.a.nodes.y]\ntype = \"hangup\"\n").unwrap();
        assert_eq!(s.ivr["a"].start, "y");
    }
}
