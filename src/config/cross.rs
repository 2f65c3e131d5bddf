//! What one section says about another, checked in one place.
//!
//! The names a section gives must exist in the section they name (a queue
//! named by a number, a flow by a queue's overflow, an agent by an API
//! token, a skill by a queue); the values one section takes from another are
//! filled in here (a queue's music on hold from `[media]`, a supervisor's
//! scope from its phone account, each trunk's ceilings into `[limits]`). The
//! prompts named anywhere are checked once the prompt library is loaded
//! ([`check_prompts`]), through [`PromptCatalog`] so that `config` needs no
//! media code.

use std::collections::BTreeSet;

use super::{ApiRole, ConfigIssue, NumberTarget, Overflow, Problems, RawConfig, Settings};

/// Prompts the queues play to callers (the agent's number, position and
/// estimated wait, the callback offer, the overflow default), besides the
/// digit prompts `digit_0`..`digit_9`; they must exist when a queue is
/// configured.
pub const QUEUE_PROMPTS: &[&str] = &[
    "agent_number",
    "will_serve_you",
    "position",
    "estimated_wait",
    "minutes",
    "thank_you_for_waiting",
    "leave_number",
    "callback_recorded",
    "callback_confirm",
    "callback_confirm_keys",
    "callback_number_refused",
    "busy",
];

/// What a prompt library holds, as far as the checks need to know.
pub trait PromptCatalog {
    /// Whether `name` can be played in `language` (falling back to English).
    fn has_localized(&self, language: &str, name: &str) -> bool;
    /// Whether the prompt `name` (e.g. "moh/default") exists as named.
    fn has(&self, name: &str) -> bool;
}

/// Checks every name one section gives another and fills in what one takes
/// from another; returns the problems found.
pub(super) fn check(raw: &RawConfig, settings: &mut Settings) -> Problems {
    let mut problems = Problems::default();
    let p = &mut problems;
    names_in_trunks(raw, p);
    names_in_numbers(settings, p);
    names_in_agents(raw, settings, p);
    names_in_flows(settings, p);
    names_in_queues(raw, settings, p);
    names_in_api(raw, settings, p);
    names_in_monitor(raw, settings, p);
    inherit(raw, settings);
    problems
}

fn not_a_queue(queue: &str) -> String {
    format!("`{queue}` is not a queue (not under [queues])")
}

fn not_a_flow(flow: &str) -> String {
    format!("`{flow}` is not an IVR flow (not under [ivr])")
}

fn held_by_nobody(skill: &str) -> String {
    format!(
        "skill `{skill}` is held by no agent (in no [agents.*] skills), so no agent could take these calls"
    )
}

/// The hotline numbers a trunk may dial.
fn names_in_trunks(raw: &RawConfig, problems: &mut Problems) {
    for (name, trunk) in &raw.trunks {
        for (i, number) in trunk.numbers.iter().enumerate() {
            if !raw.numbers.contains_key(number) {
                problems.add(
                    format!("trunks.{name}.numbers[{i}]"),
                    format!("`{number}` is not a hotline number (not under [numbers])"),
                );
            }
        }
    }
}

/// The flow or queue each number sends its callers to.
fn names_in_numbers(settings: &Settings, problems: &mut Problems) {
    for (number, n) in &settings.numbers {
        match &n.target {
            NumberTarget::Ivr(flow) if !settings.ivr.contains_key(flow) => {
                problems.add(format!("numbers.{number}.ivr"), not_a_flow(flow));
            }
            NumberTarget::Queue { queue, .. } if !settings.queues.contains_key(queue) => {
                problems.add(format!("numbers.{number}.queue"), not_a_queue(queue));
            }
            _ => {}
        }
    }
}

/// The queues an agent serves; an agent id that is also a number.
fn names_in_agents(raw: &RawConfig, settings: &Settings, problems: &mut Problems) {
    for (id, agent) in &settings.agents {
        if raw.numbers.contains_key(id) {
            problems.add(
                format!("agents.{id}"),
                format!("`{id}` is also a hotline number; agent ids and numbers must differ"),
            );
        }
        for (i, queue) in agent.queues.iter().enumerate() {
            if !settings.queues.contains_key(queue) {
                problems.add(format!("agents.{id}.queues[{i}]"), not_a_queue(queue));
            }
        }
    }
}

