//! IVR flows and their interpreter.
//!
//! An [`IvrRun`] walks one call through a flow from the config: it is a pure
//! state machine that takes inputs (a key, the end of the prompts, a timer, a
//! lookup's reply) and returns the actions the call actor must carry out (play
//! these prompts, start a timer, fetch a URL, join a queue, hang up). It never
//! touches a socket or a clock of its own, so every flow can be tested by script.

pub mod hours;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::ivr::{Flow, Node};

/// Something that happened to the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The prompts of the last `Play` action have all been played.
    PromptsDone,
    /// The caller pressed a key.
    Digit(char),
    /// The timer of the last `StartTimer` action fired.
    Timeout,
    /// The reply to the last `Lookup` action: variables, and the node the
    /// integrator chose, or why it failed.
    LookupDone(Result<LookupReply, String>),
}

/// A lookup's JSON reply, flattened.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LookupReply {
    pub vars: BTreeMap<String, String>,
    pub next: Option<String>,
}

/// What the call actor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The call entered this node (for events and the CDR's IVR path).
    Entered { node: String },
    /// Play these prompts back to back (names without language). With
    /// `barge_in`, a key stops them.
    Play {
        prompts: Vec<String>,
        barge_in: bool,
    },
    /// Stop whatever is playing.
    StopPlayback,
    /// Start (or restart) the single IVR timer.
    StartTimer(Duration),
    /// Fetch this URL and answer with `Input::LookupDone`.
    Lookup { url: String, timeout: Duration },
    /// Hand the caller to this queue, with what the flow set.
    Queue {
        queue: String,
        skills: Vec<String>,
        priority: Option<u32>,
    },
    /// End the call.
    Hangup,
}

/// Where the run stands inside the current node.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Prompts are playing.
    Playing,
    /// Prompts done, waiting for keys or the timer.
    Waiting,
    /// Waiting for a lookup's reply.
    LookingUp,
    /// The flow is over (queued or hung up).
    Done,
}

/// Most immediate node-to-node moves in one step before the flow is judged to
/// loop (a `set` pointing at itself, say).
const MAX_HOPS: usize = 64;

/// One call's walk through one flow.
#[derive(Debug, Clone)]
pub struct IvrRun {
    flow: Arc<Flow>,
    node: String,
    step: Step,
    attempts: u32,
    digits: String,
    /// A key pressed during a barge-in prompt, handed to the next node.
    pending: Option<char>,
    vars: BTreeMap<String, String>,
    skills: Vec<String>,
    priority: Option<u32>,
    queue: Option<String>,
    path: Vec<String>,
    clock: fn() -> OffsetDateTime,
}

fn template(text: &str, vars: &BTreeMap<String, String>, encode: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let value = vars.get(&after[..close]).map(String::as_str).unwrap_or("");
                if encode {
                    for b in value.bytes() {
                        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                            out.push(b as char);
                        } else {
                            out.push_str(&format!("%{b:02X}"));
                        }
                    }
                } else {
                    out.push_str(value);
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The digit prompts that read `value` out: "12.5" → digit_1 digit_2 point digit_5.
pub fn say_prompts(value: &str) -> Vec<String> {
    value
        .chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(format!("digit_{c}")),
            '.' => Some("point".to_string()),
            _ => None,
        })
        .collect()
}

impl IvrRun {
    /// Starts `flow` with the call's initial variables (caller, number…).
    pub fn start(
        flow: Arc<Flow>,
        vars: BTreeMap<String, String>,
        clock: fn() -> OffsetDateTime,
    ) -> (IvrRun, Vec<Action>) {
        let start = flow.start.clone();
        let mut run = IvrRun {
            flow,
            node: start.clone(),
            step: Step::Done,
            attempts: 0,
            digits: String::new(),
            pending: None,
            vars,
            skills: Vec::new(),
            priority: None,
            queue: None,
            path: Vec::new(),
            clock,
        };
        let mut actions = Vec::new();
        run.enter(&start, &mut actions);
        (run, actions)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// The variables as others may see them (screen pop, API, events): the
    /// flow's sensitive ones masked.
    pub fn shown_vars(&self) -> BTreeMap<String, String> {
        let secret = self.flow.sensitive_vars();
        self.vars
            .iter()
            .map(|(k, v)| {
                let shown = if secret.contains(k.as_str()) {
                    crate::config::ivr::MASK.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), shown)
            })
            .collect()
    }

    /// Whether the caller is keying a secret (a sensitive `collect` node).
    pub fn collecting_secret(&self) -> bool {
        self.flow
            .nodes
            .get(&self.node)
            .is_some_and(crate::config::ivr::Node::is_sensitive_collect)
    }

