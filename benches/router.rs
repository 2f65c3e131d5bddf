//! ACD router decisions under load: 10,000 waiting callers, 5,000 agents, 100 skills,
//! 20 queues with mixed strategies and caller priorities 0..=3. Measures one "agent becomes
//! ready → offer chosen" and one "caller enqueued → offer chosen" decision (the state is
//! restored outside the timed region), the worst case of an agent freed next to 10,000
//! callers it cannot serve, and a waiting caller's position (about 500 callers per
//! queue). Prints p50/p99/p99.9 from a manual run first, then runs criterion. Run with
//! `cargo bench --bench router`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use hotline::acd::{
    AgentConfig, AgentId, CallId, Caller, Decision, QueueConfig, QueueId, Router, RouterOptions,
    Skill, Strategy,
};

const CALLERS: usize = 10_000;
const AGENTS: usize = 5_000;
const SKILLS: u64 = 100;
const QUEUES: u64 = 20;
const FREE: usize = 500;

/// A tiny deterministic xorshift for the fixture.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Fixture {
    router: Router,
    callers: HashMap<CallId, Caller>,
    agents: Vec<AgentId>,
    now: Instant,
    rng: Rng,
    seq: u64,
    /// Time of the last restoring dequeue in `enqueue_once`.
    last_dequeue: Duration,
}

