//! `[queues.NAME]`: the queues callers wait in: how an agent is chosen, the
//! skills an agent needs and how they relax with the wait, where a caller goes
//! when the queue gives up (overflow), announcements, callback offers,
//! staffing, service level, recording and the post-call survey.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section, nonzero};

/// How a queue chooses among the agents free to take its next caller: the
/// router's own strategy, named as the config writes it.
pub use crate::acd::Strategy as QueueStrategy;

named_values! {
    QueueStrategy, "a queue strategy", [
        "longest-idle" => LongestIdle,
        "round-robin" => RoundRobin,
        "fewest-calls" => FewestCalls,
        "least-talk-time" => LeastTalkTime,
        "top-down" => TopDown,
        "random" => Random,
        "ring-all" => RingAll,
    ]
}

/// Where a caller goes when its queue gives up on it (`max_wait`, a full
/// queue, no agents).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Overflow {
    /// `"hangup"`: the caller hears `overflow_prompt` (if any) and is hung up on.
    #[default]
    Hangup,
    /// `"queue:NAME"`: the caller joins another queue, keeping the time waited.
    Queue(String),
    /// `"ivr:FLOW"` or `"ivr:FLOW:NODE"`: the caller enters an IVR flow, at
    /// its start or at `node`.
    Ivr { flow: String, node: Option<String> },
}

impl Overflow {
    /// Parses the config form; the error says what is expected.
    pub fn parse(text: &str) -> Result<Overflow, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "`{text}` is not an overflow target: expected \"hangup\", \"queue:NAME\", \"ivr:FLOW\" or \"ivr:FLOW:NODE\""
            )
        };
        if text == "hangup" {
            return Ok(Overflow::Hangup);
        }
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(bad());
        };
        let parts: Vec<&str> = rest.split(':').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match (kind.trim(), parts.as_slice()) {
            ("queue", [queue]) => Ok(Overflow::Queue(queue.to_string())),
            ("ivr", [flow]) => Ok(Overflow::Ivr {
                flow: flow.to_string(),
                node: None,
            }),
            ("ivr", [flow, node]) => Ok(Overflow::Ivr {
                flow: flow.to_string(),
                node: Some(node.to_string()),
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Overflow {
    /// The config form: "hangup", "queue:NAME", "ivr:FLOW[:NODE]".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overflow::Hangup => f.write_str("hangup"),
            Overflow::Queue(queue) => write!(f, "queue:{queue}"),
            Overflow::Ivr { flow, node: None } => write!(f, "ivr:{flow}"),
            Overflow::Ivr {
                flow,
                node: Some(node),
            } => write!(f, "ivr:{flow}:{node}"),
        }
    }
}

/// What a caller does on arrival when no agent serving the queue is logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhenNoAgents {
    /// Waits anyway (an agent may log in).
    #[default]
    Join,
    /// Goes to the queue's `overflow` at once.
    Overflow,
}

named_values! {
    WhenNoAgents, "a choice", [
        "join" => Join,
        "overflow" => Overflow,
    ]
}