    /// The nodes visited, in order.
    pub fn path(&self) -> &[String] {
        &self.path
    }

    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// The queue chosen by a `set` node, if any.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// Feeds one input; returns the actions to carry out, in order.
    pub fn on(&mut self, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.step == Step::Done {
            return actions;
        }
        let Some(node) = self.flow.nodes.get(&self.node).cloned() else {
            actions.push(Action::Hangup);
            self.step = Step::Done;
            return actions;
        };
        match (&node, input) {
            (Node::Play { next, barge_in, .. }, Input::Digit(d)) if *barge_in => {
                actions.push(Action::StopPlayback);
                self.pending = Some(d);
                self.goto(next, &mut actions);
            }
            (Node::Play { next, .. } | Node::Say { next, .. }, Input::PromptsDone) => {
                self.goto(next, &mut actions)
            }
            (Node::Hangup { .. }, Input::PromptsDone) => {
                self.step = Step::Done;
                actions.push(Action::Hangup);
            }
            (Node::Menu { timeout, .. }, Input::PromptsDone) if self.step == Step::Playing => {
                self.step = Step::Waiting;
                actions.push(Action::StartTimer(*timeout));
            }
            (Node::Menu { .. }, Input::Digit(d)) => self.menu_key(&node, d, &mut actions),
            (Node::Menu { .. }, Input::Timeout) if self.step == Step::Waiting => {
                self.retry(&node, false, &mut actions)
            }
            (Node::Collect { timeout, .. }, Input::PromptsDone) if self.step == Step::Playing => {
                self.step = Step::Waiting;
                if self.digits.is_empty() {
                    actions.push(Action::StartTimer(*timeout));
                }
            }
            (Node::Collect { .. }, Input::Digit(d)) => self.collect_key(&node, d, &mut actions),
            (Node::Collect { .. }, Input::Timeout) if self.step == Step::Waiting => {
                if self.digits.is_empty() {
                    self.retry(&node, false, &mut actions);
                } else {
                    self.finish_collect(&node, &mut actions);
                }
            }
            (Node::Lookup { next, failure, .. }, Input::LookupDone(reply))
                if self.step == Step::LookingUp =>
            {
                match reply {
                    Ok(reply) => {
                        self.vars.extend(reply.vars);
                        let chosen = reply
                            .next
                            .filter(|n| self.flow.nodes.contains_key(n))
                            .unwrap_or_else(|| next.clone());
                        self.goto(&chosen, &mut actions);
                    }
                    Err(_) => self.goto(failure, &mut actions),
                }
            }
            // Keys during a prompt without barge-in, stray timers: ignored.
            _ => {}
        }
        actions
    }

    fn menu_key(&mut self, node: &Node, d: char, actions: &mut Vec<Action>) {
        let Node::Menu { choices, .. } = node else {
            return;
        };
        if self.step == Step::Playing {
            actions.push(Action::StopPlayback);
        }
        match choices.get(d.to_string().as_str()) {
            Some(target) => {
                let target = target.clone();
                self.goto(&target, actions);
            }
            None => self.retry(node, true, actions),
        }
    }

    fn collect_key(&mut self, node: &Node, d: char, actions: &mut Vec<Action>) {
        let Node::Collect {
            max_digits,
            terminator,
            inter_digit_timeout,
            ..
        } = node
        else {
            return;
        };
        if self.step == Step::Playing {
            actions.push(Action::StopPlayback);
            self.step = Step::Waiting;
        }
        if terminator.starts_with(d) && !terminator.is_empty() {
            self.finish_collect(node, actions);
            return;
        }
        self.digits.push(d);
        if self.digits.len() >= *max_digits as usize {
            self.finish_collect(node, actions);
        } else {
            actions.push(Action::StartTimer(*inter_digit_timeout));
        }
    }

    fn finish_collect(&mut self, node: &Node, actions: &mut Vec<Action>) {
        let Node::Collect {
            var,
            min_digits,
            pattern,
            next,
            ..
        } = node
        else {
            return;
        };
        let long_enough = self.digits.len() >= *min_digits as usize;
        let matches = pattern
            .as_deref()
            .map(|p| regex::Regex::new(p).is_ok_and(|re| re.is_match(&self.digits)))
            .unwrap_or(true);
        if long_enough && matches {
            let value = std::mem::take(&mut self.digits);
            self.vars.insert(var.clone(), value);
            self.goto(next, actions);
        } else {
            self.retry(node, true, actions);
        }
    }

