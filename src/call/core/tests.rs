//! The script helper of the core's tests, scripted cases that cross the
//! sub-machines, and a property test over random input sequences that checks
//! the core's invariants after every step.

use std::time::{Duration, Instant};

use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as PropStrategy;

use super::*;
use crate::config::HoldAction;

pub(crate) fn aid(s: &str) -> AgentId {
    AgentId::from(s)
}

pub(crate) fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

/// The router messages among `effects`.
pub(crate) fn routed(effects: &[Effect]) -> Vec<Command> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Router(command) => Some(command.clone()),
            _ => None,
        })
        .collect()
}

fn policy(hold_action: HoldAction) -> CallPolicy {
    CallPolicy {
        ring_limit: Duration::from_secs(6),
        hold_limit: Duration::from_secs(30),
        hold_warning_before: Duration::from_secs(5),
        hold_action,
        queue_header: "X-Queue".into(),
        max_transfers: 2,
    }
}

/// A call driven by inputs at whole seconds after `t0`, its invariants
/// checked after each.
pub(crate) struct Script {
    pub t0: Instant,
    pub core: CallCore,
}

impl Script {
    pub fn new() -> Script {
        let ident = Ident {
            call_id: "c1".into(),
            caller: "+15550100".into(),
            number: "100".into(),
        };
        Script {
            t0: Instant::now(),
            core: CallCore::new(ident, policy(HoldAction::Alert)),
        }
    }

    pub fn policy(&mut self, action: HoldAction) {
        self.core.policy = policy(action);
    }

    pub fn t(&self, s: u64) -> Instant {
        secs(self.t0, s)
    }

    pub fn at(&mut self, s: u64, input: Input) -> Vec<Effect> {
        let now = self.t(s);
        let out = self.core.handle(input, now);
        assert_eq!(self.core.invariants(), Ok(()));
        out
    }

    pub fn enqueue(&mut self, queue: &str, timers: QueueTimers, s: u64) -> Vec<Effect> {
        self.at(
            s,
            Input::Enqueue {
                queue: queue.into(),
                timers,
                callback_possible: true,
                paused: false,
            },
        )
    }

    pub fn offer(&mut self, agent: &str, s: u64) -> Vec<Effect> {
        self.at(
            s,
            Input::Offered {
                agent: aid(agent),
                queue: "sales".into(),
                contacts: 1,
            },
        )
    }

    /// The caller confirms its own number, read back (its entry started).
    pub fn confirm_number(&mut self, s: u64) -> Vec<Effect> {
        self.at(
            s,
            Input::NumberProposed {
                number: "+1 555-0100".into(),
                e164: Some("15550100".into()),
            },
        );
        self.at(s, Input::NumberKey('#'))
    }

    /// The caller presses the callback key and confirms its own number.
    pub fn record_callback(&mut self, s: u64) -> Vec<Effect> {
        self.at(s, Input::NumberEntryStarted);
        self.confirm_number(s)
    }

    pub fn answer(&mut self, agent: &str, s: u64) -> Vec<Effect> {
        self.at(
            s,
            Input::AgentAnswered {
                agent: aid(agent),
                announce: false,
            },
        )
    }
}

#[test]
fn a_callback_racing_an_abandon_dequeues_once() {
    // The caller presses the callback key and hangs up before the number
    // is recorded: the call is abandoned, the router told once; the late
    // confirmation changes nothing.
    let mut s = Script::new();
    s.enqueue(
        "sales",
        QueueTimers {
            callback_after: Some(Duration::from_secs(10)),
            ..QueueTimers::default()
        },
        0,
    );
    s.at(10, Input::Tick);
    assert!(s.core.callback_offered());
    s.at(11, Input::NumberEntryStarted);
    let out = s.at(12, Input::Ended(ReleasedBy::Caller));
    assert!(matches!(
        out[0],
        Effect::Publish(Event::CallAbandoned {
            waited_ms: 12_000,
            ..
        })
    ));
    assert_eq!(routed(&out), vec![Command::Dequeue(s.core.call())]);
    assert!(s.at(12, Input::NumberKey('#')).is_empty());
    assert!(s.at(13, Input::Ended(ReleasedBy::Caller)).is_empty());
}

