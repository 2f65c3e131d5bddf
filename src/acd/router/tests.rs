//! Tests of the router: each strategy on a fixed scenario, FIFO and priority, failed
//! offers, escalation, wrap-up, no-answer, pending logout, ring-all, and a property test
//! over random operation sequences that checks the router's invariants after every step.

use std::time::{Duration, Instant};

use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as PropStrategy;

use super::*;
use crate::acd::model::{Escalation, Skill};

fn aid(s: &str) -> AgentId {
    AgentId::from(s)
}
fn cid(s: &str) -> CallId {
    CallId::from(s)
}
fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

fn queue(id: &str, strategy: Strategy) -> QueueConfig {
    QueueConfig {
        strategy,
        ..QueueConfig::new(id)
    }
}

fn agent(id: &str, queues: &[&str], skills: &[(&str, u8)]) -> AgentConfig {
    AgentConfig {
        id: aid(id),
        queues: queues.iter().map(|q| QueueId::from(*q)).collect(),
        skills: skills.iter().map(|(n, p)| Skill::new(n, *p)).collect(),
    }
}

fn caller(call: &str, queue: &str, priority: u32, at: Instant) -> Caller {
    Caller {
        call: cid(call),
        queue: QueueId::from(queue),
        priority,
        enqueued_at: at,
        skills: Vec::new(),
    }
}

fn offers(ds: &[Decision]) -> Vec<(String, String)> {
    ds.iter()
        .filter_map(|d| match d {
            Decision::Offer { call, agent, .. } => Some((call.0.clone(), agent.0.clone())),
            _ => None,
        })
        .collect()
}

fn no_wrap() -> RouterOptions {
    RouterOptions {
        wrap_up: Duration::ZERO,
        ..RouterOptions::default()
    }
}

fn state(r: &Router, a: &str) -> AgentState {
    r.agent_state(&aid(a))
        .map(|(s, _)| s.clone())
        .unwrap_or(AgentState::LoggedOut)
}

/// Four agents with a history: a1 3 calls / 30 s, a2 1 call / 100 s, a3 2 calls / 10 s,
/// a4 2 calls / 120 s; then ready in the order a4, a1, a2, a3.
fn scenario(strategy: Strategy) -> (Router, Instant) {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(queue("q", strategy)).unwrap();
    let history = [("a1", 3, 10), ("a2", 1, 100), ("a3", 2, 5), ("a4", 2, 60)];
    for (name, _, _) in history {
        r.add_agent(agent(name, &["q"], &[])).unwrap();
    }
    let mut t = 0;
    let mut n = 0;
    for (name, calls, talk) in history {
        r.agent_login(&aid(name), secs(t0, t)).unwrap();
        for _ in 0..calls {
            let call = format!("h{n}");
            n += 1;
            let d = r
                .enqueue(caller(&call, "q", 0, secs(t0, t)), secs(t0, t))
                .unwrap();
            assert_eq!(
                offers(&d),
                vec![(call.clone(), name.to_owned())],
                "{strategy:?}"
            );
            r.offer_answered(&cid(&call), &aid(name), secs(t0, t))
                .unwrap();
            t += talk;
            r.call_ended(&cid(&call), &aid(name), secs(t0, t)).unwrap();
        }
        r.agent_not_ready(&aid(name), "break", secs(t0, t)).unwrap();
    }
    for (i, name) in ["a4", "a1", "a2", "a3"].iter().enumerate() {
        let d = r
            .agent_ready(&aid(name), secs(t0, 1000 + i as u64))
            .unwrap();
        assert!(offers(&d).is_empty());
    }
    r.check_invariants().unwrap();
    (r, secs(t0, 2000))
}

fn first_offer(strategy: Strategy) -> String {
    let (mut r, now) = scenario(strategy);
    let d = r.enqueue(caller("c", "q", 0, now), now).unwrap();
    let o = offers(&d);
    assert_eq!(o.len(), 1, "{strategy:?}: {d:?}");
    o[0].1.clone()
}

#[test]
fn each_strategy_picks_its_agent() {
    assert_eq!(first_offer(Strategy::LongestIdle), "a4");
    assert_eq!(first_offer(Strategy::FewestCalls), "a2");
    assert_eq!(first_offer(Strategy::LeastTalkTime), "a3");
    assert_eq!(first_offer(Strategy::TopDown), "a1");
    // Random: reproducible for a seed, and one of the agents.
    let r1 = first_offer(Strategy::Random);
    assert_eq!(r1, first_offer(Strategy::Random));
    assert!(["a1", "a2", "a3", "a4"].contains(&r1.as_str()));
}

#[test]
fn round_robin_continues_after_last_chosen() {
    // History ended with a4 chosen last: the next are a1, a2, a3, then a4.
    let (mut r, now) = scenario(Strategy::RoundRobin);
    let mut got = Vec::new();
    for i in 0..4 {
        let d = r
            .enqueue(caller(&format!("c{i}"), "q", 0, now), now)
            .unwrap();
        got.push(offers(&d)[0].1.clone());
    }
    assert_eq!(got, ["a1", "a2", "a3", "a4"]);
}

#[test]
fn random_differs_by_seed_but_not_by_run() {
    let pick = |seed| {
        let t0 = Instant::now();
        let opts = RouterOptions {
            seed,
            ..RouterOptions::default()
        };
        let mut r = Router::new(opts, t0);
        r.add_queue(queue("q", Strategy::Random)).unwrap();
        let mut picks = Vec::new();
        for i in 0..8 {
            r.add_agent(agent(&format!("a{i}"), &["q"], &[])).unwrap();
            r.agent_login(&aid(&format!("a{i}")), t0).unwrap();
        }
        for i in 0..8 {
            let d = r.enqueue(caller(&format!("c{i}"), "q", 0, t0), t0).unwrap();
            picks.push(offers(&d)[0].1.clone());
        }
        picks
    };
    assert_eq!(pick(7), pick(7));
    assert_ne!(pick(7), pick(8));
}

#[test]
fn ring_all_first_answer_wins_others_cancelled() {
    let (mut r, now) = scenario(Strategy::RingAll);
    let d = r.enqueue(caller("c", "q", 0, now), now).unwrap();
    let Some(Decision::OfferMany { agents, .. }) = d.last() else {
        panic!("no OfferMany: {d:?}");
    };
    assert_eq!(agents.len(), 4);
    // One agent declines: the call keeps ringing the others, nothing is requeued.
    r.offer_failed(&cid("c"), &aid("a1"), Outcome::Declined, now)
        .unwrap();
    assert!(r.waiting(&QueueId::from("q")).is_empty());
    let d = r.offer_answered(&cid("c"), &aid("a3"), now).unwrap();
    let mut cancelled: Vec<_> = d
        .iter()
        .filter_map(|d| match d {
            Decision::Cancel { agent, .. } => Some(agent.0.clone()),
            _ => None,
        })
        .collect();
    cancelled.sort();
    assert_eq!(cancelled, ["a2", "a4"]);
    assert_eq!(state(&r, "a3"), AgentState::Talking { call: cid("c") });
    assert_eq!(state(&r, "a2"), AgentState::Ready);
    assert_eq!(
        state(&r, "a1"),
        AgentState::NotReady {
            reason: "cooldown".into()
        }
    );
    // A second answer is refused.
    assert!(r.offer_answered(&cid("c"), &aid("a2"), now).is_err());
    r.check_invariants().unwrap();
}