/// The queues a flow hands its callers to.
fn names_in_flows(settings: &Settings, problems: &mut Problems) {
    for (name, flow) in &settings.ivr {
        for (node, queue) in flow.queues() {
            if !settings.queues.contains_key(queue) {
                problems.add(format!("ivr.{name}.nodes.{node}.queue"), not_a_queue(queue));
            }
        }
    }
}

/// The skills a queue asks for, its overflow target, its survey flow, and
/// the agents it keeps staffed.
fn names_in_queues(raw: &RawConfig, settings: &Settings, problems: &mut Problems) {
    let held: BTreeSet<&str> = settings
        .agents
        .values()
        .flat_map(|a| a.skills.keys().map(String::as_str))
        .collect();
    for (name, queue) in &settings.queues {
        let key = format!("queues.{name}");
        for skill in queue.required_skills.keys() {
            if !held.contains(skill.as_str()) {
                problems.add(
                    format!("{key}.required_skills.{skill}"),
                    held_by_nobody(skill),
                );
            }
        }
        match &queue.overflow {
            Overflow::Queue(target) if target != name && !settings.queues.contains_key(target) => {
                problems.add(format!("{key}.overflow"), not_a_queue(target));
            }
            Overflow::Ivr { flow, node } => match settings.ivr.get(flow) {
                None => problems.add(format!("{key}.overflow"), not_a_flow(flow)),
                Some(f) => {
                    if let Some(node) = node.as_ref().filter(|n| !f.nodes.contains_key(*n)) {
                        problems.add(
                            format!("{key}.overflow"),
                            format!("node `{node}` does not exist in IVR flow `{flow}`"),
                        );
                    }
                }
            },
            _ => {}
        }
        // Indexed as written: the checked steps are sorted by `after`.
        let steps = raw.queues.get(name).map(|q| q.escalation.as_slice());
        for (i, step) in steps.unwrap_or_default().iter().enumerate() {
            for (j, skill) in step.add_skills.iter().enumerate() {
                if !held.contains(skill.as_str()) {
                    problems.add(
                        format!("{key}.escalation[{i}].add_skills[{j}]"),
                        held_by_nobody(skill),
                    );
                }
            }
        }
        let serving = settings
            .agents
            .values()
            .filter(|a| a.queues.iter().any(|q| q == name))
            .count();
        if queue.min_staffed as usize > serving {
            problems.add(
                format!("{key}.min_staffed"),
                format!(
                    "{} is more than the {serving} agent(s) serving this queue (agents list it in `queues`)",
                    queue.min_staffed
                ),
            );
        }
        if let Some(survey) = &queue.survey
            && !settings.ivr.contains_key(survey)
        {
            problems.add(format!("{key}.survey"), not_a_flow(survey));
        }
    }
}

/// The agent, queues and phones an API token is bound to (a token whose
/// role is unknown binds nothing).
fn names_in_api(raw: &RawConfig, settings: &Settings, problems: &mut Problems) {
    for (name, token) in &raw.api.tokens {
        let key = format!("api.tokens.{name}");
        let Some(role) = ApiRole::from_config(&token.role) else {
            continue;
        };
        let agent = token.agent.as_str();
        if role == ApiRole::Agent && !agent.is_empty() && !settings.agents.contains_key(agent) {
            problems.add(
                format!("{key}.agent"),
                format!("`{agent}` is not an agent (not under [agents])"),
            );
        }
        for (i, queue) in token.queues.iter().enumerate() {
            if !settings.queues.contains_key(queue) {
                problems.add(format!("{key}.queues[{i}]"), not_a_queue(queue));
            }
        }
        for (i, phone) in token.phones.iter().enumerate() {
            if !settings.agents.contains_key(phone) {
                problems.add(
                    format!("{key}.phones[{i}]"),
                    format!("`{phone}` is not a phone account (not under [agents])"),
                );
            }
        }
    }
}

