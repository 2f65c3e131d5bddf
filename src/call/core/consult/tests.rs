//! Tests of the consultation machine: scripted consultations (by name, by
//! queue, from the phone), refusals, hold during a consultation, the transfer
//! limit, a three-way call the agent leaves, REFER with Replaces, and a
//! property test over random input sequences checking the invariants after
//! every step.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as PropStrategy;

use super::*;

const RING: Duration = Duration::from_secs(15);

fn aid(s: &str) -> AgentId {
    AgentId::from(s)
}

fn machine() -> ConsultMachine {
    ConsultMachine::new("c1", 2)
}

fn bridged() -> CallView {
    CallView {
        bridged: true,
        agent: Some((aid("1001"), "sales".into())),
        transfers: 0,
        supervisor: false,
        ring_limit: RING,
    }
}

fn consult_call() -> CallId {
    CallId::from("c1;consult")
}

fn events(effects: &[ConsultEffect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            ConsultEffect::Publish(event) => Some(format!("{event:?}")),
            _ => None,
        })
        .collect()
}

fn reply(effects: &[ConsultEffect]) -> Option<Result<(), ConsultRefusal>> {
    effects.iter().find_map(|e| match e {
        ConsultEffect::Reply(r) => Some(r.clone()),
        _ => None,
    })
}

fn holds(effects: &[ConsultEffect]) -> Vec<bool> {
    effects
        .iter()
        .filter_map(|e| match e {
            ConsultEffect::Hold(on) => Some(*on),
            _ => None,
        })
        .collect()
}

/// Starts a consultation of `target` the router takes.
fn started(m: &mut ConsultMachine, target: ConsultTarget, phone: Option<&str>, t0: Instant) {
    let fx = m.handle(
        ConsultInput::Start {
            target,
            phone: phone.map(str::to_string),
        },
        &bridged(),
        t0,
    );
    assert!(
        matches!(fx.as_slice(), [ConsultEffect::Enqueue { .. }]),
        "{fx:?}"
    );
    let fx = m.handle(ConsultInput::Enqueued(Ok(())), &bridged(), t0);
    assert_eq!(reply(&fx), Some(Ok(())));
    assert_eq!(holds(&fx), vec![true]);
}

/// Rings `agent` for the consultation.
fn rung(m: &mut ConsultMachine, agent: &str, now: Instant) {
    let fx = m.handle(
        ConsultInput::Offer {
            agents: vec![aid(agent)],
            queue: "experts".into(),
        },
        &bridged(),
        now,
    );
    assert_eq!(
        fx,
        vec![ConsultEffect::Ring {
            agent: aid(agent),
            queue: "experts".into(),
            router_call: consult_call()
        }]
    );
    let fx = m.handle(
        ConsultInput::LegReady {
            router_call: consult_call(),
            consultant: Consultant {
                agent: aid(agent),
                queue: "experts".into(),
            },
            rung: true,
            offered_at: now,
        },
        &bridged(),
        now,
    );
    assert_eq!(fx, vec![ConsultEffect::AdoptLeg]);
}

/// A machine whose consultation of `target` (dialled from `phone`, if any)
/// rings `agent`.
fn ringing(target: ConsultTarget, agent: &str, phone: Option<&str>, t0: Instant) -> ConsultMachine {
    let mut m = machine();
    started(&mut m, target, phone, t0);
    rung(&mut m, agent, t0);
    m
}

fn answered(m: &mut ConsultMachine, agent: &str, now: Instant) -> Vec<ConsultEffect> {
    let fx = m.handle(ConsultInput::LegAnswered(aid(agent)), &bridged(), now);
    assert!(
        matches!(fx.as_slice(), [ConsultEffect::ConfirmAnswer { .. }]),
        "{fx:?}"
    );
    m.handle(
        ConsultInput::AnswerConfirmed {
            agent: aid(agent),
            accepted: true,
        },
        &bridged(),
        now,
    )
}