    /// A wrong key, a bad value or a timeout: ask again, or give up.
    fn retry(&mut self, node: &Node, invalid_input: bool, actions: &mut Vec<Action>) {
        let (prompts, retries, invalid, give_up) = match node {
            Node::Menu {
                prompts,
                retries,
                invalid,
                default,
                ..
            } => (prompts, *retries, invalid, default),
            Node::Collect {
                prompts,
                retries,
                invalid,
                failure,
                ..
            } => (prompts, *retries, invalid, failure),
            _ => return,
        };
        self.attempts += 1;
        self.digits.clear();
        if self.attempts > retries {
            let target = give_up.clone();
            self.goto(&target, actions);
            return;
        }
        let mut play = Vec::new();
        if invalid_input {
            play.extend(invalid.iter().cloned());
        }
        play.extend(prompts.iter().cloned());
        self.step = Step::Playing;
        actions.push(Action::Play {
            prompts: play,
            barge_in: true,
        });
    }

    fn goto(&mut self, target: &str, actions: &mut Vec<Action>) {
        self.enter(target, actions);
    }

    /// Enters `start` and follows immediate nodes until one waits for input.
    fn enter(&mut self, start: &str, actions: &mut Vec<Action>) {
        let mut target = start.to_string();
        for _ in 0..MAX_HOPS {
            let Some(node) = self.flow.nodes.get(&target).cloned() else {
                self.step = Step::Done;
                actions.push(Action::Hangup);
                return;
            };
            self.node = target.clone();
            self.attempts = 0;
            self.digits.clear();
            self.path.push(target.clone());
            actions.push(Action::Entered {
                node: target.clone(),
            });
            let next = match node {
                Node::Play {
                    prompts, barge_in, ..
                } => {
                    self.step = Step::Playing;
                    actions.push(Action::Play { prompts, barge_in });
                    return;
                }
                Node::Menu { prompts, .. } | Node::Collect { prompts, .. } => {
                    match self.pending.take() {
                        // A key pressed into the previous prompt answers this node.
                        Some(d) => {
                            self.step = Step::Waiting;
                            let mut more = self.on(Input::Digit(d));
                            actions.append(&mut more);
                        }
                        None => {
                            self.step = Step::Playing;
                            actions.push(Action::Play {
                                prompts,
                                barge_in: true,
                            });
                        }
                    }
                    return;
                }
                Node::Set {
                    vars,
                    queue,
                    skills,
                    priority,
                    next,
                } => {
                    for (k, v) in vars {
                        let value = template(&v, &self.vars, false);
                        self.vars.insert(k, value);
                    }
                    if queue.is_some() {
                        self.queue = queue;
                    }
                    if !skills.is_empty() {
                        self.skills = skills;
                    }
                    if priority.is_some() {
                        self.priority = priority;
                    }
                    next
                }
                Node::Say {
                    before,
                    value,
                    after,
                    ..
                } => {
                    let value = template(&value, &self.vars, false);
                    let mut prompts = before;
                    prompts.extend(say_prompts(&value));
                    prompts.extend(after);
                    self.step = Step::Playing;
                    actions.push(Action::Play {
                        prompts,
                        barge_in: false,
                    });
                    return;
                }
                Node::Hours {
                    schedule,
                    utc_offset,
                    holidays,
                    open,
                    closed,
                } => {
                    // The schedule was checked at load; a failure here means
                    // "always", the safe side for a 24-hour hotline.
                    let open_now = hours::Schedule::parse(&schedule, &utc_offset, &holidays)
                        .map(|s| s.is_open((self.clock)()))
                        .unwrap_or(true);
                    if open_now { open } else { closed }
                }
                Node::Lookup { url, timeout, .. } => {
                    self.step = Step::LookingUp;
                    actions.push(Action::Lookup {
                        url: template(&url, &self.vars, true),
                        timeout,
                    });
                    return;
                }
                Node::Queue { queue } => {
                    self.step = Step::Done;
                    actions.push(Action::Queue {
                        queue: self.queue.clone().unwrap_or(queue),
                        skills: self.skills.clone(),
                        priority: self.priority,
                    });
                    return;
                }
                Node::Hangup { prompts } => {
                    if prompts.is_empty() {
                        self.step = Step::Done;
                        actions.push(Action::Hangup);
                    } else {
                        self.step = Step::Playing;
                        actions.push(Action::Play {
                            prompts,
                            barge_in: false,
                        });
                    }
                    return;
                }
            };
            target = next;
        }
        tracing::warn!(node = %target, "IVR flow loops without waiting for the caller; hanging up");
        self.step = Step::Done;
        actions.push(Action::Hangup);
    }
}

#[cfg(test)]
mod tests;