/// A queue callers wait in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    /// Looped while callers wait; empty means `media.music_on_hold`.
    pub music_on_hold: String,
    pub strategy: QueueStrategy,
    pub priority: u32,
    pub required_skills: BTreeMap<String, u8>,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    pub overflow: String,
    pub overflow_prompt: String,
    pub max_len: usize,
    pub when_no_agents: WhenNoAgents,
    pub escalation: Vec<RawEscalationStep>,
    #[serde(with = "humantime_serde")]
    pub announce_position_every: Duration,
    pub announce_agent: bool,
    #[serde(with = "humantime_serde")]
    pub callback_after: Duration,
    /// A string ("1", "#"); a bare number is accepted too.
    pub callback_key: String,
    pub min_staffed: u32,
    pub service_level_seconds: u32,
    pub record: bool,
    /// The post-call survey's IVR flow (rulebook Q3); empty: none.
    pub survey: String,
    pub survey_target: f64,
    /// Longest talk with an agent of this queue; zero: no limit.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            music_on_hold: String::new(),
            strategy: QueueStrategy::LongestIdle,
            priority: 0,
            required_skills: BTreeMap::new(),
            max_wait: Duration::ZERO,
            overflow: "hangup".into(),
            overflow_prompt: "busy".into(),
            max_len: 0,
            when_no_agents: WhenNoAgents::Join,
            escalation: Vec::new(),
            announce_position_every: Duration::from_secs(60),
            announce_agent: true,
            callback_after: Duration::from_secs(60),
            callback_key: "1".into(),
            min_staffed: 0,
            service_level_seconds: 20,
            record: true,
            survey: String::new(),
            survey_target: 0.96,
            max_duration: Duration::ZERO,
        }
    }
}

/// `[[queues.NAME.escalation]]`: how the skill requirement relaxes with the wait.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalationStep {
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    #[serde(default)]
    pub min_proficiency: Option<u8>,
    #[serde(default)]
    pub add_skills: Vec<String>,
}

/// A queue callers wait in, with every option resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    /// Prompt name of the queue's music on hold.
    pub music_on_hold: String,
    /// How the next agent is chosen.
    pub strategy: QueueStrategy,
    /// Between queues, for callers of equal caller priority: higher first.
    pub priority: u32,
    /// Skill → minimum proficiency (1-10) an agent needs; every skill is held
    /// by at least one agent.
    pub required_skills: BTreeMap<String, u8>,
    /// Longest wait before `overflow`; `None` = no limit.
    pub max_wait: Option<Duration>,
    /// Where a caller goes after `max_wait`, from a full queue, or (with
    /// `when_no_agents = Overflow`) when no agent is logged in. A queue
    /// target exists, differs from this queue, and no chain of queue
    /// overflows loops; an IVR target's flow and node exist.
    pub overflow: Overflow,
    /// Played before a hang-up overflow and to a caller turned away from a
    /// full queue; `None` = nothing. Checked against the prompt library.
    pub overflow_prompt: Option<String>,
    /// Most callers waiting at once; `None` = unlimited.
    pub max_len: Option<usize>,
    /// What a caller does when no agent serving the queue is logged in.
    pub when_no_agents: WhenNoAgents,
    /// Skill escalation, sorted by `after`.
    pub escalation: Vec<EscalationStep>,
    /// Period of the position / estimated-wait announcement; `None` = off.
    pub announce_position_every: Option<Duration>,
    /// The caller hears "agent number N will serve you" when an agent answers.
    pub announce_agent: bool,
    /// Wait after which the caller is offered a callback (rulebook C3);
    /// `None` = never offered.
    pub callback_after: Option<Duration>,
    /// Key that accepts the callback offer: 0-9, * or #.
    pub callback_key: char,
    /// Agents the queue keeps logged in at a shift handover (rulebook C2);
    /// 0 = off. Never more than the agents serving the queue.
    pub min_staffed: u32,
    /// Answered within this wait counts toward the service level.
    pub service_level: Duration,
    /// Its bridged calls are recorded (when `recording.enabled`).
    pub record: bool,
    /// IVR flow the caller runs when the agent hangs up first (rulebook
    /// Q3); `None` = no survey. The flow exists.
    pub survey: Option<String>,
    /// Share of survey scores of 4 or 5 the queue aims at.
    pub survey_target: Ratio,
    /// Longest talk from an agent's answer: then the call ends (reason
    /// `max_duration`); `None` = no limit.
    pub max_duration: Option<Duration>,
}

/// A share between 0 and 1, checked finite at load (so it compares as a
/// total order).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(pub f64);

impl Eq for Ratio {}

