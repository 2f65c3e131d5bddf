//! Tests of the supervisor session: from the API and from a feature code,
//! refusals, mode changes by API and keys, the end of a session by either
//! side, the mixing clock and the 60 ms silence rule, and a property test over
//! random input sequences checking the invariants after every step.

use std::time::{Duration, Instant};

use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as PropStrategy;

use super::*;

fn bridged() -> CallView {
    CallView {
        agent: Some("1001".into()),
        three_way: false,
    }
}

fn api(name: &str) -> Supervisor {
    Supervisor {
        name: name.into(),
        via: Via::Api,
    }
}

fn phone(name: &str) -> Supervisor {
    Supervisor {
        name: name.into(),
        via: Via::Phone,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn events(effects: &[MonitorEffect]) -> Vec<Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            MonitorEffect::Publish(event) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn start(supervisor: Supervisor, mode: MonitorMode) -> MonitorInput {
    MonitorInput::Start { supervisor, mode }
}

#[test]
fn the_api_rings_the_supervisor_who_listens_once_it_answers() {
    let t0 = Instant::now();
    let mut m = MonitorMachine::new("c1");
    let fx = m.handle(start(api("boss"), MonitorMode::Listen), &bridged(), t0);
    assert_eq!(fx, vec![MonitorEffect::Ring]);
    let fx = m.handle(MonitorInput::Rung(Ok(())), &bridged(), t0);
    assert_eq!(fx, vec![MonitorEffect::Reply(Ok(()))]);
    assert!(!m.on(), "not on before the phone answers");
    let fx = m.handle(MonitorInput::Answered, &bridged(), t0 + ms(2000));
    assert_eq!(fx[0], MonitorEffect::Mix);
    assert_eq!(
        events(&fx),
        vec![Event::MonitorStarted {
            call_id: "c1".into(),
            supervisor: "boss".into(),
            agent: "1001".into(),
            mode: "listen",
            via: "api",
        }]
    );
    let fx = m.handle(MonitorInput::Stop, &bridged(), t0 + ms(9000));
    assert_eq!(fx[0], MonitorEffect::HangUp(Via::Api));
    assert_eq!(
        events(&fx),
        vec![Event::MonitorEnded {
            call_id: "c1".into(),
            supervisor: "boss".into(),
            reason: "stopped",
            duration_ms: Some(7000),
        }]
    );
    assert_eq!(fx.last(), Some(&MonitorEffect::Reply(Ok(()))));
    assert_eq!(m.session(), &Session::Idle);
}

#[test]
fn a_phone_that_cannot_be_rung_is_a_refusal_and_leaves_nothing() {
    let t0 = Instant::now();
    let mut m = MonitorMachine::new("c1");
    m.handle(start(api("boss"), MonitorMode::Whisper), &bridged(), t0);
    let fx = m.handle(
        MonitorInput::Rung(Err(ControlError::PhoneNotRegistered("boss".into()))),
        &bridged(),
        t0,
    );
    assert_eq!(
        fx,
        vec![MonitorEffect::Reply(Err(MonitorRefusal::Unreachable(
            ControlError::PhoneNotRegistered("boss".into())
        )))]
    );
    assert_eq!(m.session(), &Session::Idle);
}

#[test]
fn refusals_name_why() {
    let t0 = Instant::now();
    let mut m = MonitorMachine::new("c1");
    let unbridged = CallView {
        agent: None,
        three_way: false,
    };
    let fx = m.handle(start(api("boss"), MonitorMode::Listen), &unbridged, t0);
    assert_eq!(
        fx,
        vec![MonitorEffect::Reply(Err(MonitorRefusal::NotBridged))]
    );
    let three_way = CallView {
        three_way: true,
        ..bridged()
    };
    let fx = m.handle(start(phone("boss"), MonitorMode::Listen), &three_way, t0);
    assert_eq!(fx, vec![MonitorEffect::Refuse(MonitorRefusal::ThreeWay)]);
    assert_eq!(
        MonitorRefusal::ThreeWay.to_string(),
        "a three-way call is going on"
    );
    for input in [MonitorInput::Mode(MonitorMode::Barge), MonitorInput::Stop] {
        let fx = m.handle(input, &bridged(), t0);
        assert_eq!(
            fx,
            vec![MonitorEffect::Reply(Err(MonitorRefusal::NobodyMonitors))]
        );
    }
}

#[test]
fn one_supervisor_at_a_time_and_the_same_one_asking_again_changes_the_mode() {
    let t0 = Instant::now();
    let mut m = MonitorMachine::new("c1");
    m.handle(start(phone("boss"), MonitorMode::Listen), &bridged(), t0);
    m.handle(MonitorInput::Answered, &bridged(), t0);
    let fx = m.handle(start(api("other"), MonitorMode::Listen), &bridged(), t0);
    assert_eq!(
        fx,
        vec![MonitorEffect::Reply(Err(MonitorRefusal::Taken(
            "boss".into()
        )))]
    );
    assert_eq!(
        MonitorRefusal::Taken("boss".into()).to_string(),
        "supervisor boss already monitors this call"
    );
    let fx = m.handle(start(phone("boss"), MonitorMode::Barge), &bridged(), t0);
    assert_eq!(
        fx,
        vec![MonitorEffect::Refuse(MonitorRefusal::AlreadyOn(
            "boss".into()
        ))]
    );
    let fx = m.handle(start(api("boss"), MonitorMode::Barge), &bridged(), t0);
    assert_eq!(fx[0], MonitorEffect::SetMode(MonitorMode::Barge));
    assert_eq!(fx.last(), Some(&MonitorEffect::Reply(Ok(()))));
    assert_eq!(m.mode(), Some(MonitorMode::Barge));
}

#[test]
fn keys_switch_the_mode_once_on_and_the_same_mode_changes_nothing() {
    let t0 = Instant::now();
    let mut m = MonitorMachine::new("c1");
    m.handle(start(phone("boss"), MonitorMode::Listen), &bridged(), t0);
    assert!(
        m.handle(MonitorInput::Key('2'), &bridged(), t0).is_empty(),
        "no key before the session is on"
    );
    m.handle(MonitorInput::Answered, &bridged(), t0);
    let fx = m.handle(MonitorInput::Key('2'), &bridged(), t0);
    assert_eq!(fx[0], MonitorEffect::SetMode(MonitorMode::Whisper));
    assert_eq!(
        events(&fx),
        vec![Event::MonitorModeChanged {
            call_id: "c1".into(),
            supervisor: "boss".into(),
            mode: "whisper",
        }]
    );
    assert!(m.handle(MonitorInput::Key('2'), &bridged(), t0).is_empty());
    assert!(m.handle(MonitorInput::Key('9'), &bridged(), t0).is_empty());
    let fx = m.handle(MonitorInput::Mode(MonitorMode::Whisper), &bridged(), t0);
    assert_eq!(fx, vec![MonitorEffect::Reply(Ok(()))]);
}

#[test]
fn the_session_ends_when_either_side_leaves() {
    let t0 = Instant::now();
    let mut m = MonitorMachine::new("c1");
    m.handle(start(phone("boss"), MonitorMode::Listen), &bridged(), t0);
    m.handle(MonitorInput::Answered, &bridged(), t0);
    let fx = m.handle(MonitorInput::SupervisorLeft, &bridged(), t0 + ms(500));
    assert_eq!(fx[0], MonitorEffect::Release, "no BYE to a phone that left");
    assert!(matches!(
        &events(&fx)[0],
        Event::MonitorEnded {
            reason: "supervisor_hung_up",
            duration_ms: Some(500),
            ..
        }
    ));
    m.handle(start(api("boss"), MonitorMode::Listen), &bridged(), t0);
    m.handle(MonitorInput::Rung(Ok(())), &bridged(), t0);
    let fx = m.handle(MonitorInput::End(MonitorEnd::CallLeftAgent), &bridged(), t0);
    assert_eq!(
        fx[0],
        MonitorEffect::HangUp(Via::Api),
        "CANCEL while it rings"
    );
    assert!(matches!(
        &events(&fx)[0],
        Event::MonitorEnded {
            reason: "call_left_agent",
            duration_ms: None,
            ..
        }
    ));
    m.handle(start(api("boss"), MonitorMode::Listen), &bridged(), t0);
    m.handle(MonitorInput::Rung(Ok(())), &bridged(), t0);
    let fx = m.handle(MonitorInput::NotAnswered, &bridged(), t0);
    assert_eq!(fx[0], MonitorEffect::Release);
    assert!(
        m.handle(MonitorInput::SupervisorLeft, &bridged(), t0)
            .is_empty()
    );
}

#[test]
fn an_answer_with_unusable_media_hangs_the_supervisor_up() {
    let t0 = Instant::now();
    let mut m = MonitorMachine::new("c1");
    m.handle(start(api("boss"), MonitorMode::Listen), &bridged(), t0);
    m.handle(MonitorInput::Rung(Ok(())), &bridged(), t0);
    let fx = m.handle(MonitorInput::UnusableAnswer, &bridged(), t0);
    assert_eq!(fx[0], MonitorEffect::HangUp(Via::Api));
    assert!(matches!(
        &events(&fx)[0],
        Event::MonitorEnded {
            reason: "unusable_sdp",
            duration_ms: None,
            ..
        }
    ));
    assert!(!m.on());
}

#[test]
fn the_mix_clock_sends_the_frames_due_and_starts_afresh_after_a_stall() {
    let t0 = Instant::now();
    let mut clock = MixClock::start(t0);
    assert_eq!(clock.deadline(), t0 + TICK);
    assert_eq!(clock.due(t0 + ms(19)), 0);
    assert_eq!(clock.due(t0 + ms(20)), 1);
    assert_eq!(clock.due(t0 + ms(61)), 2, "frames at 40 and 60 ms");
    assert_eq!(clock.deadline(), t0 + ms(80));
    // A stall: one frame now, not a burst of the missed ones.
    assert_eq!(clock.due(t0 + ms(1000)), 1);
    assert_eq!(clock.deadline(), t0 + ms(1020));
}

#[test]
fn the_supervisors_voice_goes_alone_only_after_60_ms_of_silence_of_its_carrier() {
    let t0 = Instant::now();
    let mut clock = MixClock::start(t0);
    clock.heard(Party::Caller, t0 + ms(100));
    clock.heard(Party::Agent, t0 + ms(100));
    // The agent hears a whispering supervisor inside the caller's packets.
    assert!(!clock.speaks_alone(Party::Agent, MonitorMode::Whisper, t0 + ms(160)));
    assert!(clock.speaks_alone(Party::Agent, MonitorMode::Whisper, t0 + ms(161)));
    // Nobody hears a listening supervisor; the caller hears only a barging one.
    assert!(!clock.speaks_alone(Party::Agent, MonitorMode::Listen, t0 + ms(500)));
    assert!(!clock.speaks_alone(Party::Caller, MonitorMode::Whisper, t0 + ms(500)));
    assert!(clock.speaks_alone(Party::Caller, MonitorMode::Barge, t0 + ms(500)));
    clock.heard(Party::Agent, t0 + ms(480));
    assert!(!clock.speaks_alone(Party::Caller, MonitorMode::Barge, t0 + ms(500)));
}

#[test]
fn a_held_caller_hears_the_music_not_a_barging_supervisor_and_a_consultation_silences_both() {
    let t0 = Instant::now();
    let clock = MixClock::start(t0);
    let later = t0 + ms(500);
    assert_eq!(
        clock.lone_voice(MonitorMode::Barge, later, false, false),
        LoneVoice {
            agent: true,
            caller: true
        }
    );
    assert_eq!(
        clock.lone_voice(MonitorMode::Barge, later, false, true),
        LoneVoice {
            agent: true,
            caller: false
        },
        "monitoring during a hold: the agent still hears the supervisor"
    );
    assert_eq!(
        clock.lone_voice(MonitorMode::Barge, later, true, false),
        LoneVoice::default()
    );
    assert_eq!(
        clock.lone_voice(MonitorMode::Listen, later, false, false),
        LoneVoice::default()
    );
}

// The property test: random inputs, the invariants after every step.

#[derive(Debug, Clone)]
enum Step {
    Start(bool, u8, u8),
    Rung(bool),
    Answered,
    Unusable,
    NotAnswered,
    Mode(u8),
    Key(u8),
    Stop,
    Left,
    End,
    Wait(u8),
}

fn step() -> impl PropStrategy<Value = Step> {
    prop_oneof![
        (proptest::bool::ANY, 0u8..2, 0u8..3).prop_map(|(a, s, m)| Step::Start(a, s, m)),
        proptest::bool::ANY.prop_map(Step::Rung),
        Just(Step::Answered),
        Just(Step::Unusable),
        Just(Step::NotAnswered),
        (0u8..3).prop_map(Step::Mode),
        (0u8..5).prop_map(Step::Key),
        Just(Step::Stop),
        Just(Step::Left),
        Just(Step::End),
        (0u8..50).prop_map(Step::Wait),
    ]
}

const MODES: [MonitorMode; 3] = [
    MonitorMode::Listen,
    MonitorMode::Whisper,
    MonitorMode::Barge,
];

proptest! {
    #[test]
    fn invariants_hold_after_every_step(steps in proptest::collection::vec(step(), 1..60)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut m = MonitorMachine::new("c1");
        // Legs the actor holds for the supervisor, sessions started and ended.
        let mut leg = false;
        let mut mixing = false;
        // Sessions announced started and not yet announced ended.
        let mut open = 0i32;
        let mut mode = None;
        for s in steps {
            let input = match s {
                Step::Start(by_api, who, m) => {
                    let name = ["boss", "other"][who as usize];
                    let supervisor = if by_api { api(name) } else { phone(name) };
                    start(supervisor, MODES[m as usize])
                }
                Step::Rung(ok) => MonitorInput::Rung(if ok { Ok(()) } else { Err(ControlError::LegFailed("unreachable".into())) }),
                Step::Answered => MonitorInput::Answered,
                Step::Unusable => MonitorInput::UnusableAnswer,
                Step::NotAnswered => MonitorInput::NotAnswered,
                Step::Mode(i) => MonitorInput::Mode(MODES[i as usize]),
                Step::Key(k) => MonitorInput::Key(['1', '2', '3', '4', '#'][k as usize]),
                Step::Stop => MonitorInput::Stop,
                Step::Left => MonitorInput::SupervisorLeft,
                Step::End => MonitorInput::End(MonitorEnd::CallEnded),
                Step::Wait(n) => {
                    now += ms(u64::from(n) * 10);
                    continue;
                }
            };
            let was = m.session().clone();
            let fx = m.handle(input, &bridged(), now);
            let mut replies = 0;
            for e in &fx {
                match e {
                    MonitorEffect::Ring | MonitorEffect::Accept => {
                        prop_assert!(!leg, "a second supervisor leg");
                        leg = true;
                    }
                    MonitorEffect::Mix => {
                        prop_assert!(leg && !mixing);
                        mixing = true;
                    }
                    MonitorEffect::HangUp(_) | MonitorEffect::Release => {
                        prop_assert!(leg, "a leg ended twice or never started");
                        leg = false;
                        mixing = false;
                    }
                    MonitorEffect::SetMode(new) => {
                        prop_assert!(mode != Some(*new), "a mode change to the mode on");
                        mode = Some(*new);
                    }
                    MonitorEffect::Reply(_) => replies += 1,
                    MonitorEffect::Refuse(_) => {}
                    MonitorEffect::Publish(Event::MonitorStarted { .. }) => open += 1,
                    MonitorEffect::Publish(Event::MonitorEnded { duration_ms, .. }) => {
                        if duration_ms.is_some() {
                            open -= 1;
                        }
                        prop_assert_eq!(duration_ms.is_some(), matches!(was, Session::On { .. }), "a duration only for a session that was on");
                    }
                    MonitorEffect::Publish(Event::MonitorModeChanged { .. }) => {}
                    MonitorEffect::Publish(other) => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            prop_assert!(replies <= 1, "one answer per command");
            // A failed ring leaves no leg to end.
            if matches!(was, Session::Ringing { .. }) && m.session() == &Session::Idle && fx.iter().any(|e| matches!(e, MonitorEffect::Reply(Err(MonitorRefusal::Unreachable(_))))) {
                leg = false;
            }
            if m.session() == &Session::Idle {
                mode = None;
            } else if mode.is_none() {
                mode = m.mode();
            }
            prop_assert_eq!(mode, m.mode());
            prop_assert_eq!(leg, m.supervisor().is_some(), "a supervisor leg iff a session");
            prop_assert_eq!(mixing, m.on(), "mixing iff the supervisor is on");
            prop_assert_eq!(open, i32::from(m.on()), "a session on was announced once, and its end once");
        }
        let fx = m.handle(MonitorInput::End(MonitorEnd::CallEnded), &bridged(), now);
        for e in events(&fx) {
            if let Event::MonitorEnded { duration_ms: Some(_), .. } = e {
                open -= 1;
            }
        }
        prop_assert_eq!(m.session(), &Session::Idle);
        prop_assert_eq!(open, 0, "every session that started ended");
    }
}