#[test]
fn a_consultation_by_name_holds_the_caller_rings_the_agent_and_transfers() {
    let t0 = Instant::now();
    let mut m = machine();
    let fx = m.handle(
        ConsultInput::Start {
            target: ConsultTarget::Agent("1002".into()),
            phone: None,
        },
        &bridged(),
        t0,
    );
    match fx.as_slice() {
        [ConsultEffect::Enqueue { queue, command }] => {
            assert_eq!(
                queue, "sales",
                "a named agent is consulted in the call's queue"
            );
            assert!(
                matches!(command, Command::EnqueueFor(c, a) if a == &aid("1002") && c.priority == u32::MAX && c.call == consult_call())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!m.holds_caller(), "not held before the router took it");
    let fx = m.handle(ConsultInput::Enqueued(Ok(())), &bridged(), t0);
    assert_eq!(holds(&fx), vec![true]);
    assert_eq!(events(&fx).len(), 1);
    assert!(events(&fx)[0].contains("ConsultStarted"));
    rung(&mut m, "1002", t0);
    assert_eq!(m.deadline(), Some(t0 + RING));
    let fx = answered(&mut m, "1002", t0 + Duration::from_secs(3));
    assert_eq!(fx[0], ConsultEffect::TakeAnswer(aid("1002")));
    assert!(events(&fx)[0].contains("ConsultAnswered"));
    assert!(m.answered() && m.holds_caller());
    assert_eq!(m.deadline(), None, "no ring limit once answered");
    let fx = m.handle(
        ConsultInput::Transfer(TransferBy::Api),
        &bridged(),
        t0 + Duration::from_secs(9),
    );
    assert_eq!(fx[0], ConsultEffect::Hold(false));
    assert_eq!(
        fx[1],
        ConsultEffect::HandOver {
            leg: LegAt::Consulted,
            router_call: consult_call(),
            since: t0,
            hang_up: true
        }
    );
    assert!(events(&fx)[0].contains("transferred"));
    assert_eq!(reply(&fx), Some(Ok(())));
    assert_eq!(m.state(), &Consultation::Idle);
}

#[test]
fn refusals_come_in_the_order_of_the_checks() {
    let t0 = Instant::now();
    let mut m = machine();
    let start = |target: &str| ConsultInput::Start {
        target: ConsultTarget::Agent(target.into()),
        phone: None,
    };
    let unbridged = CallView {
        bridged: false,
        ..bridged()
    };
    let fx = m.handle(start("1002"), &unbridged, t0);
    assert_eq!(reply(&fx), Some(Err(ConsultRefusal::NotBridged)));
    let fx = m.handle(start("1001"), &bridged(), t0);
    assert_eq!(reply(&fx), Some(Err(ConsultRefusal::ConsultsItself)));
    assert_eq!(
        ConsultRefusal::ConsultsItself.to_string(),
        "an agent cannot consult itself"
    );
    for (answer, refusal) in [
        (
            EnqueueRefusal::NoQueue("sales".into()),
            "no queue sales".to_string(),
        ),
        (
            EnqueueRefusal::Refused(crate::acd::RouterError::UnknownAgent(AgentId::from("1003"))),
            "agent 1002 cannot be consulted now: unknown agent 1003".to_string(),
        ),
        (
            EnqueueRefusal::RouterStopped,
            "the ACD router has stopped".to_string(),
        ),
    ] {
        m.handle(start("1002"), &bridged(), t0);
        let fx = m.handle(ConsultInput::Enqueued(Err(answer)), &bridged(), t0);
        assert_eq!(
            reply(&fx).map(|r| r.map_err(|e| e.to_string())),
            Some(Err(refusal))
        );
        assert!(holds(&fx).is_empty() && events(&fx).is_empty());
        assert_eq!(m.state(), &Consultation::Idle);
    }
    for input in [
        ConsultInput::Cancel,
        ConsultInput::Conference,
        ConsultInput::Transfer(TransferBy::Api),
    ] {
        let fx = m.handle(input, &bridged(), t0);
        assert!(matches!(reply(&fx), Some(Err(_))), "{fx:?}");
        assert_eq!(fx.len(), 1, "a refusal does nothing else");
    }
}

#[test]
fn a_second_consultation_is_refused_while_one_runs_or_a_conference_is_on() {
    let t0 = Instant::now();
    let mut m = machine();
    started(&mut m, ConsultTarget::Queue("experts".into()), None, t0);
    let again = ConsultInput::Start {
        target: ConsultTarget::Queue("experts".into()),
        phone: None,
    };
    let fx = m.handle(again.clone(), &bridged(), t0);
    assert_eq!(
        fx,
        vec![ConsultEffect::Reply(Err(ConsultRefusal::AlreadyRunning))]
    );
    rung(&mut m, "1003", t0);
    answered(&mut m, "1003", t0);
    let fx = m.handle(ConsultInput::Conference, &bridged(), t0);
    assert_eq!(reply(&fx), Some(Ok(())));
    let fx = m.handle(again, &bridged(), t0);
    assert_eq!(
        fx,
        vec![ConsultEffect::Reply(Err(ConsultRefusal::AlreadyRunning))]
    );
}

#[test]
fn hold_during_a_consultation_lasts_exactly_as_long_as_the_consultation() {
    let t0 = Instant::now();
    let mut m = machine();
    started(&mut m, ConsultTarget::Agent("1002".into()), None, t0);
    assert!(m.holds_caller());
    rung(&mut m, "1002", t0);
    answered(&mut m, "1002", t0);
    assert!(m.holds_caller());
    let fx = m.handle(ConsultInput::Cancel, &bridged(), t0);
    assert_eq!(fx[0], ConsultEffect::HangUpConsultant);
    assert!(events(&fx)[0].contains("cancelled"));
    assert_eq!(reply(&fx), Some(Ok(())));
    assert!(matches!(
        fx[1],
        ConsultEffect::Router(Command::CallEnded(..))
    ));
    assert_eq!(holds(&fx), vec![false]);
    assert!(!m.holds_caller());
}

#[test]
fn the_transfer_limit_refuses_an_attended_transfer_and_keeps_the_consultation() {
    let t0 = Instant::now();
    let mut m = ringing(ConsultTarget::Agent("1002".into()), "1002", None, t0);
    answered(&mut m, "1002", t0);
    let twice = CallView {
        transfers: 2,
        ..bridged()
    };
    let fx = m.handle(ConsultInput::Transfer(TransferBy::Api), &twice, t0);
    assert_eq!(
        reply(&fx).map(|r| r.map_err(|e| e.to_string())),
        Some(Err(
            "this call was transferred 2 time(s) already; at most 2 (rulebook L6)".to_string()
        ))
    );
    assert_eq!(fx.len(), 1);
    assert!(m.answered() && m.holds_caller());
}

#[test]
fn the_consulted_agent_never_answers_and_the_ring_limit_ends_a_consultation_by_name() {
    let t0 = Instant::now();
    let mut m = ringing(ConsultTarget::Agent("1002".into()), "1002", None, t0);
    let fx = m.handle(
        ConsultInput::Timer,
        &bridged(),
        t0 + RING - Duration::from_millis(1),
    );
    assert!(fx.is_empty(), "not before the ring limit");
    let fx = m.handle(ConsultInput::Timer, &bridged(), t0 + RING);
    assert_eq!(fx[0], ConsultEffect::CancelRinging(aid("1002")));
    assert!(matches!(
        &fx[1],
        ConsultEffect::Router(Command::OfferFailed(c, a, Outcome::NoAnswer)) if c == &consult_call() && a == &aid("1002")
    ));
    assert!(matches!(&fx[2], ConsultEffect::Router(Command::Dequeue(_))));
    assert!(events(&fx)[0].contains("not_answered"));
    assert_eq!(holds(&fx), vec![false]);
    assert_eq!(m.state(), &Consultation::Idle);
    assert_eq!(m.deadline(), None);
}

#[test]
fn a_queue_consultation_survives_an_agent_that_does_not_answer() {
    let t0 = Instant::now();
    let mut m = ringing(ConsultTarget::Queue("experts".into()), "1003", None, t0);
    let fx = m.handle(
        ConsultInput::LegFailed {
            agent: aid("1003"),
            outcome: Outcome::Busy,
        },
        &bridged(),
        t0,
    );
    assert!(matches!(
        fx.as_slice(),
        [ConsultEffect::Router(Command::OfferFailed(
            _,
            _,
            Outcome::Busy
        ))]
    ));
    assert!(m.holds_caller(), "the queue offers the next agent");
    rung(&mut m, "1004", t0 + Duration::from_secs(20));
    assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(20) + RING));
}