/// The supervisors' phone accounts and the queues in their scopes.
fn names_in_monitor(raw: &RawConfig, settings: &Settings, problems: &mut Problems) {
    for (phone, scope) in &raw.monitor.queues {
        for (i, queue) in scope.iter().enumerate() {
            if !settings.queues.contains_key(queue) {
                problems.add(format!("monitor.queues.{phone}[{i}]"), not_a_queue(queue));
            }
        }
    }
    for (i, account) in raw.monitor.supervisors.iter().enumerate() {
        if !settings.agents.contains_key(account.trim()) {
            problems.add(
                format!("monitor.supervisors[{i}]"),
                format!("{account:?} is not a phone account: add it under [agents.\"{account}\"]"),
            );
        }
    }
}

/// Fills in what one section takes from another.
fn inherit(raw: &RawConfig, settings: &mut Settings) {
    for queue in settings.queues.values_mut() {
        if queue.music_on_hold.is_empty() {
            queue.music_on_hold = settings.media.music_on_hold.clone();
        }
    }
    for (phone, scope) in &mut settings.monitor.scopes {
        if !raw.monitor.queues.contains_key(phone) {
            *scope = settings
                .agents
                .get(phone)
                .map(|a| a.queues.clone())
                .unwrap_or_default();
        }
    }
    settings.limits.trunk_max_calls = raw
        .trunks
        .iter()
        .filter(|(_, t)| t.max_calls > 0)
        .map(|(name, t)| (name.clone(), t.max_calls))
        .collect();
    settings.limits.trunk_invite_rate = raw
        .trunks
        .iter()
        .filter(|(_, t)| t.invite_rate.is_finite() && t.invite_rate > 0.0)
        .map(|(name, t)| (name.clone(), t.invite_rate))
        .collect();
}