#[test]
fn a_recorded_callback_answered_by_an_agent_is_released_once_at_the_end() {
    let mut s = Script::new();
    s.enqueue("sales", QueueTimers::default(), 0);
    s.record_callback(5);
    s.offer("1001", 40);
    s.answer("1001", 42);
    let out = s.at(50, Input::Ended(ReleasedBy::System));
    assert_eq!(
        routed(&out),
        vec![Command::CallEnded(s.core.call(), aid("1001"))]
    );
}

#[test]
fn a_transfer_release_then_requeue_keeps_the_first_wait() {
    let mut s = Script::new();
    s.enqueue("sales", QueueTimers::default(), 0);
    s.offer("1001", 10);
    s.answer("1001", 12);
    s.at(12, Input::Bridged);
    let out = s.at(20, Input::ReleaseAgent(ReleasedBy::System));
    assert_eq!(
        routed(&out),
        vec![Command::CallEnded(s.core.call(), aid("1001"))]
    );
    assert!(!s.core.in_router());
    let out = s.enqueue("support", QueueTimers::default(), 20);
    assert!(matches!(
        out[0],
        Effect::Publish(Event::CallQueued {
            waited_ms: 20_000,
            ..
        })
    ));
}

/// A flow that plays a welcome (a key skips it), then hands the caller to
/// the sales queue.
pub(crate) fn welcome_flow() -> std::sync::Arc<crate::config::ivr::Flow> {
    static FLOW: std::sync::OnceLock<std::sync::Arc<crate::config::ivr::Flow>> =
        std::sync::OnceLock::new();
    FLOW.get_or_init(|| {
        let toml = r#"
start = "welcome"
[nodes.welcome]
type = "play"
prompts = ["welcome"]
barge_in = true
next = "sales"
[nodes.sales]
type = "queue"
queue = "sales"
"#;
        let flow: crate::config::ivr::Flow = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap_or_else(|e| panic!("the test flow: {e}"));
        std::sync::Arc::new(flow)
    })
    .clone()
}

/// `welcome_flow` started: the input that puts the caller in it.
pub(crate) fn enter_welcome() -> Input {
    let (run, _) = crate::ivr::IvrRun::start(welcome_flow(), BTreeMap::new(), || {
        time::OffsetDateTime::UNIX_EPOCH
    });
    Input::EnterIvr {
        flow: "welcome".into(),
        run: Box::new(run),
    }
}