#[test]
fn a_late_answer_and_a_leg_of_an_ended_consultation_are_let_go() {
    let t0 = Instant::now();
    let mut m = ringing(ConsultTarget::Queue("experts".into()), "1003", None, t0);
    let fx = m.handle(
        ConsultInput::AnswerConfirmed {
            agent: aid("1003"),
            accepted: false,
        },
        &bridged(),
        t0,
    );
    assert_eq!(fx, vec![ConsultEffect::RejectAnswer(aid("1003"))]);
    m.handle(ConsultInput::Cancel, &bridged(), t0);
    let fx = m.handle(
        ConsultInput::Offer {
            agents: vec![aid("1004")],
            queue: "experts".into(),
        },
        &bridged(),
        t0,
    );
    assert!(matches!(
        fx.as_slice(),
        [ConsultEffect::Router(Command::OfferFailed(
            _,
            _,
            Outcome::Unreachable
        ))]
    ));
    let fx = m.handle(
        ConsultInput::LegReady {
            router_call: consult_call(),
            consultant: Consultant {
                agent: aid("1004"),
                queue: "experts".into(),
            },
            rung: true,
            offered_at: t0,
        },
        &bridged(),
        t0,
    );
    assert_eq!(fx[0], ConsultEffect::DropLeg);
}