fn two_queue_router() -> (Router, Instant) {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(queue("qa", Strategy::LongestIdle)).unwrap();
    r.add_queue(queue("qb", Strategy::LongestIdle)).unwrap();
    r.add_agent(agent("x", &["qa", "qb"], &[])).unwrap();
    r.add_agent(agent("y", &["qa", "qb"], &[])).unwrap();
    (r, t0)
}

/// Serves every offer to `a` until nothing is offered; returns the calls in order.
fn drain(r: &mut Router, a: &str, first: Vec<Decision>, now: Instant) -> Vec<String> {
    let mut served = Vec::new();
    let mut d = first;
    while let Some((call, agent)) = offers(&d).pop() {
        assert_eq!(agent, a);
        r.offer_answered(&cid(&call), &aid(a), now).unwrap();
        d = r.call_ended(&cid(&call), &aid(a), now).unwrap();
        served.push(call);
    }
    served
}

#[test]
fn fifo_within_priority_across_queues() {
    let (mut r, t0) = two_queue_router();
    r.enqueue(caller("c1", "qb", 0, secs(t0, 1)), secs(t0, 1))
        .unwrap();
    r.enqueue(caller("c2", "qa", 0, secs(t0, 2)), secs(t0, 2))
        .unwrap();
    r.enqueue(caller("c3", "qb", 0, secs(t0, 3)), secs(t0, 3))
        .unwrap();
    r.enqueue(caller("c4", "qa", 0, secs(t0, 4)), secs(t0, 4))
        .unwrap();
    let now = secs(t0, 10);
    let d = r.agent_login(&aid("x"), now).unwrap();
    assert_eq!(drain(&mut r, "x", d, now), ["c1", "c2", "c3", "c4"]);
    r.check_invariants().unwrap();
}

#[test]
fn priority_caller_jumps_the_line() {
    let (mut r, t0) = two_queue_router();
    r.enqueue(caller("c1", "qa", 0, secs(t0, 1)), secs(t0, 1))
        .unwrap();
    r.enqueue(caller("c2", "qa", 0, secs(t0, 2)), secs(t0, 2))
        .unwrap();
    r.enqueue(caller("vip", "qb", 5, secs(t0, 3)), secs(t0, 3))
        .unwrap();
    assert_eq!(r.waiting(&QueueId::from("qa")), [cid("c1"), cid("c2")]);
    let now = secs(t0, 10);
    let d = r.agent_login(&aid("x"), now).unwrap();
    assert_eq!(drain(&mut r, "x", d, now), ["vip", "c1", "c2"]);
}

#[test]
fn failed_offer_returns_caller_to_head() {
    let (mut r, t0) = two_queue_router();
    r.enqueue(caller("c1", "qa", 0, secs(t0, 1)), secs(t0, 1))
        .unwrap();
    r.enqueue(caller("c2", "qa", 0, secs(t0, 2)), secs(t0, 2))
        .unwrap();
    let d = r.agent_login(&aid("x"), secs(t0, 3)).unwrap();
    assert_eq!(offers(&d), [("c1".to_owned(), "x".to_owned())]);
    assert_eq!(r.waiting(&QueueId::from("qa")), [cid("c2")]);
    let d = r
        .offer_failed(&cid("c1"), &aid("x"), Outcome::NoAnswer, secs(t0, 9))
        .unwrap();
    assert!(offers(&d).is_empty());
    assert_eq!(r.waiting(&QueueId::from("qa")), [cid("c1"), cid("c2")]);
    // max_no_answer = 1: x is not ready; the next agent gets c1, not c2.
    assert_eq!(
        state(&r, "x"),
        AgentState::NotReady {
            reason: "no-answer".into()
        }
    );
    let d = r.agent_login(&aid("y"), secs(t0, 10)).unwrap();
    assert_eq!(offers(&d), [("c1".to_owned(), "y".to_owned())]);
    r.check_invariants().unwrap();
}

#[test]
fn failed_offer_goes_straight_to_next_free_agent() {
    let (mut r, t0) = two_queue_router();
    r.agent_login(&aid("x"), t0).unwrap();
    r.agent_login(&aid("y"), secs(t0, 1)).unwrap();
    let d = r.enqueue(caller("c1", "qa", 0, t0), secs(t0, 2)).unwrap();
    assert_eq!(offers(&d), [("c1".to_owned(), "x".to_owned())]);
    let d = r
        .offer_failed(&cid("c1"), &aid("x"), Outcome::NoAnswer, secs(t0, 3))
        .unwrap();
    assert_eq!(offers(&d), [("c1".to_owned(), "y".to_owned())]);
}