fn ivr_actions(out: &[Effect]) -> Vec<crate::ivr::Action> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Ivr(actions) => Some(actions.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn the_flow_runs_in_the_stage_and_hands_the_caller_to_its_queue() {
    let mut s = Script::new();
    s.at(0, enter_welcome());
    assert_eq!(s.core.ivr().map(|(flow, _)| flow), Some("welcome"));
    assert_eq!(s.core.deadline(), None);
    // The prompt's end is the flow's: it asks for the queue.
    let out = s.at(4, Input::PromptEnded);
    assert!(
        ivr_actions(&out).contains(&crate::ivr::Action::Queue {
            queue: "sales".into(),
            skills: Vec::new(),
            priority: None,
        }),
        "{out:?}"
    );
    // The driver enqueues: the wait counts from the queue, not the flow.
    let out = s.enqueue("sales", QueueTimers::default(), 4);
    assert!(matches!(
        out[0],
        Effect::Publish(Event::CallQueued { waited_ms: 0, .. })
    ));
    assert!(s.core.queued() && s.core.ivr().is_none());
    // Keys are the flow's only while the caller is in it.
    assert!(
        s.at(5, Input::Ivr(crate::ivr::Input::Digit('1')))
            .is_empty()
    );
}

#[test]
fn a_key_in_the_flow_is_the_flows_and_a_hang_up_takes_its_run() {
    let mut s = Script::new();
    s.at(0, enter_welcome());
    let out = s.at(1, Input::Ivr(crate::ivr::Input::Digit('5')));
    assert!(!ivr_actions(&out).is_empty(), "{out:?}");
    s.at(2, enter_welcome());
    let (flow, run) = s.core.take_ivr().unwrap_or_else(|| panic!("in a flow"));
    assert_eq!((flow.as_str(), run.node()), ("welcome", "welcome"));
    assert!(s.core.ivr().is_none() && s.core.take_ivr().is_none());
    let out = s.at(3, Input::Ended(ReleasedBy::Caller));
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_greeting_leads_into_its_queue_at_the_prompts_end_keeping_the_wait() {
    let mut s = Script::new();
    s.at(
        0,
        Input::Greet {
            queue: "sales".into(),
        },
    );
    assert!(!s.core.queued());
    // A prompt's end: into the greeting's queue.
    assert_eq!(
        s.at(3, Input::PromptEnded),
        vec![Effect::EnterQueue("sales".into())]
    );
    s.enqueue("sales", QueueTimers::default(), 3);
    // An overflow with a prompt greets into the next queue, the caller's
    // first wait kept.
    s.at(
        20,
        Input::Overflowed {
            reason: "no_agents",
            target: "queue:support".into(),
        },
    );
    s.core.left_router();
    s.at(
        20,
        Input::Greet {
            queue: "support".into(),
        },
    );
    assert_eq!(s.core.place().map(|p| p.queue.as_str()), Some("sales"));
    assert_eq!(
        s.at(25, Input::PromptEnded),
        vec![Effect::EnterQueue("support".into())]
    );
    let out = s.enqueue("support", QueueTimers::default(), 25);
    assert!(matches!(
        out[0],
        Effect::Publish(Event::CallQueued {
            waited_ms: 22_000,
            ..
        })
    ));
}

#[test]
fn the_agents_number_is_announced_then_the_prompts_end_bridges() {
    let mut s = Script::new();
    s.enqueue("sales", QueueTimers::default(), 0);
    s.offer("1001", 1);
    let out = s.at(
        2,
        Input::AgentAnswered {
            agent: aid("1001"),
            announce: true,
        },
    );
    assert!(out.iter().any(|e| matches!(e, Effect::Announce(_))));
    assert!(!s.core.bridged() && !s.core.queued());
    assert_eq!(s.core.bridge().map(|b| b.link), Some(Link::Announcing));
    // Not yet bridged: no transfer, no relay; a hold waits for the bridge.
    s.at(3, Input::ApiHold(true));
    assert!(!s.core.is_held());
    assert_eq!(s.at(5, Input::PromptEnded), vec![Effect::Bridge]);
    let out = s.at(5, Input::Bridged);
    assert!(s.core.bridged() && s.core.is_held());
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Publish(Event::HoldStarted { .. })))
    );
    // Once talking, a prompt's end bridges nothing again.
    assert!(!s.at(6, Input::PromptEnded).contains(&Effect::Bridge));
}

#[test]
fn a_recorded_callback_hangs_the_caller_up_at_the_confirmations_end() {
    let mut s = Script::new();
    s.enqueue(
        "sales",
        QueueTimers {
            callback_after: Some(Duration::from_secs(10)),
            ..QueueTimers::default()
        },
        0,
    );
    s.at(10, Input::Tick);
    s.at(11, Input::NumberEntryStarted);
    s.confirm_number(15);
    assert!(!s.core.queued() && s.core.caller_gone_for_callback());
    // The confirmation's end hangs the caller up, once.
    assert_eq!(s.at(17, Input::PromptEnded), vec![Effect::HangUpCaller]);
    assert!(s.at(18, Input::PromptEnded).is_empty());
    assert_eq!(
        s.core.waiting().and_then(|w| w.kept),
        Some(KeptForCallback::CallerGone)
    );
    // An agent answers: the customer is called; the caller's dialog
    // ending is still expected until the customer talks.
    s.offer("1001", 40);
    let out = s.answer("1001", 42);
    assert!(out.contains(&Effect::DialCustomer));
    assert!(s.core.caller_gone_for_callback() && !s.core.bridged());
    assert!(s.at(43, Input::PromptEnded).is_empty());
    s.at(50, Input::Bridged);
    assert!(s.core.bridged() && !s.core.caller_gone_for_callback());
}