#[test]
fn a_conference_the_agent_leaves_is_a_transfer_to_the_third_party() {
    let t0 = Instant::now();
    let mut m = ringing(ConsultTarget::Agent("1002".into()), "1002", None, t0);
    answered(&mut m, "1002", t0);
    let supervised = CallView {
        supervisor: true,
        ..bridged()
    };
    let fx = m.handle(ConsultInput::Conference, &supervised, t0);
    assert_eq!(reply(&fx), Some(Err(ConsultRefusal::SupervisorOn)));
    let t1 = t0 + Duration::from_secs(5);
    let fx = m.handle(ConsultInput::Conference, &bridged(), t1);
    assert_eq!(fx[0], ConsultEffect::Mix(aid("1002")));
    assert_eq!(holds(&fx), vec![false]);
    assert_eq!(
        m.third_party(),
        Some(&ThirdParty {
            agent: aid("1002"),
            queue: "experts".into(),
            joined_at: t1
        })
    );
    let fx = m.handle(
        ConsultInput::AgentLeft,
        &bridged(),
        t1 + Duration::from_secs(7),
    );
    assert!(events(&fx)[0].contains("talk_ms: 7000"), "{fx:?}");
    assert_eq!(
        fx[1],
        ConsultEffect::HandOver {
            leg: LegAt::Mixer(Consultant {
                agent: aid("1002"),
                queue: "experts".into()
            }),
            router_call: consult_call(),
            since: t1,
            hang_up: false
        }
    );
    assert_eq!(m.state(), &Consultation::Idle);
}

#[test]
fn the_third_party_leaving_frees_it_in_the_router() {
    let t0 = Instant::now();
    let mut m = ringing(ConsultTarget::Agent("1002".into()), "1002", None, t0);
    answered(&mut m, "1002", t0);
    m.handle(ConsultInput::Conference, &bridged(), t0);
    let fx = m.handle(ConsultInput::ThirdPartyLeft, &bridged(), t0);
    assert!(matches!(
        &fx[0],
        ConsultEffect::Router(Command::CallEnded(c, a)) if c == &consult_call() && a == &aid("1002")
    ));
    assert!(events(&fx)[0].contains("ConferenceEnded"));
    assert!(
        m.handle(ConsultInput::ThirdPartyLeft, &bridged(), t0)
            .is_empty()
    );
}

#[test]
fn a_phone_consultation_completes_by_refer_with_replaces_naming_the_other_dialog() {
    let t0 = Instant::now();
    let mut m = ringing(
        ConsultTarget::Agent("1002".into()),
        "1002",
        Some("consult-dialog"),
        t0,
    );
    let refer = |refer_dialog: &str, replaced: &str| ConsultInput::ReferReplaces {
        refer_dialog: refer_dialog.into(),
        replaced: replaced.into(),
        agent_dialog: Some("call-dialog".into()),
    };
    let fx = m.handle(refer("call-dialog", "consult-dialog"), &bridged(), t0);
    assert_eq!(
        fx,
        vec![ConsultEffect::RefuseRefer(ReplacesRefusal::NotAnswered)]
    );
    assert_eq!(ReplacesRefusal::NotAnswered.status(), 491);
    answered(&mut m, "1002", t0);
    let fx = m.handle(refer("call-dialog", "someone-else"), &bridged(), t0);
    assert_eq!(
        fx,
        vec![ConsultEffect::RefuseRefer(ReplacesRefusal::ForeignDialog(
            "someone-else".into()
        ))]
    );
    assert_eq!(ReplacesRefusal::ForeignDialog(String::new()).status(), 481);
    let fx = m.handle(refer("consult-dialog", "consult-dialog"), &bridged(), t0);
    assert!(matches!(
        fx[0],
        ConsultEffect::RefuseRefer(ReplacesRefusal::ForeignDialog(_))
    ));
    let fx = m.handle(refer("consult-dialog", "call-dialog"), &bridged(), t0);
    assert_eq!(fx[0], ConsultEffect::AcceptRefer);
    assert!(
        !fx.contains(&ConsultEffect::HangUpPhone),
        "the phone ends its dialogs after the NOTIFY"
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, ConsultEffect::HandOver { hang_up: false, .. }))
    );
    assert_eq!(m.state(), &Consultation::Idle);
}