impl Queue {
    /// A queue with every option at its documented default.
    pub fn new(name: &str, music_on_hold: &str) -> Queue {
        let raw = RawQueue::default();
        Queue {
            name: name.to_string(),
            music_on_hold: music_on_hold.to_string(),
            strategy: raw.strategy,
            priority: raw.priority,
            required_skills: raw.required_skills,
            max_wait: nonzero(raw.max_wait),
            overflow: Overflow::Hangup,
            overflow_prompt: Some(raw.overflow_prompt),
            max_len: (raw.max_len > 0).then_some(raw.max_len),
            when_no_agents: raw.when_no_agents,
            escalation: Vec::new(),
            announce_position_every: nonzero(raw.announce_position_every),
            announce_agent: raw.announce_agent,
            callback_after: nonzero(raw.callback_after),
            callback_key: '1',
            min_staffed: raw.min_staffed,
            service_level: Duration::from_secs(u64::from(raw.service_level_seconds)),
            record: raw.record,
            survey: None,
            survey_target: Ratio(raw.survey_target),
            max_duration: nonzero(raw.max_duration),
        }
    }
}

/// One step of a queue's skill escalation: from `after` of waiting on, the
/// requirement relaxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationStep {
    /// Time the caller has waited; > 0.
    pub after: Duration,
    /// Every required skill is then satisfied at this proficiency (1-10).
    pub min_proficiency: Option<u8>,
    /// Agents holding any of these skills (at any proficiency) may take the
    /// call too. Each is held by at least one agent.
    pub add_skills: Vec<String>,
}

impl Section for BTreeMap<String, RawQueue> {
    /// Every queue; one whose `music_on_hold` is empty takes
    /// `media.music_on_hold` (filled in by `cross`).
    type Checked = BTreeMap<String, Queue>;

    fn check(&self, problems: &mut Problems) -> BTreeMap<String, Queue> {
        let queues: BTreeMap<String, Queue> = self
            .iter()
            .map(|(name, raw)| (name.clone(), raw.check(name, problems)))
            .collect();
        for chain in overflow_loops(&queues) {
            let first = &chain[0];
            problems.add(
                format!("queues.{first}.overflow"),
                format!(
                    "the overflow chain {} loops: its callers would be passed round forever",
                    chain.join(" → ")
                ),
            );
        }
        queues
    }
}