/// Checks that every prompt a flow, a number, a queue, the blocklist or the
/// music on hold names is in `catalog`, and, when queues are configured, the
/// prompts they always play ([`QUEUE_PROMPTS`], the digits); each problem
/// names its config key.
pub fn check_prompts(settings: &Settings, catalog: &impl PromptCatalog) -> Vec<ConfigIssue> {
    let dir = settings.media.prompts.display();
    let mut problems = Problems::default();
    let mut need = |key: String, language: &str, name: &str| {
        if !catalog.has_localized(language, name) {
            problems.add(
                key,
                format!("prompt `{name}` is not in {dir} (for language {language})"),
            );
        }
    };
    let default_language = settings.media.language.as_str();
    for (flow_name, flow) in &settings.ivr {
        let language = flow.language.as_deref().unwrap_or(default_language);
        for (node, prompt) in flow.prompt_names() {
            need(format!("ivr.{flow_name}.nodes.{node}"), language, prompt);
        }
        // `say` nodes read values with the digit prompts.
        for digit in crate::ivr::say_prompts("0123456789.") {
            need(format!("ivr.{flow_name}"), language, &digit);
        }
    }
    for (number, n) in &settings.numbers {
        if let NumberTarget::Queue {
            greeting: Some(greeting),
            ..
        } = &n.target
        {
            need(
                format!("numbers.{number}.greeting"),
                default_language,
                greeting,
            );
        }
    }
    if settings.block_action == super::BlockAction::Prompt {
        need("blocklist.action".into(), default_language, "blocked");
    }
    for (name, queue) in &settings.queues {
        if let Some(prompt) = &queue.overflow_prompt {
            need(
                format!("queues.{name}.overflow_prompt"),
                default_language,
                prompt,
            );
        }
    }
    if !settings.queues.is_empty() {
        let missing: Vec<String> = QUEUE_PROMPTS
            .iter()
            .map(|name| name.to_string())
            .chain(crate::ivr::say_prompts("0123456789"))
            .filter(|name| !catalog.has_localized(default_language, name))
            .collect();
        if !missing.is_empty() {
            problems.add(
                "media.prompts",
                format!(
                    "{dir} lacks prompts the queues play to callers (for language {default_language}): {}",
                    missing.join(", ")
                ),
            );
        }
    }
    for (name, queue) in &settings.queues {
        if !catalog.has(&queue.music_on_hold) {
            problems.add(
                format!("queues.{name}.music_on_hold"),
                format!("`{}` is not in {dir}", queue.music_on_hold),
            );
        }
    }
    if !catalog.has(&settings.media.music_on_hold) {
        problems.add(
            "media.music_on_hold",
            format!("`{}` is not in {dir}", settings.media.music_on_hold),
        );
    }
    problems.into_issues()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn a_number_needs_an_existing_flow_and_flows_are_checked() {
        let err = load(
            "[numbers.\"7\"]\nivr = \"nope\"\n[ivr.x]\nstart = \"a\"\n[ivr.x.nodes.a]\ntype = \"play\"\nprompts = []\nnext = \"ghost\"\n",
        )
        .unwrap_err();
        let keys = keys(err);
        assert!(keys.contains(&"numbers.7.ivr".to_string()), "{keys:?}");
        assert!(keys.contains(&"ivr.x.nodes.a.next".to_string()), "{keys:?}");
    }

    #[test]
    fn queues_named_by_numbers_and_flows_must_exist() {
        let err = load(
            "[numbers.\"7\"]\nqueue = \"nope\"\n[numbers.\"8\"]\nivr = \"x\"\n[ivr.x]\nstart = \"q\"\n[ivr.x.nodes.q]\ntype = \"queue\"\nqueue = \"ghost\"\n",
        )
        .unwrap_err();
        let keys = keys(err);
        assert!(keys.contains(&"numbers.7.queue".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"ivr.x.nodes.q.queue".to_string()),
            "{keys:?}"
        );
        let s = load("[media]\nmusic_on_hold = \"moh/a\"\n[queues.s]\n[queues.t]\nmusic_on_hold = \"moh/b\"\n").unwrap();
        assert_eq!(s.queues["s"].music_on_hold, "moh/a");
        assert_eq!(s.queues["t"].music_on_hold, "moh/b");
    }

    #[test]
    fn agent_queues_and_skills_are_checked() {
        let err = load(
            "[queues.q]\n[agents.\"9\"]\npassword = \"p\"\nqueues = [\"q\", \"nope\"]\nskills = { billing = 11 }\n",
        )
        .unwrap_err();
        let keys = keys(err);
        assert!(keys.contains(&"agents.9.queues[1]".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"agents.9.skills.billing".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn supervision_scopes_and_phones_are_checked() {
        let base = "[queues.support]\n[queues.sales]\n\
            [agents.\"2001\"]\npassword = \"x\"\nqueues = [\"sales\"]\n\
            [agents.\"2002\"]\npassword = \"y\"\n";
        let s = load(&format!(
            "{base}[monitor]\nsupervisors = [\"2001\", \"2002\"]\nqueues = {{ \"2002\" = [\"support\"] }}\n"
        ))
        .unwrap();
        let queues = |q: &[&str]| q.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            s.monitor.may_monitor("2001", &queues(&["sales"])),
            "its own queues"
        );
        assert!(!s.monitor.may_monitor("2001", &queues(&["support"])));
        assert!(s.monitor.may_monitor("2002", &queues(&["support", "x"])));
        assert!(!s.monitor.may_monitor("2002", &queues(&["sales"])));
        assert!(
            !s.monitor.may_monitor("1001", &queues(&["sales"])),
            "no supervisor"
        );
        let err = load(&format!(
            "{base}[monitor]\nsupervisors = [\"2001\"]\nqueues = {{ \"2002\" = [\"nope\"] }}\n"
        ))
        .unwrap_err();
        assert_eq!(
            keys(err),
            vec!["monitor.queues.2002", "monitor.queues.2002[0]"]
        );
        let token = "sha256 = \"fc08215c254a6e44742d4ed0717935f6fa3e854b7f896d7171b0c476071b3c53\"";
        let err = load(&format!(
            "{base}[api.tokens.a]\nrole = \"admin\"\nphones = [\"2001\"]\n{token}\n\
             [api.tokens.s]\nrole = \"supervisor\"\nqueues = [\"sales\"]\nphones = [\"9\"]\n{token}\n"
        ))
        .unwrap_err();
        assert_eq!(
            keys(err),
            vec!["api.tokens.a.phones", "api.tokens.s.phones[0]"]
        );
    }

    #[test]
    fn min_staffed_cannot_exceed_the_agents_of_the_queue() {
        let err = load_queues("[queues.q]\nmin_staffed = 2\n").unwrap_err();
        assert_issue(&err, "queues.q.min_staffed");
        assert_eq!(err.issues().len(), 1);
        assert_eq!(
            load_queues("[queues.q]\nmin_staffed = 1\n").unwrap().queues["q"].min_staffed,
            1
        );
    }

    #[test]
    fn a_survey_flow_that_does_not_exist_is_refused_naming_the_key() {
        let err = load("[queues.q]\nsurvey = \"nope\"\n").unwrap_err();
        assert_eq!(keys(err), vec!["queues.q.survey"]);
    }

    /// A prompt library holding exactly these names, in every language.
    struct Holding(std::collections::BTreeSet<String>);

    impl PromptCatalog for Holding {
        fn has_localized(&self, _language: &str, name: &str) -> bool {
            self.0.contains(name)
        }

        fn has(&self, name: &str) -> bool {
            self.0.contains(name)
        }
    }

    const NAMING_PROMPTS: &str = "[numbers.\"7\"]\nqueue = \"q\"\ngreeting = \"hello\"\n\
        [queues.q]\noverflow_prompt = \"sorry\"\nmusic_on_hold = \"moh/q\"\n\
        [blocklist]\naction = \"prompt\"\n\
        [ivr.x]\nstart = \"a\"\n[ivr.x.nodes.a]\ntype = \"play\"\nprompts = [\"welcome\"]\nnext = \"b\"\n\
        [ivr.x.nodes.b]\ntype = \"hangup\"\n";

    #[test]
    fn every_prompt_named_anywhere_is_looked_up_under_its_key() {
        let s = load(NAMING_PROMPTS).unwrap();
        let issues = check_prompts(&s, &Holding(Default::default()));
        let keys: BTreeSet<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "ivr.x",
                "ivr.x.nodes.a",
                "numbers.7.greeting",
                "blocklist.action",
                "queues.q.overflow_prompt",
                "queues.q.music_on_hold",
                "media.prompts",
                "media.music_on_hold",
            ])
        );
        let greeting = issues
            .iter()
            .find(|i| i.key == "numbers.7.greeting")
            .unwrap();
        assert_eq!(
            greeting.message,
            "prompt `hello` is not in prompts (for language en)"
        );
        let queue_prompts = issues.iter().find(|i| i.key == "media.prompts").unwrap();
        for name in QUEUE_PROMPTS.iter().copied().chain(["digit_0", "digit_9"]) {
            assert!(queue_prompts.message.contains(name), "{queue_prompts:?}");
        }
    }

    #[test]
    fn a_library_holding_every_named_prompt_passes() {
        let s = load(NAMING_PROMPTS).unwrap();
        let mut names: BTreeSet<String> = [
            "hello",
            "sorry",
            "moh/q",
            "moh/default",
            "blocked",
            "welcome",
        ]
        .map(String::from)
        .into();
        names.extend(QUEUE_PROMPTS.iter().map(|n| n.to_string()));
        names.extend(crate::ivr::say_prompts("0123456789."));
        let complete = Holding(names.clone());
        assert_eq!(check_prompts(&s, &complete), vec![]);
        names.remove("digit_5");
        let issues = check_prompts(&s, &Holding(names));
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["ivr.x", "media.prompts"], "{issues:?}");
    }
}