#[test]
fn a_consultation_from_the_phone_ends_with_its_dialog_and_joins_no_conference() {
    let t0 = Instant::now();
    let mut m = ringing(
        ConsultTarget::Agent("1002".into()),
        "1002",
        Some("consult-dialog"),
        t0,
    );
    answered(&mut m, "1002", t0);
    let fx = m.handle(ConsultInput::Conference, &bridged(), t0);
    assert_eq!(reply(&fx), Some(Err(ConsultRefusal::DialledFromPhone)));
    let fx = m.handle(ConsultInput::PhoneLeft, &bridged(), t0);
    assert!(fx.contains(&ConsultEffect::HangUpConsultant));
    assert!(
        !fx.contains(&ConsultEffect::HangUpPhone),
        "it is over already"
    );
    assert!(events(&fx)[0].contains("agent_hung_up"));
}

#[test]
fn the_consultant_hanging_up_is_not_sent_a_bye() {
    let t0 = Instant::now();
    let mut m = ringing(ConsultTarget::Agent("1002".into()), "1002", None, t0);
    answered(&mut m, "1002", t0);
    let fx = m.handle(
        ConsultInput::ConsultantLeft { by_bye: true },
        &bridged(),
        t0,
    );
    assert!(!fx.contains(&ConsultEffect::HangUpConsultant));
    assert!(events(&fx)[0].contains("consultant_hung_up"));
    assert_eq!(holds(&fx), vec![false]);
}

#[test]
fn a_withdrawn_offer_stops_ringing_and_the_call_ending_dequeues_the_consultation() {
    let t0 = Instant::now();
    let mut m = ringing(ConsultTarget::Queue("experts".into()), "1003", None, t0);
    let fx = m.handle(ConsultInput::Withdrawn(aid("1003")), &bridged(), t0);
    assert_eq!(fx, vec![ConsultEffect::CancelRinging(aid("1003"))]);
    assert_eq!(m.deadline(), None);
    assert!(
        m.handle(ConsultInput::Withdrawn(aid("1003")), &bridged(), t0)
            .is_empty()
    );
    let fx = m.handle(ConsultInput::End(ConsultEnd::CallEnded), &bridged(), t0);
    assert_eq!(
        fx[0],
        ConsultEffect::Router(Command::Dequeue(consult_call()))
    );
    assert!(events(&fx)[0].contains("call_ended"));
    assert_eq!(holds(&fx), vec![false]);
    assert!(
        m.handle(ConsultInput::End(ConsultEnd::CallEnded), &bridged(), t0)
            .is_empty(),
        "the router hears of the end once"
    );
}

#[test]
fn a_blind_refer_is_checked_in_order_and_the_survey_is_no_transfer() {
    let m = machine();
    let refer = |user: Result<&str, &str>, known: bool, survey: bool| BlindRefer {
        user: user.map(str::to_string).map_err(str::to_string),
        known,
        survey,
    };
    let at_limit = CallView {
        transfers: 2,
        ..bridged()
    };
    let ringing = CallView {
        bridged: false,
        ..bridged()
    };
    let bad = m.blind_refer(&refer(Err("no Refer-To"), false, false), &ringing);
    assert_eq!(
        bad,
        Err(BlindReferRefusal::BadReferTo("no Refer-To".into()))
    );
    assert_eq!(bad.unwrap_err().status(), 400);
    let unknown = m.blind_refer(&refer(Ok("999"), false, false), &ringing);
    assert_eq!(
        unknown.clone().map_err(|e| e.to_string()),
        Err("`999` is no hotline number, queue or agent".to_string())
    );
    assert_eq!(unknown.unwrap_err().status(), 404);
    assert_eq!(
        m.blind_refer(&refer(Ok("sales"), true, false), &ringing),
        Err(BlindReferRefusal::NotConnected)
    );
    let limit = m.blind_refer(&refer(Ok("sales"), true, false), &at_limit);
    assert_eq!(
        limit.clone().map_err(|e| e.to_string()),
        Err("this call was transferred 2 time(s) already; at most 2 (rulebook L6)".to_string())
    );
    assert_eq!(limit.unwrap_err().status(), 403);
    assert_eq!(
        m.blind_refer(&refer(Ok("survey"), true, true), &at_limit),
        Ok(())
    );
    assert_eq!(
        m.blind_refer(&refer(Ok("sales"), true, false), &bridged()),
        Ok(())
    );
}