/// `free_agents`: false → every agent is not-ready (for the agent-ready case); true →
/// `FREE` agents are ready, holding only skills s0..s49, while the waiting callers all need
/// one of s50..s99 (so the router's "no free agent fits a waiting caller" holds), and the
/// other agents are talking.
fn fixture(free_agents: bool) -> Fixture {
    let t0 = Instant::now();
    let mut router = Router::new(RouterOptions::default(), t0);
    let strategies = [
        Strategy::LongestIdle,
        Strategy::RoundRobin,
        Strategy::FewestCalls,
        Strategy::LeastTalkTime,
        Strategy::TopDown,
        Strategy::Random,
    ];
    for q in 0..QUEUES {
        router
            .add_queue(QueueConfig {
                strategy: strategies[q as usize % strategies.len()],
                required_skills: vec![(format!("q{q}"), 1)],
                ..QueueConfig::new(&format!("q{q}"))
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let is_free = free_agents && i < FREE;
        let queues: Vec<u64> = (0..3).map(|_| rng.below(QUEUES)).collect();
        let mut skills: Vec<Skill> = queues
            .iter()
            .map(|q| Skill::new(&format!("q{q}"), 5))
            .collect();
        let range = if is_free { SKILLS / 2 } else { SKILLS };
        for _ in 0..10 {
            let s = rng.below(range);
            skills.push(Skill::new(&format!("s{s}"), 1 + rng.below(10) as u8));
        }
        let id = AgentId(format!("a{i}"));
        router
            .add_agent(AgentConfig {
                id: id.clone(),
                queues: queues.iter().map(|q| QueueId(format!("q{q}"))).collect(),
                skills,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        agents.push(id);
    }
    let mut now = t0;
    let mut callers = HashMap::new();
    let mut fx_seq = 0;
    // Agents log in and go not-ready (the busy ones are put on calls below).
    for (i, id) in agents.iter().enumerate() {
        now += Duration::from_micros(1);
        router
            .agent_login(id, now)
            .unwrap_or_else(|e| panic!("{e}"));
        if !(free_agents && i < FREE) {
            router
                .agent_not_ready(id, "setup", now)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    for _ in 0..CALLERS {
        now += Duration::from_micros(1);
        let skill = if free_agents {
            Some(SKILLS / 2 + rng.below(SKILLS / 2))
        } else if rng.below(2) == 0 {
            Some(rng.below(SKILLS))
        } else {
            None
        };
        let caller = Caller {
            call: CallId(format!("c{fx_seq}")),
            queue: QueueId(format!("q{}", rng.below(QUEUES))),
            priority: rng.below(4) as u32,
            enqueued_at: now,
            skills: skill.map(|s| format!("s{s}")).into_iter().collect(),
        };
        fx_seq += 1;
        let d = router
            .enqueue(caller.clone(), now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(d.is_empty(), "fixture caller was offered");
        callers.insert(caller.call.clone(), caller);
    }
    Fixture {
        router,
        callers,
        agents,
        now,
        rng,
        seq: fx_seq,
        last_dequeue: Duration::ZERO,
    }
}

fn offered(ds: &[Decision]) -> Option<(CallId, AgentId)> {
    ds.iter().find_map(|d| match d {
        Decision::Offer { call, agent, .. } => Some((call.clone(), agent.clone())),
        _ => None,
    })
}

impl Fixture {
    /// Times one agent-ready decision, then puts the caller back and the agent not-ready.
    fn agent_ready_once(&mut self) -> (Duration, bool) {
        let agent = self.agents[self.rng.below(AGENTS as u64) as usize].clone();
        self.now += Duration::from_micros(1);
        let now = self.now;
        let start = Instant::now();
        let ds = black_box(self.router.agent_ready(&agent, now));
        let took = start.elapsed();
        let ds = ds.unwrap_or_else(|e| panic!("{e}"));
        let hit = match offered(&ds) {
            Some((call, agent)) => {
                let r = &mut self.router;
                let ok = r
                    .offer_answered(&call, &agent, now)
                    .and_then(|_| r.call_ended(&call, &agent, now))
                    .and_then(|_| r.agent_not_ready(&agent, "bench", now))
                    .and_then(|_| r.enqueue(self.callers[&call].clone(), now));
                assert!(ok.is_ok_and(|d| d.is_empty()));
                true
            }
            None => {
                let ok = self.router.agent_not_ready(&agent, "bench", now);
                assert!(ok.is_ok());
                false
            }
        };
        (took, hit)
    }

    /// Times one caller-enqueued decision, then abandons the caller (its agent is freed).
    fn enqueue_once(&mut self) -> (Duration, bool) {
        self.now += Duration::from_micros(1);
        let now = self.now;
        let caller = Caller {
            call: CallId(format!("n{}", self.seq)),
            queue: QueueId(format!("q{}", self.rng.below(QUEUES))),
            priority: self.rng.below(4) as u32,
            enqueued_at: now,
            skills: vec![format!("s{}", self.rng.below(SKILLS / 2))],
        };
        self.seq += 1;
        let call = caller.call.clone();
        let start = Instant::now();
        let ds = black_box(self.router.enqueue(caller, now));
        let took = start.elapsed();
        let hit = offered(&ds.unwrap_or_else(|e| panic!("{e}"))).is_some();
        let start = Instant::now();
        let ds = black_box(self.router.dequeue(&call, now));
        self.last_dequeue = start.elapsed();
        let ds = ds.unwrap_or_else(|e| panic!("{e}"));
        assert!(offered(&ds).is_none());
        (took, hit)
    }
}

fn percentiles(name: &str, mut op: impl FnMut() -> (Duration, bool)) {
    const N: usize = 200_000;
    for _ in 0..10_000 {
        op();
    }
    let mut times = Vec::with_capacity(N);
    let mut hits = 0;
    for _ in 0..N {
        let (t, hit) = op();
        times.push(t);
        hits += usize::from(hit);
    }
    times.sort();
    let pct = |p: f64| times[((N as f64 * p) as usize).min(N - 1)];
    let mean = times.iter().sum::<Duration>() / N as u32;
    println!(
        "{name}: n={N} offers={:.1}% mean={mean:?} p50={:?} p99={:?} p99.9={:?} max={:?} \
         → {:.0} decisions/s (1/mean)",
        100.0 * hits as f64 / N as f64,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        times[N - 1],
        1.0 / mean.as_secs_f64(),
    );
}

fn router(c: &mut Criterion) {
    let mut group = c.benchmark_group("acd_router");
    group.measurement_time(Duration::from_secs(4));
    let mut fx = fixture(false);
    group.bench_function("agent_ready_to_offer", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| fx.agent_ready_once().0).sum())
    });
    let mut fx = fixture(true);
    group.bench_function("caller_enqueued_to_offer", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| fx.enqueue_once().0).sum())
    });
    group.finish();
}

criterion_group!(benches, router);

fn main() {
    let mut fx = fixture(false);
    fx.router
        .check_invariants()
        .unwrap_or_else(|e| panic!("{e}"));
    percentiles("agent_ready_to_offer", || fx.agent_ready_once());
    let mut fx = fixture(true);
    percentiles("caller_enqueued_to_offer", || fx.enqueue_once());
    // The restoring dequeue: the ringing caller abandons, its agent is freed and looks at
    // every waiting caller of its 3 queues, none of which it can serve (the worst case).
    percentiles("abandon_agent_freed_no_match", || {
        fx.enqueue_once();
        (fx.last_dequeue, false)
    });
    // Where a random fixture caller stands (it still waits: every offer above went to a
    // caller enqueued by the bench, and each was dequeued again).
    let waiting: Vec<CallId> = fx.callers.keys().cloned().collect();
    percentiles("position_of_waiting_caller", || {
        let call = &waiting[fx.rng.below(waiting.len() as u64) as usize];
        let start = Instant::now();
        let pos = black_box(fx.router.position(call, fx.now));
        let took = start.elapsed();
        assert!(pos.is_some());
        (took, false)
    });
    fx.router
        .check_invariants()
        .unwrap_or_else(|e| panic!("{e}"));
    benches();
    Criterion::default().configure_from_args().final_summary();
}