impl RawQueue {
    fn check(&self, name: &str, problems: &mut Problems) -> Queue {
        let key = format!("queues.{name}");
        for (skill, level) in &self.required_skills {
            if !(1..=10).contains(level) {
                problems.add(
                    format!("{key}.required_skills.{skill}"),
                    format!("proficiency {level} is out of range: expected 1 to 10"),
                );
            }
        }
        let overflow = match Overflow::parse(&self.overflow) {
            Ok(overflow) => overflow,
            Err(message) => {
                problems.add(format!("{key}.overflow"), message);
                Overflow::Hangup
            }
        };
        if let Overflow::Queue(target) = &overflow
            && target == name
        {
            problems.add(
                format!("{key}.overflow"),
                format!("`queue:{target}` is this queue: overflow to a different queue"),
            );
        }
        let mut escalation = Vec::new();
        for (i, step) in self.escalation.iter().enumerate() {
            let step_key = format!("{key}.escalation[{i}]");
            if step.after.is_zero() {
                problems.add(
                    format!("{step_key}.after"),
                    "must be more than 0s (the wait after which the step applies)",
                );
            }
            if let Some(level) = step.min_proficiency
                && !(1..=10).contains(&level)
            {
                problems.add(
                    format!("{step_key}.min_proficiency"),
                    format!("proficiency {level} is out of range: expected 1 to 10"),
                );
            }
            if step.min_proficiency.is_none() && step.add_skills.is_empty() {
                problems.add(
                    step_key.clone(),
                    "changes nothing: give it `min_proficiency`, `add_skills` or both",
                );
            }
            escalation.push(EscalationStep {
                after: step.after,
                min_proficiency: step.min_proficiency,
                add_skills: step.add_skills.clone(),
            });
        }
        escalation.sort_by_key(|step| step.after);
        let callback_key = self.callback_key.trim();
        let mut keys = callback_key.chars();
        let callback_key = match (keys.next(), keys.next()) {
            (Some(c), None) if c.is_ascii_digit() || matches!(c, '*' | '#') => c,
            _ => {
                problems.add(
                    format!("{key}.callback_key"),
                    format!(
                        "`{}` is not one key: expected 0-9, * or #",
                        self.callback_key
                    ),
                );
                '1'
            }
        };
        if !(1..=3600).contains(&self.service_level_seconds) {
            problems.add(
                format!("{key}.service_level_seconds"),
                format!(
                    "{} is out of range: a service-level target is 1 to 3600 seconds",
                    self.service_level_seconds
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.survey_target) {
            problems.add(
                format!("{key}.survey_target"),
                format!(
                    "{} is out of range: a share of satisfied callers is 0 to 1 (0.96 = 96 %)",
                    self.survey_target
                ),
            );
        }
        let survey = self.survey.trim();
        let overflow_prompt = self.overflow_prompt.trim();
        Queue {
            name: name.to_string(),
            music_on_hold: self.music_on_hold.trim().to_string(),
            strategy: self.strategy,
            priority: self.priority,
            required_skills: self.required_skills.clone(),
            max_wait: nonzero(self.max_wait),
            overflow,
            overflow_prompt: (!overflow_prompt.is_empty()).then(|| overflow_prompt.to_string()),
            max_len: (self.max_len > 0).then_some(self.max_len),
            when_no_agents: self.when_no_agents,
            escalation,
            announce_position_every: nonzero(self.announce_position_every),
            announce_agent: self.announce_agent,
            callback_after: nonzero(self.callback_after),
            callback_key,
            min_staffed: self.min_staffed,
            service_level: Duration::from_secs(u64::from(self.service_level_seconds)),
            record: self.record,
            survey: (!survey.is_empty()).then(|| survey.to_string()),
            survey_target: Ratio(self.survey_target),
            max_duration: nonzero(self.max_duration),
        }
    }
}

/// Every loop of queue-to-queue overflows, each once, as the chain of queue
/// names from its first member back to it (`a → b → a`).
fn overflow_loops(queues: &BTreeMap<String, Queue>) -> Vec<Vec<String>> {
    let next = |name: &str| match queues.get(name).map(|q| &q.overflow) {
        Some(Overflow::Queue(target)) if target != name && queues.contains_key(target) => {
            Some(target.as_str())
        }
        _ => None,
    };
    let mut done = std::collections::BTreeSet::new();
    let mut loops = Vec::new();
    for start in queues.keys() {
        let mut path: Vec<&str> = Vec::new();
        let mut at = Some(start.as_str());
        while let Some(name) = at {
            if done.contains(name) {
                break;
            }
            if let Some(pos) = path.iter().position(|p| *p == name) {
                let mut chain: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
                chain.push(name.to_string());
                loops.push(chain);
                break;
            }
            path.push(name);
            at = next(name);
        }
        done.extend(path);
    }
    loops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;

    #[test]
    fn queue_options_take_their_documented_defaults() {
        let s = load("[queues.q]\n").unwrap();
        let q = &s.queues["q"];
        assert_eq!(q.name, "q");
        assert_eq!(q.music_on_hold, "moh/default");
        assert_eq!(q.strategy, QueueStrategy::LongestIdle);
        assert_eq!(q.priority, 0);
        assert!(q.required_skills.is_empty());
        assert_eq!(q.max_wait, None);
        assert_eq!(q.overflow, Overflow::Hangup);
        assert_eq!(q.overflow_prompt.as_deref(), Some("busy"));
        assert_eq!(q.max_len, None);
        assert_eq!(q.when_no_agents, WhenNoAgents::Join);
        assert!(q.escalation.is_empty());
        assert_eq!(q.announce_position_every, Some(Duration::from_secs(60)));
        assert!(q.announce_agent);
        assert_eq!(q.callback_after, Some(Duration::from_secs(60)));
        assert_eq!(q.callback_key, '1');
        assert_eq!(q.min_staffed, 0);
        assert_eq!(*q, Queue::new("q", "moh/default"));
    }

    #[test]
    fn queue_options_accept_other_valid_values() {
        let s = load_queues(
            r##"
[queues.q]
music_on_hold = "moh/q"
strategy = "least-talk-time"
priority = 5
required_skills = { general = 3, sales = 10 }
max_wait = "2m"
overflow = "ivr:main:menu"
overflow_prompt = ""
max_len = 20
when_no_agents = "overflow"
announce_position_every = "0s"
announce_agent = false
callback_after = "0s"
callback_key = "#"
min_staffed = 1

[[queues.q.escalation]]
after = "2m"
add_skills = ["sales"]

[[queues.q.escalation]]
after = "30s"
min_proficiency = 1

[ivr.main]
start = "menu"
[ivr.main.nodes.menu]
type = "hangup"
"##,
        )
        .unwrap();
        let q = &s.queues["q"];
        assert_eq!(q.music_on_hold, "moh/q");
        assert_eq!(q.strategy, QueueStrategy::LeastTalkTime);
        assert_eq!(q.priority, 5);
        assert_eq!(
            q.required_skills,
            BTreeMap::from([("general".to_string(), 3), ("sales".to_string(), 10)])
        );
        assert_eq!(q.max_wait, Some(Duration::from_secs(120)));
        assert_eq!(
            q.overflow,
            Overflow::Ivr {
                flow: "main".into(),
                node: Some("menu".into())
            }
        );
        assert_eq!(q.overflow_prompt, None);
        assert_eq!(q.max_len, Some(20));
        assert_eq!(q.when_no_agents, WhenNoAgents::Overflow);
        assert_eq!(
            q.escalation,
            vec![
                EscalationStep {
                    after: Duration::from_secs(30),
                    min_proficiency: Some(1),
                    add_skills: vec![],
                },
                EscalationStep {
                    after: Duration::from_secs(120),
                    min_proficiency: None,
                    add_skills: vec!["sales".into()],
                },
            ],
            "steps are sorted by `after`"
        );
        assert_eq!(q.announce_position_every, None);
        assert!(!q.announce_agent);
        assert_eq!(q.callback_after, None);
        assert_eq!(q.callback_key, '#');
        assert_eq!(q.min_staffed, 1);
    }

    #[test]
    fn every_strategy_and_overflow_form_is_read() {
        for (text, strategy) in [
            ("longest-idle", QueueStrategy::LongestIdle),
            ("round-robin", QueueStrategy::RoundRobin),
            ("fewest-calls", QueueStrategy::FewestCalls),
            ("least-talk-time", QueueStrategy::LeastTalkTime),
            ("top-down", QueueStrategy::TopDown),
            ("random", QueueStrategy::Random),
            ("ring-all", QueueStrategy::RingAll),
        ] {
            let s = load(&format!("[queues.q]\nstrategy = \"{text}\"\n")).unwrap();
            assert_eq!(s.queues["q"].strategy, strategy);
            assert_eq!(strategy.to_string(), text);
        }
        let s = load_queues(
            r#"
[queues.a]
overflow = "hangup"
[queues.b]
overflow = "queue:a"
[queues.c]
overflow = "ivr:main"
[ivr.main]
start = "bye"
[ivr.main.nodes.bye]
type = "hangup"
"#,
        )
        .unwrap();
        assert_eq!(s.queues["a"].overflow, Overflow::Hangup);
        assert_eq!(s.queues["b"].overflow, Overflow::Queue("a".into()));
        assert_eq!(
            s.queues["c"].overflow,
            Overflow::Ivr {
                flow: "main".into(),
                node: None
            }
        );
        for text in ["hangup", "queue:a", "ivr:main", "ivr:main:bye"] {
            assert_eq!(Overflow::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn a_wrong_strategy_is_named_with_the_file() {
        let err = load("[queues.support]\nstrategy = \"fastest\"\n").unwrap_err();
        assert_issue(&err, "queues.support.strategy");
        assert!(err.to_string().contains("longest-idle"), "{err}");
        assert_eq!(err.issues().len(), 1);
    }

    #[test]
    fn bad_queue_durations_and_numbers_are_named() {
        let err = load(
            "[queues.q]\nmax_wait = \"forever\"\ncallback_after = \"5\"\nmax_len = -1\npriority = \"high\"\nwhen_no_agents = \"wait\"\n",
        )
        .unwrap_err();
        let keys = keys(err);
        for key in [
            "queues.q.max_wait",
            "queues.q.callback_after",
            "queues.q.max_len",
            "queues.q.priority",
            "queues.q.when_no_agents",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing in {keys:?}");
        }
        assert_eq!(keys.len(), 5, "{keys:?}");
    }

    #[test]
    fn overflow_targets_are_checked() {
        for (overflow, expect) in [
            ("voicemail", "not an overflow target"),
            ("queue:", "not an overflow target"),
            ("ivr:main:bye:again", "not an overflow target"),
            ("queue:nowhere", "`nowhere` is not a queue"),
            ("queue:support", "is this queue"),
            ("ivr:nope", "`nope` is not an IVR flow"),
            (
                "ivr:main:ghost",
                "node `ghost` does not exist in IVR flow `main`",
            ),
        ] {
            let err = load(&format!(
                "[queues.support]\noverflow = \"{overflow}\"\n[ivr.main]\nstart = \"bye\"\n[ivr.main.nodes.bye]\ntype = \"hangup\"\n"
            ))
            .unwrap_err();
            assert_eq!(err.issues().len(), 1, "{overflow}: {err}");
            assert_issue(&err, "queues.support.overflow");
            assert!(err.to_string().contains(expect), "{overflow}: {err}");
        }
    }

    #[test]
    fn a_loop_of_queue_overflows_is_named_once() {
        let err = load("[queues.a]\noverflow = \"queue:b\"\n[queues.b]\noverflow = \"queue:a\"\n")
            .unwrap_err();
        assert_eq!(issue_keys(&err), vec!["queues.a.overflow"]);
        assert!(err.to_string().contains("a → b → a"), "{err}");

        // A queue leading into a loop is not part of it.
        let err = load(
            "[queues.d]\noverflow = \"queue:b\"\n[queues.b]\noverflow = \"queue:c\"\n[queues.c]\noverflow = \"queue:e\"\n[queues.e]\noverflow = \"queue:b\"\n",
        )
        .unwrap_err();
        assert_eq!(err.issues().len(), 1, "{err}");
        assert_issue(&err, "queues.b.overflow");
        assert!(err.to_string().contains("b → c → e → b"), "{err}");

        // A chain that ends is fine, however long.
        let s = load(
            "[queues.a]\noverflow = \"queue:b\"\n[queues.b]\noverflow = \"queue:c\"\n[queues.c]\n",
        )
        .unwrap();
        assert_eq!(s.queues["a"].overflow, Overflow::Queue("b".into()));
    }

    #[test]
    fn required_skills_are_checked() {
        let err =
            load_queues("[queues.q]\nrequired_skills = { general = 0, sales = 11, french = 5 }\n")
                .unwrap_err();
        assert_eq!(
            issue_keys(&err),
            vec![
                "queues.q.required_skills.french",
                "queues.q.required_skills.general",
                "queues.q.required_skills.sales",
            ]
        );
        assert!(err.to_string().contains("held by no agent"), "{err}");
    }

    #[test]
    fn escalation_steps_are_checked() {
        let err = load_queues(
            r#"
[queues.q]
[[queues.q.escalation]]
after = "0s"
min_proficiency = 2
[[queues.q.escalation]]
after = "1m"
min_proficiency = 11
[[queues.q.escalation]]
after = "2m"
[[queues.q.escalation]]
after = "3m"
add_skills = ["general", "french"]
"#,
        )
        .unwrap_err();
        assert_eq!(
            keys(err),
            vec![
                "queues.q.escalation[0].after",
                "queues.q.escalation[1].min_proficiency",
                "queues.q.escalation[2]",
                "queues.q.escalation[3].add_skills[1]",
            ]
        );
        let err =
            load_queues("[queues.q]\n[[queues.q.escalation]]\nmin_proficiency = 2\n").unwrap_err();
        assert!(keys(err)[0].starts_with("queues.q.escalation"));
        let err = load_queues(
            "[queues.q]\n[[queues.q.escalation]]\nafter = \"1m\"\nadd_skill = [\"sales\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("add_skill"), "{err}");
    }

    #[test]
    fn callback_key_is_one_key() {
        for key in ["\"12\"", "\"A\"", "\"\"", "10"] {
            let err = load(&format!("[queues.q]\ncallback_key = {key}\n")).unwrap_err();
            assert_eq!(keys(err), vec!["queues.q.callback_key"], "{key}");
        }
        for (key, c) in [("\"*\"", '*'), ("\"0\"", '0'), ("5", '5')] {
            let s = load(&format!("[queues.q]\ncallback_key = {key}\n")).unwrap();
            assert_eq!(s.queues["q"].callback_key, c, "{key}");
        }
    }

    #[test]
    fn the_demo_queues_run_on_the_defaults() {
        let s = Settings::from_toml(EMBEDDED_DEFAULT, "default", &BTreeMap::new()).unwrap();
        let support = Queue {
            survey: Some("survey".into()),
            ..Queue::new("support", "moh/default")
        };
        assert_eq!(s.queues["support"], support);
        assert_eq!(s.queues["sales"], Queue::new("sales", "moh/default"));
        assert_eq!(s.acd, AcdSettings::default());
    }

    const SURVEY_FLOW: &str = "[ivr.rate]\nstart = \"rate\"\n[ivr.rate.nodes.rate]\n\
        type = \"collect\"\nprompts = [\"survey\"]\nvar = \"survey_score\"\n\
        max_digits = 1\npattern = \"[1-5]\"\nnext = \"bye\"\nfailure = \"bye\"\n\
        [ivr.rate.nodes.bye]\ntype = \"hangup\"\n";

    #[test]
    fn a_queue_survey_names_a_flow_and_its_target() {
        let s = load(&format!(
            "[queues.q]\nsurvey = \"rate\"\nsurvey_target = 0.9\n{SURVEY_FLOW}"
        ))
        .unwrap();
        assert_eq!(s.queues["q"].survey.as_deref(), Some("rate"));
        assert_eq!(s.queues["q"].survey_target, Ratio(0.9));
        let s = load("[queues.q]\n").unwrap();
        assert_eq!(s.queues["q"].survey, None);
        assert_eq!(s.queues["q"].survey_target, Ratio(0.96));
    }

    #[test]
    fn a_survey_target_outside_zero_to_one_is_refused_naming_the_key() {
        for bad in ["1.5", "-0.1", "nan"] {
            let err = load(&format!(
                "[queues.q]\nsurvey = \"rate\"\nsurvey_target = {bad}\n{SURVEY_FLOW}"
            ))
            .unwrap_err();
            assert_eq!(keys(err), vec!["queues.q.survey_target"], "{bad}");
        }
        for good in ["0", "1", "0.5"] {
            load(&format!("[queues.q]\nsurvey_target = {good}\n")).unwrap();
        }
    }
}