// The property test: a model of the legs the actor holds, driven by the
// effects, and the machine's invariants after every step.

#[derive(Debug, Clone)]
enum Step {
    Start(bool, bool),
    Enqueued(bool),
    Offer(u8),
    Withdrawn(u8),
    Ready(u8, bool),
    Failed(u8),
    Answered(u8, bool),
    ConsultantLeft(bool),
    PhoneLeft,
    Transfer(bool),
    Refer(bool),
    Conference(bool),
    Cancel,
    End,
    ThirdPartyLeft,
    AgentLeft,
    Tick(u8),
}

fn step() -> impl PropStrategy<Value = Step> {
    prop_oneof![
        (proptest::bool::ANY, proptest::bool::ANY).prop_map(|(q, p)| Step::Start(q, p)),
        proptest::bool::ANY.prop_map(Step::Enqueued),
        (0u8..3).prop_map(Step::Offer),
        (0u8..3).prop_map(Step::Withdrawn),
        (0u8..3, proptest::bool::ANY).prop_map(|(a, r)| Step::Ready(a, r)),
        (0u8..3).prop_map(Step::Failed),
        (0u8..3, proptest::bool::ANY).prop_map(|(a, ok)| Step::Answered(a, ok)),
        proptest::bool::ANY.prop_map(Step::ConsultantLeft),
        Just(Step::PhoneLeft),
        proptest::bool::ANY.prop_map(Step::Transfer),
        proptest::bool::ANY.prop_map(Step::Refer),
        proptest::bool::ANY.prop_map(Step::Conference),
        Just(Step::Cancel),
        Just(Step::End),
        Just(Step::ThirdPartyLeft),
        Just(Step::AgentLeft),
        (0u8..20).prop_map(Step::Tick),
    ]
}

/// A leg the actor holds for the consultation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Ringing,
    Answered,
    Mixed,
}

#[derive(Debug, Default)]
struct World {
    legs: BTreeMap<String, Leg>,
    /// Legs rung and not yet picked up by `LegReady`.
    pending: Vec<String>,
    /// The agent whose leg was just reported ready.
    just_ready: Option<String>,
    /// The agent whose answer waits for the router's confirmation.
    confirming: Option<String>,
    held: bool,
    /// Router commands about the consultation as a whole (dequeue, call ended).
    router_endings: usize,
    /// Consultations the router took.
    enqueued: usize,
    /// Hand-overs carried out.
    handovers: usize,
}

const AGENTS: [&str; 3] = ["1002", "1003", "1004"];