#[test]
fn a_closing_call_keeps_its_place_so_an_unconfirmed_dequeue_abandons() {
    let mut s = Script::new();
    s.enqueue("sales", QueueTimers::default(), 0);
    s.at(
        30,
        Input::Overflowed {
            reason: "no_agents",
            target: "hangup".into(),
        },
    );
    s.at(30, Input::Close);
    assert!(s.core.closing() && !s.core.queued());
    assert_eq!(s.core.deadline(), None);
    assert!(s.at(33, Input::PromptEnded).is_empty());
    // The router never confirmed the overflow's dequeue: the end tells it.
    let out = s.at(33, Input::Ended(ReleasedBy::System));
    assert!(matches!(
        out[0],
        Effect::Publish(Event::CallAbandoned {
            waited_ms: 33_000,
            ..
        })
    ));
    assert_eq!(routed(&out), vec![Command::Dequeue(s.core.call())]);
}

/// A caller talking with agent `agent` from second `s`.
fn talking(s: &mut Script, agent: &str, at: u64) {
    s.enqueue("sales", QueueTimers::default(), at);
    s.offer(agent, at + 1);
    s.answer(agent, at + 2);
    s.at(at + 3, Input::Bridged);
    assert!(s.core.bridged());
}

/// The agent passes the call on to `sales` (first to `first`): it is
/// released, the transfer counted, the caller queued again.
fn pass_on(s: &mut Script, first: Option<&str>, at: u64) -> Vec<Effect> {
    s.at(at, Input::ReleaseAgent(ReleasedBy::System));
    s.at(
        at,
        Input::PassedOn(PassedOn::Queue {
            first: first.map(aid),
        }),
    );
    s.enqueue("sales", QueueTimers::default(), at)
}

#[test]
fn transfers_are_counted_until_max_transfers_refuses_the_next() {
    let mut s = Script::new();
    talking(&mut s, "1001", 0);
    assert_eq!((s.core.transfers(), s.core.transfer_limit()), (0, None));
    pass_on(&mut s, None, 10);
    s.offer("1002", 11);
    s.answer("1002", 12);
    s.at(13, Input::Bridged);
    assert_eq!((s.core.transfers(), s.core.transfer_limit()), (1, None));
    // A consulted agent taking the call over is a transfer too.
    let out = s.at(
        20,
        Input::TakenOver {
            agent: aid("1003"),
            queue: "sales".into(),
            router_call: CallId::from("c1/consult"),
            rang_since: s.t(18),
        },
    );
    assert!(out.contains(&Effect::Transferred {
        agent: aid("1002"),
        from_queue: "sales".into(),
        count: 2,
    }));
    assert_eq!(
        s.core.transfer_limit(),
        Some(TransferLimit { done: 2, max: 2 })
    );
    // A flow counts as well, and the count survives every stage.
    s.at(30, Input::PassedOn(PassedOn::Flow));
    s.at(31, Input::Ended(ReleasedBy::Caller));
    assert_eq!(
        s.core.transfer_limit(),
        Some(TransferLimit { done: 3, max: 2 })
    );
}

#[test]
fn a_transfer_to_a_named_agent_offers_the_call_to_it_first_once() {
    let mut s = Script::new();
    talking(&mut s, "1001", 0);
    let out = pass_on(&mut s, Some("1002"), 10);
    assert!(out.contains(&Effect::JoinRouter {
        first: Some(aid("1002"))
    }));
    assert_eq!(s.core.direct_to(), None);
    // The named agent is not ready: the next queueing is the queue's own.
    let out = s.enqueue("support", QueueTimers::default(), 12);
    assert!(out.contains(&Effect::JoinRouter { first: None }));
}