#[test]
fn max_no_answer_and_cooldown() {
    let t0 = Instant::now();
    let opts = RouterOptions {
        max_no_answer: 2,
        wrap_up: Duration::ZERO,
        cooldown_busy: Duration::from_secs(5),
        ..RouterOptions::default()
    };
    let mut r = Router::new(opts, t0);
    r.add_queue(queue("q", Strategy::LongestIdle)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    r.enqueue(caller("c", "q", 0, t0), t0).unwrap();
    // First miss: ready again, and the only waiting caller is offered again.
    let d = r
        .offer_failed(&cid("c"), &aid("a"), Outcome::NoAnswer, secs(t0, 6))
        .unwrap();
    assert_eq!(offers(&d), [("c".to_owned(), "a".to_owned())]);
    // Second consecutive miss: not ready (no-answer).
    r.offer_failed(&cid("c"), &aid("a"), Outcome::NoAnswer, secs(t0, 12))
        .unwrap();
    assert_eq!(
        state(&r, "a"),
        AgentState::NotReady {
            reason: "no-answer".into()
        }
    );
    assert!(r.tick(secs(t0, 100)).is_empty());
    // Busy: cool-down, ended by tick.
    let d = r.agent_ready(&aid("a"), secs(t0, 100)).unwrap();
    assert_eq!(offers(&d), [("c".to_owned(), "a".to_owned())]);
    r.offer_failed(&cid("c"), &aid("a"), Outcome::Busy, secs(t0, 101))
        .unwrap();
    assert_eq!(
        state(&r, "a"),
        AgentState::NotReady {
            reason: "cooldown".into()
        }
    );
    assert_eq!(r.next_deadline(), Some(secs(t0, 106)));
    assert!(r.tick(secs(t0, 105)).is_empty());
    let d = r.tick(secs(t0, 106));
    assert_eq!(offers(&d), [("c".to_owned(), "a".to_owned())]);
    r.check_invariants().unwrap();
}

#[test]
fn wrap_up_blocks_offers_until_it_ends() {
    let t0 = Instant::now();
    let mut r = Router::new(RouterOptions::default(), t0);
    r.add_queue(queue("q", Strategy::LongestIdle)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    r.enqueue(caller("c1", "q", 0, t0), t0).unwrap();
    r.offer_answered(&cid("c1"), &aid("a"), secs(t0, 1))
        .unwrap();
    let d = r.call_ended(&cid("c1"), &aid("a"), secs(t0, 10)).unwrap();
    assert!(matches!(
        &d[..],
        [Decision::AgentState { state: AgentState::WrapUp { until }, .. }] if *until == secs(t0, 70)
    ));
    assert!(
        offers(
            &r.enqueue(caller("c2", "q", 0, secs(t0, 20)), secs(t0, 20))
                .unwrap()
        )
        .is_empty()
    );
    assert!(r.tick(secs(t0, 69)).is_empty());
    let d = r.tick(secs(t0, 70));
    assert_eq!(offers(&d), [("c2".to_owned(), "a".to_owned())]);
}

#[test]
fn logout_during_call_takes_effect_after() {
    let t0 = Instant::now();
    let mut r = Router::new(RouterOptions::default(), t0);
    r.add_queue(queue("q", Strategy::LongestIdle)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    r.enqueue(caller("c1", "q", 0, t0), t0).unwrap();
    r.offer_answered(&cid("c1"), &aid("a"), t0).unwrap();
    r.hold_started(&cid("c1"), &aid("a"), secs(t0, 2)).unwrap();
    assert!(r.agent_logout(&aid("a"), secs(t0, 3)).unwrap().is_empty());
    assert!(r.logout_pending(&aid("a")));
    assert_eq!(state(&r, "a"), AgentState::OnHold { call: cid("c1") });
    r.hold_ended(&cid("c1"), &aid("a"), secs(t0, 4)).unwrap();
    let d = r.call_ended(&cid("c1"), &aid("a"), secs(t0, 5)).unwrap();
    assert_eq!(
        d,
        [Decision::AgentState {
            agent: aid("a"),
            state: AgentState::LoggedOut
        }]
    );
    assert!(!r.logout_pending(&aid("a")));
    r.check_invariants().unwrap();
}

#[test]
fn escalation_widens_eligibility_after_its_delay() {
    let t0 = Instant::now();
    let mut r = Router::new(RouterOptions::default(), t0);
    r.add_queue(QueueConfig {
        required_skills: vec![("billing".into(), 8)],
        escalation: vec![
            Escalation {
                after: Duration::from_secs(30),
                min_proficiency: Some(5),
                extra_skills: vec![],
            },
            Escalation {
                after: Duration::from_secs(60),
                min_proficiency: None,
                extra_skills: vec!["general".into()],
            },
        ],
        ..QueueConfig::new("q")
    })
    .unwrap();
    r.add_agent(agent("junior", &["q"], &[("billing", 5)]))
        .unwrap();
    r.add_agent(agent("generalist", &["q"], &[("general", 3)]))
        .unwrap();
    r.agent_login(&aid("generalist"), t0).unwrap();
    r.agent_login(&aid("junior"), t0).unwrap();
    r.enqueue(caller("c1", "q", 0, t0), t0).unwrap();
    assert!(r.tick(secs(t0, 29)).is_empty());
    let d = r.tick(secs(t0, 30));
    assert_eq!(offers(&d), [("c1".to_owned(), "junior".to_owned())]);
    // A second caller: junior is busy; the generalist only qualifies after 60 s.
    r.enqueue(caller("c2", "q", 0, secs(t0, 31)), secs(t0, 31))
        .unwrap();
    assert!(r.tick(secs(t0, 90)).is_empty());
    let d = r.tick(secs(t0, 91));
    assert_eq!(offers(&d), [("c2".to_owned(), "generalist".to_owned())]);
    // Caller skills are required too, and an expert qualifies at once.
    r.add_agent(agent("expert", &["q"], &[("billing", 9), ("vip", 1)]))
        .unwrap();
    r.agent_login(&aid("expert"), secs(t0, 92)).unwrap();
    let mut c3 = caller("c3", "q", 0, secs(t0, 93));
    c3.skills = vec!["vip".into()];
    let d = r.enqueue(c3, secs(t0, 93)).unwrap();
    assert_eq!(offers(&d), [("c3".to_owned(), "expert".to_owned())]);
}

#[test]
fn abandon_while_ringing_cancels_and_frees_agent() {
    let (mut r, t0) = two_queue_router();
    r.agent_login(&aid("x"), t0).unwrap();
    r.enqueue(caller("c1", "qa", 0, t0), t0).unwrap();
    r.enqueue(caller("c2", "qa", 0, t0), t0).unwrap();
    let d = r.dequeue(&cid("c1"), secs(t0, 1)).unwrap();
    assert!(d.contains(&Decision::Cancel {
        call: cid("c1"),
        agent: aid("x")
    }));
    assert_eq!(offers(&d), [("c2".to_owned(), "x".to_owned())]);
    assert!(r.dequeue(&cid("c1"), secs(t0, 1)).is_err());
    r.check_invariants().unwrap();
}

#[test]
fn snapshot_counts() {
    let (mut r, t0) = two_queue_router();
    r.agent_login(&aid("x"), t0).unwrap();
    r.enqueue(caller("c1", "qa", 0, t0), t0).unwrap();
    r.enqueue(caller("c2", "qa", 0, secs(t0, 5)), secs(t0, 5))
        .unwrap();
    let s = r.snapshot(secs(t0, 20));
    assert_eq!(s.queues[0].waiting, 1);
    assert_eq!(s.queues[0].longest_wait, Duration::from_secs(15));
    assert_eq!(s.queues[0].agents_by_state.get("offered"), Some(&1));
    assert_eq!(s.queues[0].agents_by_state.get("logged-out"), Some(&1));
    assert_eq!(s.agents[0].state, "offered");
    assert_eq!(s.queues[1].waiting, 0);
}

#[test]
fn errors_leave_state_unchanged() {
    let (mut r, t0) = two_queue_router();
    assert!(matches!(
        r.agent_ready(&aid("x"), t0),
        Err(RouterError::InvalidState { .. })
    ));
    assert!(r.agent_login(&aid("nobody"), t0).is_err());
    r.enqueue(caller("c1", "qa", 0, t0), t0).unwrap();
    assert!(r.enqueue(caller("c1", "qb", 0, t0), t0).is_err());
    assert!(r.enqueue(caller("c9", "nope", 0, t0), t0).is_err());
    assert!(r.offer_answered(&cid("c1"), &aid("x"), t0).is_err());
    r.check_invariants().unwrap();
}

// ----- property test ------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Login(usize),
    Ready(usize),
    NotReady(usize),
    Logout(usize),
    RequestLogout(usize),
    Enqueue(usize, usize, u32),
    Dequeue(usize),
    Answer(usize),
    Fail(usize, u8),
    End(usize),
    Requeue(usize),
    Hold(usize),
    Unhold(usize),
    Tick,
}

const AGENTS: usize = 5;
const CALLS: usize = 8;
const QUEUES: [(&str, Strategy); 3] = [
    ("ring", Strategy::RingAll),
    ("rr", Strategy::RoundRobin),
    ("skill", Strategy::LongestIdle),
];

fn op() -> impl PropStrategy<Value = Op> {
    let a = 0..AGENTS;
    prop_oneof![
        a.clone().prop_map(Op::Login),
        a.clone().prop_map(Op::Ready),
        a.clone().prop_map(Op::NotReady),
        a.clone().prop_map(Op::Logout),
        a.clone().prop_map(Op::RequestLogout),
        (0..CALLS, 0..QUEUES.len(), 0u32..3).prop_map(|(c, q, p)| Op::Enqueue(c, q, p)),
        (0..CALLS).prop_map(Op::Dequeue),
        a.clone().prop_map(Op::Answer),
        (a.clone(), 0u8..4).prop_map(|(a, o)| Op::Fail(a, o)),
        a.clone().prop_map(Op::End),
        a.clone().prop_map(Op::Requeue),
        a.clone().prop_map(Op::Hold),
        a.clone().prop_map(Op::Unhold),
        Just(Op::Tick),
    ]
}

/// No free agent may be eligible for a waiting caller (no escalation in this setup).
fn no_missed_match(r: &Router, now: Instant) -> Result<(), String> {
    for q in &r.queues {
        for &(_, _, seq) in &q.waiting {
            let c = &r.calls[&seq];
            let reqs = &r.reqs[c.reqs as usize];
            for &(_, a) in &q.free {
                if eligible(&r.agents[a as usize], q, reqs, c.enqueued_at, now) {
                    return Err(format!(
                        "{} waits while {} is free",
                        c.id, r.agents[a as usize].id
                    ));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn invariants_hold_under_random_operations(
        ops in proptest::collection::vec((op(), 0u64..20), 1..120),
        max_no_answer in 1u32..3,
    ) {
        let t0 = Instant::now();
        let opts = RouterOptions {
            max_no_answer,
            wrap_up: Duration::from_secs(15),
            cooldown_busy: Duration::ZERO,
            break_limit: Duration::from_secs(40),
            ..RouterOptions::default()
        };
        let limit = opts.break_limit;
        let mut r = Router::new(opts, t0);
        for (name, strategy) in QUEUES {
            let mut q = queue(name, strategy);
            if name == "rr" {
                q.max_len = Some(2);
                q.min_staffed = 2;
            }
            if name == "skill" {
                q.required_skills = vec![("x".into(), 5)];
                q.join_empty = false;
                q.min_staffed = 1;
            }
            r.add_queue(q).unwrap();
        }
        for i in 0..AGENTS {
            let queues: Vec<&str> = QUEUES.iter().map(|q| q.0).filter(|_| true).skip(i % 2).collect();
            r.add_agent(agent(&format!("a{i}"), &queues, &[("x", 3 + i as u8)])).unwrap();
        }
        let mut now = t0;
        for (op, dt) in ops {
            now += Duration::from_secs(dt);
            let name = |i: usize| aid(&format!("a{i}"));
            let current = |r: &Router, i: usize| state(r, &format!("a{i}")).call().cloned();
            let before = r.snapshot(now);
            let result = match op {
                Op::Login(i) => r.agent_login(&name(i), now),
                Op::Ready(i) => r.agent_ready(&name(i), now),
                Op::NotReady(i) => r.agent_not_ready(&name(i), "break", now),
                Op::Logout(i) => r.agent_logout(&name(i), now),
                Op::RequestLogout(i) => r.agent_request_logout(&name(i), now),
                Op::Enqueue(c, q, p) => {
                    let at = now - Duration::from_secs(u64::from(p));
                    r.enqueue(caller(&format!("c{c}"), QUEUES[q].0, p, at), now)
                }
                Op::Dequeue(c) => r.dequeue(&cid(&format!("c{c}")), now),
                Op::Answer(i) => match current(&r, i) {
                    Some(c) => r.offer_answered(&c, &name(i), now),
                    None => Ok(Vec::new()),
                },
                Op::Fail(i, o) => match current(&r, i) {
                    Some(c) => {
                        let o = [Outcome::NoAnswer, Outcome::Busy, Outcome::Declined, Outcome::Unreachable][o as usize];
                        r.offer_failed(&c, &name(i), o, now)
                    }
                    None => Ok(Vec::new()),
                },
                Op::End(i) => match current(&r, i) {
                    Some(c) => r.call_ended(&c, &name(i), now),
                    None => Ok(Vec::new()),
                },
                Op::Requeue(i) => match current(&r, i) {
                    Some(c) => r.requeue(&c, &name(i), now),
                    None => Ok(Vec::new()),
                },
                Op::Hold(i) => match current(&r, i) {
                    Some(c) => r.hold_started(&c, &name(i), now),
                    None => Ok(Vec::new()),
                },
                Op::Unhold(i) => match current(&r, i) {
                    Some(c) => r.hold_ended(&c, &name(i), now),
                    None => Ok(Vec::new()),
                },
                Op::Tick => Ok(r.tick(now)),
            };
            let after = r.snapshot(now);
            let queue_after = |id: &QueueId| after.queues.iter().find(|q| q.id == *id);
            // Every decision is consistent with the state it leaves behind.
            match &result {
                Ok(ds) => {
                    for d in ds {
                        match d {
                            Decision::OfferMany { agents, .. } => prop_assert!(agents.len() > 1),
                            Decision::BreakOverLimit { agent, reason, not_ready_for, count } => {
                                prop_assert!(matches!(op, Op::Tick));
                                prop_assert!(reason != "cooldown");
                                let on_break = r.agent_state(agent).map(|(s, since)| (s.clone(), now - since));
                                let not_ready = AgentState::NotReady { reason: reason.clone() };
                                prop_assert_eq!(on_break, Some((not_ready, *not_ready_for)));
                                prop_assert!(*count >= 1 && limit * *count <= *not_ready_for);
                                prop_assert!(*not_ready_for < limit * (*count + 1));
                            }
                            Decision::StaffingBelowMinimum { queue, staffed, min } => {
                                prop_assert!(matches!(op, Op::Logout(_)), "{:?} alerted", op);
                                prop_assert!(staffed < min);
                                prop_assert_eq!(queue_after(queue).map(|q| q.staffed), Some(*staffed));
                            }
                            _ => {}
                        }
                    }
                }
                // A refusal changes nothing, and its reason holds.
                Err(e) => {
                    prop_assert_eq!(&before, &after, "{:?} refused with {} but changed state", op, e);
                    match e {
                        RouterError::QueueFull { queue, max_len } => {
                            prop_assert!(r.waiting(queue).len() >= *max_len);
                        }
                        RouterError::NoAgents { queue } => {
                            let logged_in = queue_after(queue).map(|q| {
                                q.agents_by_state.iter().filter(|(s, _)| **s != "logged-out").count()
                            });
                            prop_assert_eq!(logged_in, Some(0));
                        }
                        RouterError::MinStaffed { queue, staffed, min } => {
                            prop_assert!(staffed <= min);
                            prop_assert_eq!(queue_after(queue).map(|q| q.staffed), Some(*staffed));
                        }
                        _ => {}
                    }
                }
            }
            if let Err(e) = r.check_invariants() {
                prop_assert!(false, "after {:?}: {}", op, e);
            }
            if let Err(e) = no_missed_match(&r, now) {
                prop_assert!(false, "after {:?}: {}", op, e);
            }
            // Positions count the waiting callers in service order.
            for q in &after.queues {
                let waiting = r.waiting(&q.id);
                for (i, call) in waiting.iter().enumerate() {
                    let p = r.position(call, now);
                    prop_assert_eq!(p.as_ref().map(|p| (p.position, p.waiting)), Some((i + 1, waiting.len())));
                    let at_most_average = p.and_then(|p| p.estimated_wait) <= q.estimated_wait;
                    prop_assert!(at_most_average);
                }
            }
        }
    }
}

#[test]
fn agent_skips_callers_it_cannot_serve() {
    let (mut r, t0) = two_queue_router();
    r.add_agent(agent("fr", &["qa"], &[("french", 4)])).unwrap();
    for i in 0..3 {
        let mut c = caller(&format!("f{i}"), "qa", 0, secs(t0, i));
        c.skills = vec!["french".into()];
        r.enqueue(c, secs(t0, i)).unwrap();
    }
    r.enqueue(caller("plain", "qa", 0, secs(t0, 5)), secs(t0, 5))
        .unwrap();
    let d = r.agent_login(&aid("x"), secs(t0, 6)).unwrap();
    assert_eq!(offers(&d), [("plain".to_owned(), "x".to_owned())]);
    let d = r.agent_login(&aid("fr"), secs(t0, 7)).unwrap();
    assert_eq!(offers(&d), [("f0".to_owned(), "fr".to_owned())]);
    r.check_invariants().unwrap();
}

// ----- queue limits and staffing ------------------------------------------------------

fn limited(max_len: Option<usize>, join_empty: bool, min_staffed: u32) -> QueueConfig {
    QueueConfig {
        max_len,
        join_empty,
        min_staffed,
        ..QueueConfig::new("q")
    }
}

#[test]
fn full_queue_refuses_only_callers_that_would_wait() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(limited(Some(2), true, 0)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    r.add_agent(agent("b", &["q"], &[])).unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    // c1 is offered at once and does not count; c2 and c3 wait and fill the queue.
    let d = r.enqueue(caller("c1", "q", 0, t0), t0).unwrap();
    assert_eq!(offers(&d), [("c1".to_owned(), "a".to_owned())]);
    for c in ["c2", "c3"] {
        assert!(r.enqueue(caller(c, "q", 0, t0), t0).unwrap().is_empty());
    }
    let refused = r.enqueue(caller("c4", "q", 5, t0), t0);
    assert_eq!(
        refused,
        Err(RouterError::QueueFull {
            queue: QueueId::from("q"),
            max_len: 2
        })
    );
    // Nothing changed: c4 is unknown, the queue is as it was.
    assert_eq!(r.waiting(&QueueId::from("q")), [cid("c2"), cid("c3")]);
    assert!(matches!(
        r.dequeue(&cid("c4"), t0),
        Err(RouterError::UnknownCall(_))
    ));
    r.check_invariants().unwrap();
    // A failed offer brings c1 back even though the queue is full.
    r.offer_failed(&cid("c1"), &aid("a"), Outcome::NoAnswer, secs(t0, 1))
        .unwrap();
    assert_eq!(r.waiting(&QueueId::from("q")).len(), 3);
    // b takes c1; one place is still missing for c4 (2 wait).
    let d = r.agent_login(&aid("b"), secs(t0, 2)).unwrap();
    assert_eq!(offers(&d), [("c1".to_owned(), "b".to_owned())]);
    assert!(r.enqueue(caller("c4", "q", 0, t0), secs(t0, 2)).is_err());
    r.dequeue(&cid("c3"), secs(t0, 3)).unwrap();
    assert!(r.enqueue(caller("c4", "q", 0, t0), secs(t0, 3)).is_ok());
    r.check_invariants().unwrap();
}

#[test]
fn full_queue_still_takes_a_caller_a_free_agent_can_serve() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(limited(Some(1), true, 0)).unwrap();
    r.add_agent(agent("x", &["q"], &[])).unwrap();
    r.agent_login(&aid("x"), t0).unwrap();
    let mut french = caller("f1", "q", 0, t0);
    french.skills = vec!["french".into()];
    assert!(r.enqueue(french.clone(), t0).unwrap().is_empty());
    // The queue is full, but x is free for a caller without the skill.
    let d = r.enqueue(caller("plain", "q", 0, t0), t0).unwrap();
    assert_eq!(offers(&d), [("plain".to_owned(), "x".to_owned())]);
    french.call = cid("f2");
    assert!(matches!(
        r.enqueue(french, t0),
        Err(RouterError::QueueFull { max_len: 1, .. })
    ));
    r.check_invariants().unwrap();
}

#[test]
fn queue_closed_while_no_agent_is_logged_in() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(limited(None, false, 0)).unwrap();
    r.add_queue(QueueConfig::new("open")).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    let no_agents = Err(RouterError::NoAgents {
        queue: QueueId::from("q"),
    });
    assert_eq!(r.enqueue(caller("c1", "q", 0, t0), t0), no_agents);
    // The default queue takes callers with nobody logged in.
    assert!(r.enqueue(caller("c1", "open", 0, t0), t0).is_ok());
    // A logged-in agent on a break keeps the queue open; its callers wait.
    r.agent_login(&aid("a"), t0).unwrap();
    r.agent_not_ready(&aid("a"), "lunch", t0).unwrap();
    assert_eq!(r.enqueue(caller("c2", "q", 0, t0), t0), Ok(Vec::new()));
    // An agent whose logout waits for its call still counts as logged in.
    let d = r.agent_ready(&aid("a"), secs(t0, 1)).unwrap();
    assert_eq!(offers(&d), [("c2".to_owned(), "a".to_owned())]);
    r.agent_logout(&aid("a"), secs(t0, 2)).unwrap();
    assert!(r.enqueue(caller("c3", "q", 0, t0), secs(t0, 2)).is_ok());
    r.dequeue(&cid("c2"), secs(t0, 3)).unwrap();
    assert_eq!(state(&r, "a"), AgentState::LoggedOut);
    assert_eq!(r.enqueue(caller("c4", "q", 0, t0), secs(t0, 3)), no_agents);
    // Callers already waiting stay.
    assert_eq!(r.waiting(&QueueId::from("q")), [cid("c3")]);
    r.check_invariants().unwrap();
}

#[test]
fn voluntary_logout_refused_below_minimum_staffing() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(limited(None, true, 2)).unwrap();
    for name in ["a", "b", "c"] {
        r.add_agent(agent(name, &["q"], &[])).unwrap();
        r.agent_login(&aid(name), t0).unwrap();
    }
    assert_eq!(r.snapshot(t0).queues[0].staffed, 3);
    let d = r.agent_request_logout(&aid("a"), secs(t0, 1)).unwrap();
    assert_eq!(
        d,
        [Decision::AgentState {
            agent: aid("a"),
            state: AgentState::LoggedOut
        }]
    );
    let refused = r.agent_request_logout(&aid("b"), secs(t0, 2)).unwrap_err();
    assert_eq!(
        refused,
        RouterError::MinStaffed {
            queue: QueueId::from("q"),
            staffed: 2,
            min: 2
        }
    );
    assert_eq!(
        refused.to_string(),
        "logout refused: queue q has 2 staffed agents and needs at least 2"
    );
    // Nothing changed.
    assert_eq!(state(&r, "b"), AgentState::Ready);
    assert_eq!(r.snapshot(t0).queues[0].staffed, 2);
    // A logged-out agent may always ask.
    assert_eq!(
        r.agent_request_logout(&aid("a"), secs(t0, 3)),
        Ok(Vec::new())
    );
    r.check_invariants().unwrap();
}

#[test]
fn refusal_names_the_first_queue_that_would_drop_below_its_minimum() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(QueueConfig {
        min_staffed: 0,
        ..QueueConfig::new("sales")
    })
    .unwrap();
    r.add_queue(QueueConfig {
        min_staffed: 1,
        ..QueueConfig::new("support")
    })
    .unwrap();
    r.add_queue(QueueConfig {
        min_staffed: 1,
        ..QueueConfig::new("vip")
    })
    .unwrap();
    r.add_agent(agent("a", &["sales", "support", "vip"], &[]))
        .unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    assert_eq!(
        r.agent_request_logout(&aid("a"), t0),
        Err(RouterError::MinStaffed {
            queue: QueueId::from("support"),
            staffed: 1,
            min: 1
        })
    );
}

#[test]
fn forced_logout_reports_staffing_below_minimum_once() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(limited(None, true, 2)).unwrap();
    r.add_queue(QueueConfig::new("other")).unwrap();
    r.add_agent(agent("a", &["q", "other"], &[])).unwrap();
    r.add_agent(agent("b", &["q"], &[])).unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    r.agent_login(&aid("b"), t0).unwrap();
    // The phone is gone: the logout applies, and the drop is reported for q only.
    let d = r.agent_logout(&aid("a"), secs(t0, 1)).unwrap();
    assert_eq!(
        d,
        [
            Decision::AgentState {
                agent: aid("a"),
                state: AgentState::LoggedOut
            },
            Decision::StaffingBelowMinimum {
                queue: QueueId::from("q"),
                staffed: 1,
                min: 2
            }
        ]
    );
    // During a call: reported when the logout is asked for, not when it takes effect.
    r.enqueue(caller("c", "q", 0, t0), secs(t0, 2)).unwrap();
    r.offer_answered(&cid("c"), &aid("b"), secs(t0, 3)).unwrap();
    let d = r.agent_logout(&aid("b"), secs(t0, 4)).unwrap();
    assert_eq!(
        d,
        [Decision::StaffingBelowMinimum {
            queue: QueueId::from("q"),
            staffed: 0,
            min: 2
        }]
    );
    assert!(r.agent_logout(&aid("b"), secs(t0, 5)).unwrap().is_empty());
    assert!(r.tick(secs(t0, 3600)).is_empty());
    let d = r.call_ended(&cid("c"), &aid("b"), secs(t0, 6)).unwrap();
    assert_eq!(
        d,
        [Decision::AgentState {
            agent: aid("b"),
            state: AgentState::LoggedOut
        }]
    );
    r.check_invariants().unwrap();
}

#[test]
fn login_cancelling_a_pending_logout_counts_the_agent_again() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(limited(None, true, 1)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    r.enqueue(caller("c", "q", 0, t0), t0).unwrap();
    r.agent_logout(&aid("a"), t0).unwrap();
    assert_eq!(r.snapshot(t0).queues[0].staffed, 0);
    r.agent_login(&aid("a"), t0).unwrap();
    assert!(!r.logout_pending(&aid("a")));
    assert_eq!(r.snapshot(t0).queues[0].staffed, 1);
    r.check_invariants().unwrap();
}

// ----- break limit ----------------------------------------------------------------------

fn breaks(ds: &[Decision]) -> Vec<(String, String, Duration, u32)> {
    ds.iter()
        .filter_map(|d| match d {
            Decision::BreakOverLimit {
                agent,
                reason,
                not_ready_for,
                count,
            } => Some((agent.0.clone(), reason.clone(), *not_ready_for, *count)),
            _ => None,
        })
        .collect()
}

fn one_agent(opts: RouterOptions, t0: Instant) -> Router {
    let mut r = Router::new(opts, t0);
    r.add_queue(queue("q", Strategy::LongestIdle)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    r
}

#[test]
fn break_over_limit_at_each_multiple_of_the_limit() {
    let t0 = Instant::now();
    let limit = Duration::from_secs(300);
    let mut r = one_agent(RouterOptions::default(), t0);
    assert_eq!(r.options().break_limit, limit);
    let since = secs(t0, 10);
    r.agent_not_ready(&aid("a"), "lunch", since).unwrap();
    assert_eq!(r.next_deadline(), Some(since + limit));
    assert!(r.tick(since + limit - Duration::from_nanos(1)).is_empty());
    let d = r.tick(since + limit);
    assert_eq!(breaks(&d), [("a".into(), "lunch".into(), limit, 1)]);
    assert_eq!(d.len(), 1);
    // Once per multiple: nothing more until twice the limit.
    assert!(r.tick(since + limit + Duration::from_secs(1)).is_empty());
    assert_eq!(r.next_deadline(), Some(since + 2 * limit));
    let d = r.tick(since + 2 * limit);
    assert_eq!(breaks(&d), [("a".into(), "lunch".into(), 2 * limit, 2)]);
    // A late tick reports the multiples passed once, with the time actually spent.
    let d = r.tick(since + 4 * limit + Duration::from_secs(7));
    let late = 4 * limit + Duration::from_secs(7);
    assert_eq!(breaks(&d), [("a".into(), "lunch".into(), late, 4)]);
    assert_eq!(r.next_deadline(), Some(since + 5 * limit));
    // Ending the break cancels the timer.
    r.agent_ready(&aid("a"), since + 4 * limit + Duration::from_secs(8))
        .unwrap();
    assert_eq!(r.next_deadline(), None);
    assert!(r.tick(since + 10 * limit).is_empty());
    r.check_invariants().unwrap();
}

#[test]
fn a_new_reason_starts_a_new_break() {
    let t0 = Instant::now();
    let mut r = one_agent(RouterOptions::default(), t0);
    r.agent_not_ready(&aid("a"), "lunch", t0).unwrap();
    r.agent_not_ready(&aid("a"), "training", secs(t0, 200))
        .unwrap();
    assert!(r.tick(secs(t0, 300)).is_empty());
    let d = r.tick(secs(t0, 500));
    assert_eq!(
        breaks(&d),
        [("a".into(), "training".into(), Duration::from_secs(300), 1)]
    );
    // Logging out ends it too.
    r.agent_logout(&aid("a"), secs(t0, 501)).unwrap();
    assert!(r.tick(secs(t0, 3600)).is_empty());
    r.check_invariants().unwrap();
}

#[test]
fn no_break_alert_for_cooldown_but_for_no_answer() {
    let t0 = Instant::now();
    let opts = RouterOptions {
        break_limit: Duration::from_secs(60),
        cooldown_busy: Duration::from_secs(600),
        max_no_answer: 1,
        ..RouterOptions::default()
    };
    let mut r = one_agent(opts, t0);
    r.enqueue(caller("c", "q", 0, t0), t0).unwrap();
    r.offer_failed(&cid("c"), &aid("a"), Outcome::Busy, t0)
        .unwrap();
    assert_eq!(
        state(&r, "a"),
        AgentState::NotReady {
            reason: "cooldown".into()
        }
    );
    // The cool-down outlasts the limit many times over: never reported.
    assert_eq!(r.next_deadline(), Some(secs(t0, 600)));
    for s in (60..600).step_by(30) {
        assert!(breaks(&r.tick(secs(t0, s))).is_empty());
    }
    let d = r.tick(secs(t0, 600));
    assert_eq!(offers(&d), [("c".to_owned(), "a".to_owned())]);
    // Not-ready after a missed offer is the router's doing too, but it is a break the
    // agent has to end: it is reported.
    r.offer_failed(&cid("c"), &aid("a"), Outcome::NoAnswer, secs(t0, 610))
        .unwrap();
    let d = r.tick(secs(t0, 670));
    assert_eq!(
        breaks(&d),
        [("a".into(), "no-answer".into(), Duration::from_secs(60), 1)]
    );
    r.check_invariants().unwrap();
}

#[test]
fn zero_break_limit_turns_the_rule_off() {
    let t0 = Instant::now();
    let opts = RouterOptions {
        break_limit: Duration::ZERO,
        ..RouterOptions::default()
    };
    let mut r = one_agent(opts, t0);
    r.agent_not_ready(&aid("a"), "lunch", t0).unwrap();
    assert_eq!(r.next_deadline(), None);
    assert!(r.tick(secs(t0, 86_400)).is_empty());
    r.check_invariants().unwrap();
}

// ----- position and estimated wait ------------------------------------------------------

#[test]
fn position_in_service_order_with_estimated_wait() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(queue("q", Strategy::LongestIdle)).unwrap();
    r.add_queue(queue("other", Strategy::LongestIdle)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    for (call, prio, at) in [("c1", 0, 0), ("c2", 0, 1), ("vip", 5, 2), ("c3", 0, 3)] {
        r.enqueue(caller(call, "q", prio, secs(t0, at)), secs(t0, at))
            .unwrap();
    }
    r.enqueue(caller("elsewhere", "other", 0, t0), t0).unwrap();
    let pos = |r: &Router, call: &str, at: u64| {
        r.position(&cid(call), secs(t0, at))
            .map(|p| (p.position, p.waiting, p.estimated_wait))
    };
    // No answer yet: no estimate.
    assert_eq!(pos(&r, "vip", 4), Some((1, 4, None)));
    assert_eq!(pos(&r, "c1", 4), Some((2, 4, None)));
    assert_eq!(pos(&r, "c2", 4), Some((3, 4, None)));
    assert_eq!(pos(&r, "c3", 4), Some((4, 4, None)));
    assert_eq!(pos(&r, "elsewhere", 4), Some((1, 1, None)));
    assert_eq!(
        r.position(&cid("c3"), t0).map(|p| p.queue),
        Some(QueueId::from("q"))
    );
    assert_eq!(pos(&r, "nobody", 4), None);
    // vip rings, then is answered after waiting 10 s: the first sample is the average.
    r.agent_login(&aid("a"), secs(t0, 10)).unwrap();
    assert_eq!(pos(&r, "vip", 10), None);
    assert_eq!(pos(&r, "c1", 10), Some((1, 3, None)));
    r.offer_answered(&cid("vip"), &aid("a"), secs(t0, 12))
        .unwrap();
    assert_eq!(pos(&r, "vip", 12), None);
    let s = Duration::from_secs;
    // c3 has waited 9 s of the 10 s average, c1 12 s: floored at zero.
    assert_eq!(pos(&r, "c3", 12), Some((3, 3, Some(s(1)))));
    assert_eq!(pos(&r, "c1", 12), Some((1, 3, Some(s(0)))));
    // c1 is answered after 40 s: (3·10 + 40) / 4 = 17.5 s.
    r.call_ended(&cid("vip"), &aid("a"), secs(t0, 20)).unwrap();
    r.offer_answered(&cid("c1"), &aid("a"), secs(t0, 40))
        .unwrap();
    assert_eq!(
        r.snapshot(secs(t0, 40)).queues[0].estimated_wait,
        Some(Duration::from_millis(17_500))
    );
    r.enqueue(caller("c4", "q", 0, secs(t0, 41)), secs(t0, 41))
        .unwrap();
    assert_eq!(
        pos(&r, "c4", 45),
        Some((3, 3, Some(Duration::from_millis(13_500))))
    );
    assert_eq!(r.snapshot(secs(t0, 45)).queues[1].estimated_wait, None);
    r.check_invariants().unwrap();
}

// ----- requeue --------------------------------------------------------------------------

#[test]
fn requeued_caller_returns_to_the_head_of_its_queue() {
    let t0 = Instant::now();
    let mut r = Router::new(RouterOptions::default(), t0);
    r.add_queue(queue("q", Strategy::LongestIdle)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    r.add_agent(agent("b", &["q"], &[])).unwrap();
    r.agent_login(&aid("a"), t0).unwrap();
    r.enqueue(caller("c1", "q", 0, t0), t0).unwrap();
    r.offer_answered(&cid("c1"), &aid("a"), secs(t0, 3))
        .unwrap();
    r.enqueue(caller("c2", "q", 0, secs(t0, 5)), secs(t0, 5))
        .unwrap();
    r.enqueue(caller("c3", "q", 0, secs(t0, 6)), secs(t0, 6))
        .unwrap();
    r.hold_started(&cid("c1"), &aid("a"), secs(t0, 10)).unwrap();
    // The hold limit gives c1 back: a wraps up, c1 is first in line again.
    let d = r.requeue(&cid("c1"), &aid("a"), secs(t0, 40)).unwrap();
    assert_eq!(
        d,
        [Decision::AgentState {
            agent: aid("a"),
            state: AgentState::WrapUp {
                until: secs(t0, 100)
            }
        }]
    );
    assert_eq!(
        r.waiting(&QueueId::from("q")),
        [cid("c1"), cid("c2"), cid("c3")]
    );
    assert_eq!(
        r.position(&cid("c1"), secs(t0, 40)).map(|p| p.position),
        Some(1)
    );
    assert_eq!(r.agents[0].talk_time, Duration::from_secs(37));
    assert_eq!(r.agents[0].answered, 1);
    r.check_invariants().unwrap();
    // The next free agent takes c1 before the callers who queued later.
    let d = r.agent_login(&aid("b"), secs(t0, 41)).unwrap();
    assert_eq!(offers(&d), [("c1".to_owned(), "b".to_owned())]);
    // Its second answer is not a wait: the average keeps the first (3 s).
    r.offer_answered(&cid("c1"), &aid("b"), secs(t0, 50))
        .unwrap();
    assert_eq!(
        r.snapshot(secs(t0, 50)).queues[0].estimated_wait,
        Some(Duration::from_secs(3))
    );
    r.check_invariants().unwrap();
}

#[test]
fn requeued_caller_goes_to_a_free_agent_at_once() {
    let (mut r, t0) = two_queue_router();
    r.agent_login(&aid("x"), t0).unwrap();
    r.enqueue(caller("c1", "qa", 0, t0), t0).unwrap();
    r.offer_answered(&cid("c1"), &aid("x"), t0).unwrap();
    r.agent_login(&aid("y"), secs(t0, 1)).unwrap();
    // No wrap-up in this router: x is ready again, but y gets c1 (x was still on it).
    let d = r.requeue(&cid("c1"), &aid("x"), secs(t0, 2)).unwrap();
    assert_eq!(offers(&d), [("c1".to_owned(), "y".to_owned())]);
    assert_eq!(state(&r, "x"), AgentState::Ready);
    assert!(r.waiting(&QueueId::from("qa")).is_empty());
    r.check_invariants().unwrap();
}

#[test]
fn requeue_applies_a_pending_logout_and_refuses_calls_not_connected() {
    let (mut r, t0) = two_queue_router();
    r.agent_login(&aid("x"), t0).unwrap();
    r.enqueue(caller("c1", "qa", 0, t0), t0).unwrap();
    // Ringing, not connected: refused, nothing changes.
    assert!(matches!(
        r.requeue(&cid("c1"), &aid("x"), t0),
        Err(RouterError::InvalidState { .. })
    ));
    assert_eq!(state(&r, "x"), AgentState::Offered { call: cid("c1") });
    r.offer_answered(&cid("c1"), &aid("x"), t0).unwrap();
    assert!(r.requeue(&cid("c1"), &aid("y"), t0).is_err());
    r.agent_logout(&aid("x"), secs(t0, 1)).unwrap();
    let d = r.requeue(&cid("c1"), &aid("x"), secs(t0, 2)).unwrap();
    assert_eq!(
        d,
        [Decision::AgentState {
            agent: aid("x"),
            state: AgentState::LoggedOut
        }]
    );
    assert_eq!(r.waiting(&QueueId::from("qa")), [cid("c1")]);
    r.check_invariants().unwrap();
}

#[test]
fn a_transfer_to_a_named_agent_offers_it_that_agent_only_when_ready() {
    let t0 = Instant::now();
    let mut r = Router::new(no_wrap(), t0);
    r.add_queue(queue("q", Strategy::LongestIdle)).unwrap();
    r.add_queue(queue("other", Strategy::LongestIdle)).unwrap();
    r.add_agent(agent("a", &["q"], &[])).unwrap();
    r.add_agent(agent("b", &["q"], &[])).unwrap();
    r.add_agent(agent("expert", &["other"], &[])).unwrap();
    r.agent_login(&aid("a"), secs(t0, 1)).unwrap();
    r.agent_login(&aid("b"), secs(t0, 2)).unwrap();
    // Not logged in: refused, nothing changes.
    let refused = r.enqueue_for(caller("c", "q", 0, t0), &aid("expert"), secs(t0, 3));
    assert!(matches!(refused, Err(RouterError::InvalidState { .. })));
    assert!(r.waiting(&QueueId::from("q")).is_empty());
    r.check_invariants().unwrap();
    // Ready: offered to it, though it serves another queue and `a` idles longer.
    r.agent_login(&aid("expert"), secs(t0, 4)).unwrap();
    let d = r
        .enqueue_for(caller("c", "q", 0, t0), &aid("expert"), secs(t0, 5))
        .unwrap();
    assert_eq!(offers(&d), [("c".to_owned(), "expert".to_owned())]);
    r.check_invariants().unwrap();
    // It does not answer: the caller goes to its queue's agents as usual.
    let d = r
        .offer_failed(&cid("c"), &aid("expert"), Outcome::NoAnswer, secs(t0, 11))
        .unwrap();
    assert_eq!(offers(&d), [("c".to_owned(), "a".to_owned())]);
    r.check_invariants().unwrap();
}