proptest! {
    #[test]
    fn invariants_hold_after_every_step(steps in proptest::collection::vec(step(), 1..60)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut m = machine();
        let mut w = World::default();
        for s in steps {
            let view = bridged();
            let input = match s {
                Step::Start(queue, phone) => ConsultInput::Start {
                    target: if queue { ConsultTarget::Queue("experts".into()) } else { ConsultTarget::Agent("1002".into()) },
                    phone: phone.then(|| "consult-dialog".to_string()),
                },
                Step::Enqueued(ok) => ConsultInput::Enqueued(if ok { Ok(()) } else { Err(EnqueueRefusal::Refused(crate::acd::RouterError::UnknownAgent(AgentId::from("busy")))) }),
                Step::Offer(a) => ConsultInput::Offer { agents: vec![aid(AGENTS[a as usize])], queue: "experts".into() },
                Step::Withdrawn(a) => ConsultInput::Withdrawn(aid(AGENTS[a as usize])),
                Step::Ready(a, ok) => {
                    let agent = AGENTS[a as usize];
                    let Some(i) = w.pending.iter().position(|p| p == agent) else { continue };
                    w.pending.remove(i);
                    // The router reserves an agent: never two legs of one agent.
                    if w.legs.contains_key(agent) { continue }
                    w.legs.insert(agent.to_string(), Leg::Ringing);
                    w.just_ready = Some(agent.to_string());
                    ConsultInput::LegReady { router_call: consult_call(), consultant: Consultant { agent: aid(agent), queue: "experts".into() }, rung: ok, offered_at: now }
                }
                Step::Failed(a) => {
                    let agent = AGENTS[a as usize];
                    if w.legs.get(agent) != Some(&Leg::Ringing) { continue }
                    w.legs.remove(agent);
                    ConsultInput::LegFailed { agent: aid(agent), outcome: Outcome::Declined }
                }
                Step::Answered(a, ok) => {
                    let agent = AGENTS[a as usize];
                    if w.legs.get(agent) != Some(&Leg::Ringing) { continue }
                    let fx = m.handle(ConsultInput::LegAnswered(aid(agent)), &view, now);
                    if fx.is_empty() { continue }
                    prop_assert!(matches!(fx.as_slice(), [ConsultEffect::ConfirmAnswer { .. }]), "asks the router");
                    w.confirming = Some(agent.to_string());
                    ConsultInput::AnswerConfirmed { agent: aid(agent), accepted: ok }
                }
                Step::ConsultantLeft(bye) => ConsultInput::ConsultantLeft { by_bye: bye },
                Step::PhoneLeft => ConsultInput::PhoneLeft,
                Step::Transfer(limit) => {
                    let view = CallView { transfers: if limit { 2 } else { 0 }, ..bridged() };
                    let fx = m.handle(ConsultInput::Transfer(TransferBy::Api), &view, now);
                    apply(&mut w, &fx)?;
                    check(&m, &w, now)?;
                    continue;
                }
                Step::Refer(call_dialog) => ConsultInput::ReferReplaces {
                    refer_dialog: if call_dialog { "call-dialog" } else { "consult-dialog" }.into(),
                    replaced: if call_dialog { "consult-dialog" } else { "call-dialog" }.into(),
                    agent_dialog: Some("call-dialog".into()),
                },
                Step::Conference(supervisor) => {
                    let view = CallView { supervisor, ..bridged() };
                    let fx = m.handle(ConsultInput::Conference, &view, now);
                    apply(&mut w, &fx)?;
                    check(&m, &w, now)?;
                    continue;
                }
                Step::Cancel => ConsultInput::Cancel,
                Step::End => ConsultInput::End(ConsultEnd::CallEnded),
                Step::ThirdPartyLeft => ConsultInput::ThirdPartyLeft,
                Step::AgentLeft => ConsultInput::AgentLeft,
                Step::Tick(s) => {
                    now += Duration::from_secs(u64::from(s));
                    ConsultInput::Timer
                }
            };
            let fx = m.handle(input, &view, now);
            apply(&mut w, &fx)?;
            check(&m, &w, now)?;
        }
        // The call ends: nothing of the consultation is left.
        let fx = m.handle(ConsultInput::Enqueued(Err(EnqueueRefusal::RouterStopped)), &bridged(), now);
        apply(&mut w, &fx)?;
        let fx = m.handle(ConsultInput::End(ConsultEnd::CallEnded), &bridged(), now);
        apply(&mut w, &fx)?;
        let fx = m.handle(ConsultInput::ThirdPartyLeft, &bridged(), now);
        apply(&mut w, &fx)?;
        w.pending.clear();
        prop_assert_eq!(m.state(), &Consultation::Idle);
        prop_assert!(w.legs.is_empty(), "legs left: {:?}", w.legs);
        prop_assert!(!w.held);
        prop_assert_eq!(w.router_endings + w.handovers, w.enqueued, "the router hears of each consultation's end exactly once");
    }
}