#[test]
fn a_named_agent_waits_for_the_next_join_when_the_queue_is_paused() {
    let mut s = Script::new();
    talking(&mut s, "1001", 0);
    s.at(10, Input::ReleaseAgent(ReleasedBy::System));
    s.at(
        10,
        Input::PassedOn(PassedOn::Queue {
            first: Some(aid("1002")),
        }),
    );
    let paused = s.at(
        10,
        Input::Enqueue {
            queue: "sales".into(),
            timers: QueueTimers::default(),
            callback_possible: false,
            paused: true,
        },
    );
    assert_eq!(paused.last(), Some(&Effect::Paused));
    assert_eq!(s.core.direct_to(), Some(&aid("1002")));
    // A transfer to a flow leaves the named agent alone.
    s.at(11, Input::PassedOn(PassedOn::Flow));
    let out = s.enqueue("support", QueueTimers::default(), 12);
    assert!(out.contains(&Effect::JoinRouter {
        first: Some(aid("1002"))
    }));
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(bool),
    Position(bool),
    Refused,
    Overflow,
    Offer(u8, usize),
    Withdraw(u8),
    Settle(u8),
    Answer(u8),
    Refuse(u8, bool),
    Bridged,
    PhoneHold(bool, bool),
    ApiHold(bool),
    ConsultHold(bool),
    ResumeAnswered,
    PromptEnded,
    Release,
    NumberEntry,
    PassedOn(Option<u8>),
    NumberProposed(bool),
    NumberKey(u8),
    CustomerDialled,
    CustomerFinal,
    TakeOver(u8),
    End(u8),
    Tick,
    EnterIvr,
    IvrDigit,
    Greet,
    Close,
}

fn op() -> impl PropStrategy<Value = Op> {
    let agent = 0u8..3;
    prop_oneof![
        proptest::bool::ANY.prop_map(Op::Enqueue),
        proptest::bool::ANY.prop_map(Op::Position),
        Just(Op::Refused),
        Just(Op::Overflow),
        (agent.clone(), 0usize..3).prop_map(|(a, c)| Op::Offer(a, c)),
        agent.clone().prop_map(Op::Withdraw),
        agent.clone().prop_map(Op::Settle),
        agent.clone().prop_map(Op::Answer),
        (agent.clone(), proptest::bool::ANY).prop_map(|(a, r)| Op::Refuse(a, r)),
        Just(Op::Bridged),
        (proptest::bool::ANY, proptest::bool::ANY).prop_map(|(c, a)| Op::PhoneHold(c, a)),
        proptest::bool::ANY.prop_map(Op::ApiHold),
        proptest::bool::ANY.prop_map(Op::ConsultHold),
        Just(Op::ResumeAnswered),
        Just(Op::PromptEnded),
        Just(Op::Release),
        Just(Op::NumberEntry),
        proptest::option::of(agent.clone()).prop_map(Op::PassedOn),
        proptest::bool::ANY.prop_map(Op::NumberProposed),
        (0u8..4).prop_map(Op::NumberKey),
        Just(Op::CustomerDialled),
        Just(Op::CustomerFinal),
        agent.clone().prop_map(Op::TakeOver),
        (0u8..3).prop_map(Op::End),
        Just(Op::Tick),
        Just(Op::EnterIvr),
        Just(Op::IvrDigit),
        Just(Op::Greet),
        Just(Op::Close),
    ]
}