fn apply(w: &mut World, fx: &[ConsultEffect]) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut last_ready: Option<String> = None;
    for e in fx {
        match e {
            ConsultEffect::Reply(_)
            | ConsultEffect::Publish(_)
            | ConsultEffect::AcceptRefer
            | ConsultEffect::RefuseRefer(_) => {}
            ConsultEffect::Enqueue { .. } => {}
            ConsultEffect::Router(Command::Dequeue(_)) => w.router_endings += 1,
            ConsultEffect::Router(Command::CallEnded(..)) => w.router_endings += 1,
            ConsultEffect::Router(Command::OfferFailed(_, agent, _)) => {
                // A leg dropped at once, or never rung.
                if let Some(a) = last_ready.take() {
                    prop_assert_eq!(&a, &agent.0);
                }
            }
            ConsultEffect::Router(other) => prop_assert!(false, "unexpected {:?}", other),
            ConsultEffect::Ring { agent, .. } => w.pending.push(agent.0.clone()),
            ConsultEffect::AdoptLeg => {
                prop_assert!(
                    w.just_ready.take().is_some(),
                    "a leg adopted that was not reported"
                );
            }
            ConsultEffect::DropLeg => {
                // The leg just reported ready is cancelled.
                last_ready = w.just_ready.take();
                prop_assert!(last_ready.is_some(), "a leg dropped that was not reported");
                if let Some(a) = &last_ready {
                    w.legs.remove(a);
                }
            }
            ConsultEffect::CancelRinging(agent) => {
                prop_assert_eq!(
                    w.legs.remove(&agent.0),
                    Some(Leg::Ringing),
                    "cancelled {} twice or never rung",
                    agent
                );
            }
            ConsultEffect::ConfirmAnswer { .. } => {}
            ConsultEffect::TakeAnswer(agent) => {
                let confirming = w.confirming.take();
                prop_assert_eq!(confirming.as_deref(), Some(agent.0.as_str()));
                prop_assert!(
                    !w.legs.values().any(|l| *l != Leg::Ringing),
                    "a second consulted leg answered"
                );
                prop_assert_eq!(
                    w.legs.insert(agent.0.clone(), Leg::Answered),
                    Some(Leg::Ringing)
                );
            }
            ConsultEffect::RejectAnswer(agent) => {
                let confirming = w.confirming.take();
                prop_assert_eq!(confirming.as_deref(), Some(agent.0.as_str()));
            }
            ConsultEffect::HangUpConsultant => {
                let answered: Vec<String> = w
                    .legs
                    .iter()
                    .filter(|(_, l)| **l == Leg::Answered)
                    .map(|(a, _)| a.clone())
                    .collect();
                prop_assert_eq!(answered.len(), 1);
                w.legs.remove(&answered[0]);
            }
            ConsultEffect::HangUpPhone => {}
            ConsultEffect::Hold(on) => {
                prop_assert!(w.held != *on, "hold switched to what it was");
                w.held = *on;
            }
            ConsultEffect::HandOver { leg, .. } => {
                let kind = match leg {
                    LegAt::Consulted => Leg::Answered,
                    LegAt::Mixer(_) => Leg::Mixed,
                };
                let taking: Vec<String> = w
                    .legs
                    .iter()
                    .filter(|(_, l)| **l == kind)
                    .map(|(a, _)| a.clone())
                    .collect();
                prop_assert_eq!(taking.len(), 1, "the hand-over needs one leg");
                w.legs.remove(&taking[0]);
                w.handovers += 1;
            }
            ConsultEffect::Mix(agent) => {
                prop_assert_eq!(
                    w.legs.insert(agent.0.clone(), Leg::Mixed),
                    Some(Leg::Answered)
                );
            }
        }
    }
    if fx.contains(&ConsultEffect::Hold(true)) {
        w.enqueued += 1;
    }
    Ok(())
}

fn check(
    m: &ConsultMachine,
    w: &World,
    _now: Instant,
) -> Result<(), proptest::test_runner::TestCaseError> {
    prop_assert_eq!(
        w.held,
        m.holds_caller(),
        "held for the consultation iff it rings or talks"
    );
    let answered = w.legs.values().filter(|l| **l == Leg::Answered).count();
    prop_assert!(answered <= 1, "at most one consulted leg answered");
    prop_assert_eq!(answered == 1, m.answered());
    let mixed = w.legs.values().filter(|l| **l == Leg::Mixed).count();
    prop_assert_eq!(
        mixed,
        usize::from(m.third_party().is_some()),
        "a conference has exactly one third party"
    );
    match m.state() {
        Consultation::Ringing { rung, .. } => {
            let ringing = w.legs.values().filter(|l| **l == Leg::Ringing).count();
            prop_assert_eq!(
                ringing,
                rung.len(),
                "every ringing leg is known to the machine"
            );
            prop_assert_eq!(m.deadline(), rung.iter().map(|r| r.deadline).min());
        }
        _ => {
            prop_assert!(
                !w.legs.values().any(|l| *l == Leg::Ringing),
                "ringing legs outside ringing"
            );
            prop_assert_eq!(m.deadline(), None);
        }
    }
    Ok(())
}