fn input(op: Op, now: Instant) -> Input {
    let agent = |a: u8| aid(&format!("10{a}"));
    match op {
        Op::Enqueue(paused) => Input::Enqueue {
            queue: "sales".into(),
            timers: QueueTimers {
                max_wait: Some(Duration::from_secs(40)),
                announce_every: Some(Duration::from_secs(15)),
                callback_after: Some(Duration::from_secs(20)),
            },
            callback_possible: true,
            paused,
        },
        Op::Position(entering_number) => Input::Position {
            position: Some(crate::acd::QueuePosition {
                queue: crate::acd::QueueId::from("sales"),
                position: 2,
                waiting: 3,
                estimated_wait: Some(Duration::from_secs(70)),
            }),
            entering_number,
        },
        Op::Refused => Input::Refused,
        Op::Overflow => Input::Overflowed {
            reason: "max_wait",
            target: "hangup".into(),
        },
        Op::Offer(a, contacts) => Input::Offered {
            agent: agent(a),
            queue: "sales".into(),
            contacts,
        },
        Op::Withdraw(a) => Input::OfferWithdrawn(agent(a)),
        Op::Settle(a) => Input::OfferSettled {
            agent: agent(a),
            outcome: crate::acd::Outcome::Busy,
        },
        Op::Answer(a) => Input::AgentAnswered {
            agent: agent(a),
            announce: a % 2 == 0,
        },
        Op::Refuse(a, still_ringing) => Input::AnswerRefused {
            agent: agent(a),
            still_ringing,
        },
        Op::Bridged => Input::Bridged,
        Op::PhoneHold(caller, agent) => Input::PhoneHold { caller, agent },
        Op::ApiHold(on) => Input::ApiHold(on),
        Op::ConsultHold(on) => Input::ConsultHold(on),
        Op::ResumeAnswered => Input::ResumeAnswered,
        Op::PromptEnded => Input::PromptEnded,
        Op::Release => Input::ReleaseAgent(ReleasedBy::System),
        Op::NumberEntry => Input::NumberEntryStarted,
        Op::PassedOn(Some(2)) => Input::PassedOn(PassedOn::Flow),
        Op::PassedOn(first) => Input::PassedOn(PassedOn::Queue {
            first: first.map(agent),
        }),
        Op::NumberProposed(allowed) => Input::NumberProposed {
            number: "555".into(),
            e164: allowed.then(|| "555".into()),
        },
        Op::NumberKey(k) => Input::NumberKey(['#', '*', '5', '0'][usize::from(k)]),
        Op::CustomerDialled => Input::CustomerDialled,
        Op::CustomerFinal => Input::CustomerFinal,
        Op::TakeOver(a) => Input::TakenOver {
            agent: agent(a),
            queue: "sales".into(),
            router_call: CallId::from("c1/consult"),
            rang_since: now,
        },
        Op::End(by) => Input::Ended(match by {
            0 => ReleasedBy::Caller,
            1 => ReleasedBy::Agent,
            _ => ReleasedBy::System,
        }),
        Op::Tick => Input::Tick,
        Op::EnterIvr => enter_welcome(),
        Op::IvrDigit => Input::Ivr(crate::ivr::Input::Digit('1')),
        Op::Greet => Input::Greet {
            queue: "support".into(),
        },
        Op::Close => Input::Close,
    }
}

proptest! {
    #[test]
    fn invariants_hold_under_random_inputs(
        ops in proptest::collection::vec((op(), 0u64..8), 1..150),
        action in prop_oneof![Just(HoldAction::Alert), Just(HoldAction::Resume), Just(HoldAction::Requeue)],
    ) {
        let mut s = Script::new();
        s.policy(action);
        let mut now = s.t0;
        for (op, step) in ops {
            if matches!(s.core.stage, Stage::Ended) {
                break;
            }
            // A tick never comes later than the deadline asked for.
            let target = now + Duration::from_secs(step);
            while let Some(deadline) = s.core.deadline()
                && deadline < target
            {
                prop_assert!(deadline >= now);
                now = deadline;
                s.core.handle(Input::Tick, now);
                prop_assert_eq!(s.core.invariants(), Ok(()));
                // Nothing due is left behind by a tick.
                prop_assert!(s.core.deadline().is_none_or(|d| d > now));
            }
            now = target;
            let was_in_router = s.core.in_router();
            let was_connected = s.core.bridge().is_some();
            let ending = matches!(op, Op::End(_));
            let held_before = s.core.is_held();
            let was_in_ivr = s.core.ivr().is_some();
            let transfers_before = s.core.transfers();
            let out = s.core.handle(input(op.clone(), now), now);
            prop_assert_eq!(s.core.invariants(), Ok(()));
            // Transfers only count up, one at a time, each named with its count;
            // a named agent is handed to the router once.
            let counted = s.core.transfers() - transfers_before;
            prop_assert!(counted <= 1);
            prop_assert_eq!(counted == 1, matches!(op, Op::PassedOn(_)) || out.iter().any(|e| matches!(e, Effect::Transferred { .. })));
            for effect in &out {
                if let Effect::Transferred { count, .. } = effect {
                    prop_assert_eq!(*count, s.core.transfers());
                }
                if matches!(effect, Effect::JoinRouter { .. }) {
                    prop_assert!(s.core.direct_to().is_none());
                }
            }
            // Hold clock running iff held: a start and an end each come
            // with their event and their message to the router.
            let started = out.iter().filter(|e| matches!(e, Effect::Publish(Event::HoldStarted { .. }))).count();
            let ended = out.iter().filter(|e| matches!(e, Effect::Publish(Event::HoldEnded { .. }))).count();
            prop_assert!(started <= 1 && ended <= 1);
            if started == 1 {
                prop_assert!(s.core.is_held() && !held_before);
            }
            if s.core.is_held() {
                prop_assert!(s.core.deadline().is_some());
                prop_assert!(s.core.hold().is_some_and(|h| h.since() <= now));
            }
            // At most one agent answered: a second answer connects nobody.
            let connects = out.iter().filter(|e| matches!(e, Effect::Publish(Event::CallConnected { .. }))).count();
            prop_assert!(connects <= 1);
            if was_connected && matches!(op, Op::Answer(_)) {
                prop_assert_eq!(connects, 0);
            }
            // No offer rings once an agent is connected.
            if s.core.bridge().is_some() {
                prop_assert!(s.core.offers().is_empty());
            }
            // One state: the stage's answers never contradict each other.
            let answers = [
                s.core.ivr().is_some(),
                s.core.queued(),
                s.core.bridged(),
                s.core.closing(),
                s.core.caller_gone_for_callback(),
            ];
            prop_assert!(answers.iter().filter(|a| **a).count() <= 1);
            // Only a callback's customer still ringing (a leg of its own,
            // whatever the caller's side does) keeps a timer there.
            if s.core.ivr().is_some() || s.core.closing() {
                prop_assert!(s.core.offers().is_empty() && s.core.bridge().is_none());
                prop_assert_eq!(s.core.stage_deadline(), None);
                let customer = s.core.callback().and_then(|c| c.ringing).map(|r| r.deadline());
                prop_assert_eq!(s.core.deadline(), customer);
            }
            // A call kept for a callback runs no queue timer.
            if s.core.waiting().is_some_and(|w| w.kept.is_some()) {
                prop_assert!(s.core.waiting().and_then(Waiting::deadline).is_none());
            }
            // A number is given only by a caller waiting on the line; a
            // recorded callback is the call's for good.
            if s.core.number_entry().is_some() {
                prop_assert!(s.core.queued());
            }
            if s.core.caller_gone_for_callback() {
                prop_assert!(s.core.callback().is_some());
            }
            // Only the flow acts on a key.
            if matches!(op, Op::IvrDigit) && !was_in_ivr {
                prop_assert!(out.is_empty());
            }
            if ending {
                // Every leg released and the router told exactly once.
                let ends = routed(&out)
                    .into_iter()
                    .filter(|c| matches!(c, Command::Dequeue(_) | Command::CallEnded(..)))
                    .count();
                prop_assert_eq!(ends, usize::from(was_in_router || was_connected));
                prop_assert!(matches!(s.core.stage, Stage::Ended));
                prop_assert!(!s.core.in_router());
                prop_assert!(s.core.offers().is_empty() && s.core.bridge().is_none());
                prop_assert_eq!(s.core.deadline(), None);
            }
        }
    }
}
