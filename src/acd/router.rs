//! The ACD router: owns every queue and every agent's availability and matches waiting
//! callers with free agents. Pure logic — no I/O, no clock reads, no locks: every method
//! takes `now` and returns the [`Decision`]s the call actors must carry out.
//!
//! # Matching
//! Reserving agent(s) and taking the caller off its queue is one step ([`Router::reserve`]),
//! so an agent never holds two offers and a caller is never offered twice (ring-all aside).
//! After every event the router keeps this invariant: no free agent is eligible for any
//! waiting caller (escalation steps are applied at the next [`Router::tick`]).
//!
//! * **An agent becomes free**: over the queues it serves, the caller with the highest
//!   caller priority, then the higher queue priority, then the earliest `enqueued_at`
//!   (FIFO across queues), then the agent's queue preference.
//! * **A caller arrives** (or returns, or escalates): among the queue's free eligible
//!   agents, the queue's [`Strategy`] chooses.
//!
//! Eligibility: the agent serves the queue and holds every required skill (the queue's,
//! with their minimum proficiency, plus the caller's, minimum 1). An elapsed escalation
//! step lowers every minimum to its `min_proficiency` and makes agents holding any of its
//! `extra_skills` eligible.
//!
//! A caller whose offer fails, or whose agent gives it back ([`Router::requeue`], the hold
//! limit's action), returns to its original place (same key): ahead of everyone who
//! queued later.
//!
//! # Admission and staffing
//! * A queue with `join_empty = false` refuses callers while none of its agents is logged
//!   in (any state but logged-out, a pending logout included).
//! * A queue with `max_len` refuses a caller that would have to wait once `max_len`
//!   callers wait; a caller offered at once is always taken, and callers coming back
//!   (a failed offer, a requeue) are never refused, so the queue may briefly hold more.
//! * Handover (C2): an agent is *staffed* for the queues it serves while it is logged in
//!   without a pending logout. [`Router::agent_request_logout`] (the agent's own choice)
//!   is refused when it would leave a queue below its `min_staffed`;
//!   [`Router::agent_logout`] (the phone is gone) always applies, and reports every queue
//!   it leaves below its minimum when it is asked for — the agent stops counting then,
//!   even if the logout waits for a call — once, never on a tick.
//!
//! # Breaks (L7)
//! An agent not-ready for any reason but the router's own `cooldown` (a reason the agent
//! gave, or `no-answer`, which the agent must end itself) is reported with
//! [`Decision::BreakOverLimit`] by the first [`Router::tick`] at or after since + limit,
//! since + 2·limit, and so on; a late tick reports once, counting the multiples passed.
//! Any state change ends the break and its timer.
//!
//! # Position and estimated wait
//! [`Router::position`] gives a waiting caller's place among its queue's waiting callers,
//! in the queue's service order (priority, then `enqueued_at`). Each queue keeps an
//! exponential moving average of its waits from `enqueued_at` to answer (a quarter
//! weight per answer); a caller's estimate is that average less what it has waited,
//! floored at zero, and there is none before the queue's first answer.
//!
//! # Complexity (n waiting callers, m agents, k queues an agent serves)
//! * Each queue keeps its waiting callers in a `BTreeSet` ordered by (priority desc,
//!   `enqueued_at`, arrival sequence), grouped into buckets of equal (priority,
//!   requirements) whose heads sit in a second ordered set, and its free agents in a
//!   `BTreeSet` ordered by the queue's strategy key; all are updated in O(log n) /
//!   O(k log m) per state change.
//! * Agent free → O(k · (log n + b)) where b is the number of buckets (distinct
//!   priority × skill requirement) whose head the agent cannot serve — independent of how
//!   many callers wait in them.
//! * Caller arrives → O(log m + s') where s' counts free but ineligible agents skipped
//!   (ring-all: O(free agents)); a caller offered at once never enters the waiting sets.
//!   Callers with equal requirements share one interned requirement set (no list is
//!   built per caller), and each bucket knows its set, so judging a head needs no lookup.
//! * `tick` → O(log t) per expired wrap-up / cool-down / break / escalation timer;
//!   nothing is scanned when nothing expires. `snapshot` is O(n + m · k); `position` is
//!   O(n) in the length of the caller's queue.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::model::{
    AgentConfig, AgentId, AgentSnapshot, AgentState, CallId, Caller, Decision, Outcome,
    QueueConfig, QueueId, QueuePosition, QueueSnapshot, RouterError, RouterOptions, Snapshot,
    Strategy,
};

type AgentIdx = u32;
type QueueIdx = u32;
type Seq = u64;
type SkillIdx = u32;
/// An interned, sorted set of (skill, minimum proficiency) requirements.
type ReqsIdx = u32;
type Reqs = [(SkillIdx, u8)];
/// (caller priority, higher first; enqueued_at; arrival sequence).
type WaitKey = (Reverse<u32>, Instant, Seq);
/// (strategy key, agent index = agent order).
type FreeKey = (u128, AgentIdx);
/// (caller priority, requirements): callers that are eligible for the same agents.
type BucketKey = (u32, ReqsIdx);
/// (caller priority desc, queue priority desc, enqueued_at, agent's queue preference, seq).
type Rank = (Reverse<u32>, Reverse<u32>, Instant, usize, Seq);

/// Hasher for keys no caller can choose: numbers the router makes itself (sequence
/// numbers, interned indices) and names from the configuration (queues, agents, skills;
/// a lookup with an unknown name costs one probe, only inserts could be steered into
/// collisions). A multiply by the golden ratio per 8 bytes, folded so the low bits that
/// pick the slot depend on every input bit. Call ids come from the network and keep the
/// std hasher (SipHash with random keys), so colliding Call-IDs cannot slow the router.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(GOLDEN);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type FastState = std::hash::BuildHasherDefault<IdHasher>;
type FastMap<K, V> = HashMap<K, V, FastState>;
type SeqMap<V> = FastMap<Seq, V>;

const NO_ANSWER: &str = "no-answer";
const COOLDOWN: &str = "cooldown";

#[derive(Debug)]
struct EscStep {
    after: Duration,
    min: Option<u8>,
    extra: Vec<SkillIdx>,
}

#[derive(Debug)]
struct QueueEntry {
    cfg: QueueConfig,
    /// The queue's own requirements, sorted by skill.
    reqs: Vec<(SkillIdx, u8)>,
    /// The same, interned: the requirements of a caller that brings no skills of its own.
    base_reqs: ReqsIdx,
    esc: Vec<EscStep>,
    /// Every waiting caller, in service order.
    waiting: BTreeSet<WaitKey>,
    /// Callers grouped by (priority, requirements); each bucket ordered by enqueued_at.
    buckets: Vec<BTreeSet<(Instant, Seq)>>,
    /// The requirements of each bucket's callers, so its head can be judged without
    /// looking the caller up.
    bucket_reqs: Vec<ReqsIdx>,
    bucket_ids: FastMap<BucketKey, u32>,
    /// The head of every non-empty bucket, in service order, with its bucket.
    heads: BTreeSet<(WaitKey, u32)>,
    free: BTreeSet<FreeKey>,
    rr_last: Option<AgentIdx>,
    agents: Vec<AgentIdx>,
    /// Agents serving the queue that are not logged out (`join_empty`).
    logged_in: u32,
    /// Of those, the ones without a pending logout (`min_staffed`).
    staffed: u32,
    /// Exponential moving average of the waits from `enqueued_at` to answer.
    avg_wait: Option<Duration>,
}

impl QueueEntry {
    /// Takes one wait into the moving average: new = (3·old + wait) / 4, so a sample
    /// weighs a quarter and its weight halves about every 2.4 answers; the first is taken
    /// as it is.
    fn sample_wait(&mut self, wait: Duration) {
        self.avg_wait = Some(match self.avg_wait {
            None => wait,
            Some(old) => old.saturating_mul(3).saturating_add(wait) / 4,
        });
    }

    /// The bucket of callers with this priority and these requirements (made if new).
    fn bucket(&mut self, priority: u32, reqs: ReqsIdx) -> u32 {
        if let Some(&b) = self.bucket_ids.get(&(priority, reqs)) {
            return b;
        }
        let b = self.buckets.len() as u32;
        self.buckets.push(BTreeSet::new());
        self.bucket_reqs.push(reqs);
        self.bucket_ids.insert((priority, reqs), b);
        b
    }

    /// Puts a caller in the waiting set and its bucket, keeping the bucket heads current.
    fn insert(&mut self, call: &CallEntry, seq: Seq) {
        let bucket = &mut self.buckets[call.bucket as usize];
        let old = bucket.first().copied();
        bucket.insert((call.enqueued_at, seq));
        if bucket.first().copied() != old {
            if let Some((at, s)) = old {
                self.heads
                    .remove(&((Reverse(call.priority), at, s), call.bucket));
            }
            self.heads.insert((call.key(seq), call.bucket));
        }
        let added = self.waiting.insert(call.key(seq));
        debug_assert!(added, "caller queued twice");
    }

    /// Takes a caller out of the waiting set and its bucket.
    fn remove(&mut self, call: &CallEntry, seq: Seq) {
        let bucket = &mut self.buckets[call.bucket as usize];
        if bucket.first() == Some(&(call.enqueued_at, seq)) {
            self.heads.remove(&(call.key(seq), call.bucket));
            bucket.pop_first();
            if let Some(&(at, s)) = bucket.first() {
                self.heads
                    .insert(((Reverse(call.priority), at, s), call.bucket));
            }
        } else {
            bucket.remove(&(call.enqueued_at, seq));
        }
        let removed = self.waiting.remove(&call.key(seq));
        debug_assert!(removed, "waiting caller missing from its queue");
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallStatus {
    Waiting,
    Offered(Vec<AgentIdx>),
    Connected(AgentIdx),
}

#[derive(Debug)]
struct CallEntry {
    id: CallId,
    queue: QueueIdx,
    priority: u32,
    enqueued_at: Instant,
    reqs: ReqsIdx,
    bucket: u32,
    status: CallStatus,
    /// An agent has answered it once (it has been requeued since if it waits again).
    answered_before: bool,
}

impl CallEntry {
    fn key(&self, seq: Seq) -> WaitKey {
        (Reverse(self.priority), self.enqueued_at, seq)
    }
}

#[derive(Debug)]
struct AgentEntry {
    id: AgentId,
    queues: Vec<QueueIdx>,
    prof: Vec<u8>,
    state: AgentState,
    since: Instant,
    logout_pending: bool,
    no_answer_streak: u32,
    answered: u64,
    talk_time: Duration,
    talk_started: Option<Instant>,
    timer: Option<Instant>,
    /// When the current break passes its next multiple of the break limit (L7).
    break_at: Option<Instant>,
    free_keys: Vec<(QueueIdx, FreeKey)>,
    call: Option<Seq>,
}

impl AgentEntry {
    fn prof(&self, skill: SkillIdx) -> u8 {
        self.prof.get(skill as usize).copied().unwrap_or(0)
    }

    /// What the agent adds to the counts of the queues it serves.
    fn presence(&self) -> Presence {
        let logged_in = self.state != AgentState::LoggedOut;
        Presence {
            logged_in,
            staffed: logged_in && !self.logout_pending,
        }
    }
}

/// Whether an agent counts as logged in and as staffed for the queues it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Presence {
    logged_in: bool,
    staffed: bool,
}

/// Moves a per-queue count by an agent's change of presence.
fn recount(count: &mut u32, before: bool, after: bool) {
    match (before, after) {
        (false, true) => *count += 1,
        (true, false) => *count = count.saturating_sub(1),
        _ => {}
    }
}

/// Whether `agent` may take a caller of `queue` needing `reqs`, queued since
/// `enqueued_at`, at `now` (queue membership not checked).
fn eligible(
    agent: &AgentEntry,
    queue: &QueueEntry,
    reqs: &Reqs,
    enqueued_at: Instant,
    now: Instant,
) -> bool {
    if queue.esc.is_empty() {
        return reqs.iter().all(|&(s, m)| agent.prof(s) >= m.max(1));
    }
    let waited = now.saturating_duration_since(enqueued_at);
    let mut cap = u8::MAX;
    let mut elapsed = 0;
    for step in &queue.esc {
        if step.after > waited {
            break;
        }
        elapsed += 1;
        if let Some(m) = step.min {
            cap = cap.min(m);
        }
    }
    if reqs
        .iter()
        .all(|&(s, m)| agent.prof(s) >= m.min(cap).max(1))
    {
        return true;
    }
    queue.esc[..elapsed]
        .iter()
        .any(|step| step.extra.iter().any(|&s| agent.prof(s) > 0))
}

/// The ACD router. See the module documentation for the matching rules.
#[derive(Debug)]
pub struct Router {
    opts: RouterOptions,
    epoch: Instant,
    rng: u64,
    skills: FastMap<String, SkillIdx>,
    /// Every distinct requirement set, interned so callers and buckets share it.
    reqs: Vec<Box<Reqs>>,
    reqs_index: FastMap<Box<Reqs>, ReqsIdx>,
    /// Scratch space for a caller's requirements, kept to spare an allocation per caller.
    reqs_buf: Vec<(SkillIdx, u8)>,
    queues: Vec<QueueEntry>,
    queue_index: FastMap<QueueId, QueueIdx>,
    agents: Vec<AgentEntry>,
    agent_index: FastMap<AgentId, AgentIdx>,
    calls: SeqMap<CallEntry>,
    call_index: HashMap<CallId, Seq>,
    next_seq: Seq,
    agent_timers: BTreeSet<(Instant, AgentIdx)>,
    break_timers: BTreeSet<(Instant, AgentIdx)>,
    esc_timers: BTreeSet<(Instant, Seq)>,
}

impl Router {
    /// A router with no queues and no agents. `now` is the reference instant for the
    /// longest-idle ordering; instants passed later must not precede it.
    pub fn new(opts: RouterOptions, now: Instant) -> Self {
        let rng = if opts.seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            opts.seed
        };
        Self {
            opts,
            epoch: now,
            rng,
            skills: FastMap::default(),
            reqs: Vec::new(),
            reqs_index: FastMap::default(),
            reqs_buf: Vec::new(),
            queues: Vec::new(),
            queue_index: FastMap::default(),
            agents: Vec::new(),
            agent_index: FastMap::default(),
            calls: SeqMap::default(),
            call_index: HashMap::new(),
            next_seq: 0,
            agent_timers: BTreeSet::new(),
            break_timers: BTreeSet::new(),
            esc_timers: BTreeSet::new(),
        }
    }

    /// The options the router runs with.
    pub fn options(&self) -> &RouterOptions {
        &self.opts
    }

    fn intern(&mut self, name: &str) -> SkillIdx {
        if let Some(&i) = self.skills.get(name) {
            return i;
        }
        let i = self.skills.len() as SkillIdx;
        self.skills.insert(name.to_owned(), i);
        i
    }

    /// The index of the requirement set `reqs` (sorted by skill), interned if new.
    fn intern_reqs(&mut self, reqs: &Reqs) -> ReqsIdx {
        if let Some(&i) = self.reqs_index.get(reqs) {
            return i;
        }
        let i = self.reqs.len() as ReqsIdx;
        self.reqs.push(reqs.into());
        self.reqs_index.insert(reqs.into(), i);
        i
    }

    /// A caller's requirements: the queue's plus the caller's skills (minimum 1).
    fn caller_reqs(&mut self, qi: QueueIdx, skills: &[String]) -> ReqsIdx {
        if skills.is_empty() {
            return self.queues[qi as usize].base_reqs;
        }
        let mut reqs = std::mem::take(&mut self.reqs_buf);
        reqs.clear();
        reqs.extend_from_slice(&self.queues[qi as usize].reqs);
        for name in skills {
            let s = self.intern(name);
            if !reqs.iter().any(|&(r, _)| r == s) {
                reqs.push((s, 1));
            }
        }
        reqs.sort_unstable();
        let i = self.intern_reqs(&reqs);
        self.reqs_buf = reqs;
        i
    }

    /// Adds a queue. Escalation steps are applied in order of `after`.
    pub fn add_queue(&mut self, cfg: QueueConfig) -> Result<(), RouterError> {
        if self.queue_index.contains_key(&cfg.id) {
            return Err(RouterError::DuplicateQueue(cfg.id));
        }
        let mut reqs: Vec<(SkillIdx, u8)> = cfg
            .required_skills
            .iter()
            .map(|(name, min)| (self.intern(name), *min))
            .collect();
        reqs.sort_unstable();
        let base_reqs = self.intern_reqs(&reqs);
        let mut esc: Vec<EscStep> = cfg
            .escalation
            .iter()
            .map(|e| EscStep {
                after: e.after,
                min: e.min_proficiency,
                extra: e.extra_skills.iter().map(|s| self.intern(s)).collect(),
            })
            .collect();
        esc.sort_by_key(|e| e.after);
        self.queue_index
            .insert(cfg.id.clone(), self.queues.len() as QueueIdx);
        self.queues.push(QueueEntry {
            cfg,
            reqs,
            base_reqs,
            esc,
            waiting: BTreeSet::new(),
            buckets: Vec::new(),
            bucket_reqs: Vec::new(),
            bucket_ids: FastMap::default(),
            heads: BTreeSet::new(),
            free: BTreeSet::new(),
            rr_last: None,
            agents: Vec::new(),
            logged_in: 0,
            staffed: 0,
            avg_wait: None,
        });
        Ok(())
    }

    /// Adds an agent, logged out. Agent order (TopDown, RoundRobin) is the order of adding.
    pub fn add_agent(&mut self, cfg: AgentConfig) -> Result<(), RouterError> {
        if self.agent_index.contains_key(&cfg.id) {
            return Err(RouterError::DuplicateAgent(cfg.id));
        }
        let mut queues = Vec::with_capacity(cfg.queues.len());
        for q in &cfg.queues {
            let qi = *self
                .queue_index
                .get(q)
                .ok_or_else(|| RouterError::UnknownQueue(q.clone()))?;
            if !queues.contains(&qi) {
                queues.push(qi);
            }
        }
        let mut prof = Vec::new();
        for skill in &cfg.skills {
            let i = self.intern(&skill.name) as usize;
            if prof.len() <= i {
                prof.resize(i + 1, 0);
            }
            prof[i] = prof[i].max(skill.proficiency);
        }
        let idx = self.agents.len() as AgentIdx;
        for &qi in &queues {
            self.queues[qi as usize].agents.push(idx);
        }
        self.agent_index.insert(cfg.id.clone(), idx);
        self.agents.push(AgentEntry {
            id: cfg.id,
            queues,
            prof,
            state: AgentState::LoggedOut,
            since: self.epoch,
            logout_pending: false,
            no_answer_streak: 0,
            answered: 0,
            talk_time: Duration::ZERO,
            talk_started: None,
            timer: None,
            break_at: None,
            free_keys: Vec::new(),
            call: None,
        });
        Ok(())
    }

    /// The agent's current state and the instant it was entered.
    pub fn agent_state(&self, agent: &AgentId) -> Option<(&AgentState, Instant)> {
        let a = &self.agents[*self.agent_index.get(agent)? as usize];
        Some((&a.state, a.since))
    }

    /// Whether a logout is waiting for the agent's call to end.
    pub fn logout_pending(&self, agent: &AgentId) -> bool {
        self.agent_index
            .get(agent)
            .is_some_and(|&a| self.agents[a as usize].logout_pending)
    }

    /// The callers waiting in `queue`, in service order.
    pub fn waiting(&self, queue: &QueueId) -> Vec<CallId> {
        let Some(&qi) = self.queue_index.get(queue) else {
            return Vec::new();
        };
        self.queues[qi as usize]
            .waiting
            .iter()
            .filter_map(|k| self.calls.get(&k.2).map(|c| c.id.clone()))
            .collect()
    }

    /// Where the waiting caller `call` stands in its queue; `None` when it is not waiting
    /// (unknown, ringing or connected). O(n) in the queue's length: the callers ahead are
    /// counted, as the ordered set keeps no ranks. Every waiting caller asking every 30 s
    /// thus costs n²/60 steps a second on average — for 2,000 callers in one queue about
    /// 67,000 steps of a few nanoseconds, well under 1 % of a core.
    pub fn position(&self, call: &CallId, now: Instant) -> Option<QueuePosition> {
        let seq = *self.call_index.get(call)?;
        let c = self.calls.get(&seq)?;
        if c.status != CallStatus::Waiting {
            return None;
        }
        let q = &self.queues[c.queue as usize];
        let waited = now.saturating_duration_since(c.enqueued_at);
        Some(QueuePosition {
            queue: q.cfg.id.clone(),
            position: q.waiting.range(..c.key(seq)).count() + 1,
            waiting: q.waiting.len(),
            estimated_wait: q.avg_wait.map(|avg| avg.saturating_sub(waited)),
        })
    }

    /// Resets the answered-call counts and talk times (FewestCalls, LeastTalkTime), e.g.
    /// at midnight. Free agents keep their current place until they are next reserved.
    pub fn reset_daily_counters(&mut self) {
        for a in &mut self.agents {
            a.answered = 0;
            a.talk_time = Duration::ZERO;
        }
    }

    fn agent_idx(&self, agent: &AgentId) -> Result<AgentIdx, RouterError> {
        self.agent_index
            .get(agent)
            .copied()
            .ok_or_else(|| RouterError::UnknownAgent(agent.clone()))
    }

    fn call_seq(&self, call: &CallId) -> Result<Seq, RouterError> {
        self.call_index
            .get(call)
            .copied()
            .ok_or_else(|| RouterError::UnknownCall(call.clone()))
    }

    fn invalid(&self, a: AgentIdx, action: &'static str) -> RouterError {
        let agent = &self.agents[a as usize];
        RouterError::InvalidState {
            agent: agent.id.clone(),
            action,
            state: agent.state.name(),
        }
    }

    // ----- agent requests -------------------------------------------------------------

    /// Logs the agent in; it becomes ready (and may be offered a caller at once).
    /// Logging in while a logout is pending cancels the logout.
    pub fn agent_login(
        &mut self,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let a = self.agent_idx(agent)?;
        let mut out = Vec::new();
        if self.agents[a as usize].logout_pending {
            self.set_logout_pending(a, false);
            return Ok(out);
        }
        let entry = &mut self.agents[a as usize];
        match entry.state {
            AgentState::LoggedOut => {
                entry.no_answer_streak = 0;
                self.become_ready(a, now, &mut out);
                Ok(out)
            }
            _ => Err(self.invalid(a, "log in")),
        }
    }

    /// The agent is ready: from not-ready, or ending wrap-up early. Ready is a no-op.
    pub fn agent_ready(
        &mut self,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let a = self.agent_idx(agent)?;
        let mut out = Vec::new();
        match self.agents[a as usize].state {
            AgentState::Ready => {}
            AgentState::NotReady { .. } | AgentState::WrapUp { .. } => {
                self.clear_timer(a);
                self.agents[a as usize].no_answer_streak = 0;
                self.become_ready(a, now, &mut out);
            }
            _ => return Err(self.invalid(a, "become ready")),
        }
        Ok(out)
    }

    /// The agent is not ready for `reason` (from ready, not-ready or wrap-up).
    pub fn agent_not_ready(
        &mut self,
        agent: &AgentId,
        reason: &str,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let a = self.agent_idx(agent)?;
        let mut out = Vec::new();
        match self.agents[a as usize].state {
            AgentState::Ready => self.remove_free(a),
            AgentState::NotReady { .. } | AgentState::WrapUp { .. } => self.clear_timer(a),
            _ => return Err(self.invalid(a, "become not-ready")),
        }
        let reason = reason.to_owned();
        self.set_state(a, AgentState::NotReady { reason }, now, &mut out);
        Ok(out)
    }

    /// Logs the agent out (its phone is gone: always applies); during an offer or a call
    /// the logout takes effect after it. The agent stops counting as staffed at once, so
    /// every queue it leaves below `min_staffed` is reported here, once
    /// ([`Decision::StaffingBelowMinimum`]), and not again when the logout takes effect.
    pub fn agent_logout(
        &mut self,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let a = self.agent_idx(agent)?;
        let mut out = Vec::new();
        self.logout(a, now, &mut out);
        Ok(out)
    }

    /// The agent asks to log out (a voluntary logout): refused with
    /// [`RouterError::MinStaffed`], changing nothing, when it would leave one of its queues
    /// below `min_staffed` (the first such queue in its order of preference, with its
    /// current staffed count); otherwise as [`Router::agent_logout`].
    pub fn agent_request_logout(
        &mut self,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let a = self.agent_idx(agent)?;
        let entry = &self.agents[a as usize];
        // An agent that does not count as staffed changes no count by leaving.
        if entry.presence().staffed {
            for &qi in &entry.queues {
                let q = &self.queues[qi as usize];
                let min = q.cfg.min_staffed;
                if min > 0 && q.staffed <= min {
                    return Err(RouterError::MinStaffed {
                        queue: q.cfg.id.clone(),
                        staffed: q.staffed,
                        min,
                    });
                }
            }
        }
        let mut out = Vec::new();
        self.logout(a, now, &mut out);
        Ok(out)
    }

    fn logout(&mut self, a: AgentIdx, now: Instant, out: &mut Vec<Decision>) {
        let was_staffed = self.agents[a as usize].presence().staffed;
        match self.agents[a as usize].state {
            AgentState::LoggedOut => {}
            AgentState::Offered { .. } | AgentState::Talking { .. } | AgentState::OnHold { .. } => {
                self.set_logout_pending(a, true);
            }
            AgentState::Ready => {
                self.remove_free(a);
                self.set_state(a, AgentState::LoggedOut, now, out);
            }
            AgentState::NotReady { .. } | AgentState::WrapUp { .. } => {
                self.clear_timer(a);
                self.set_state(a, AgentState::LoggedOut, now, out);
            }
        }
        if !was_staffed {
            return;
        }
        for &qi in &self.agents[a as usize].queues {
            let q = &self.queues[qi as usize];
            let min = q.cfg.min_staffed;
            if q.staffed < min {
                out.push(Decision::StaffingBelowMinimum {
                    queue: q.cfg.id.clone(),
                    staffed: q.staffed,
                    min,
                });
            }
        }
    }

    // ----- caller requests ------------------------------------------------------------

    /// Queues a caller; it is offered at once if a free eligible agent exists. Refused with
    /// [`RouterError::NoAgents`] when the queue does not take callers while no agent
    /// serving it is logged in, and with [`RouterError::QueueFull`] when the caller would
    /// have to wait and `max_len` callers already wait (a caller offered at once is taken
    /// whatever the length).
    pub fn enqueue(&mut self, caller: Caller, now: Instant) -> Result<Vec<Decision>, RouterError> {
        let qi = *self
            .queue_index
            .get(&caller.queue)
            .ok_or_else(|| RouterError::UnknownQueue(caller.queue.clone()))?;
        if self.call_index.contains_key(&caller.call) {
            return Err(RouterError::DuplicateCall(caller.call));
        }
        let queue = &self.queues[qi as usize];
        if !queue.cfg.join_empty && queue.logged_in == 0 {
            return Err(RouterError::NoAgents {
                queue: caller.queue,
            });
        }
        let reqs = self.caller_reqs(qi, &caller.skills);
        // Looking for an agent before queueing spares a caller who is offered at once the
        // trip into and out of the waiting sets, and tells whether it would wait at all.
        let agents = self.find_agents(qi, &self.reqs[reqs as usize], caller.enqueued_at, now);
        let queue = &self.queues[qi as usize];
        if let Some(max_len) = queue.cfg.max_len
            && agents.is_empty()
            && queue.waiting.len() >= max_len
        {
            return Err(RouterError::QueueFull {
                queue: caller.queue,
                max_len,
            });
        }
        let (seq, entry) = self.new_call(&caller, qi, reqs, false);
        let queue = &mut self.queues[qi as usize];
        for step in &queue.esc {
            if let Some(at) = caller.enqueued_at.checked_add(step.after)
                && at > now
            {
                self.esc_timers.insert((at, seq));
            }
        }
        if agents.is_empty() {
            queue.insert(&entry, seq);
        }
        self.calls.insert(seq, entry);
        self.call_index.insert(caller.call, seq);
        let mut out = Vec::new();
        if !agents.is_empty() {
            self.picked(qi, &agents);
            self.reserve(seq, agents, false, now, &mut out);
        }
        Ok(out)
    }

    /// A new waiting call entry of `queue` and its sequence number; the caller
    /// is neither indexed nor in the waiting sets yet.
    fn new_call(
        &mut self,
        caller: &Caller,
        queue: QueueIdx,
        reqs: ReqsIdx,
        answered_before: bool,
    ) -> (Seq, CallEntry) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = CallEntry {
            id: caller.call.clone(),
            queue,
            priority: caller.priority,
            enqueued_at: caller.enqueued_at,
            reqs,
            bucket: self.queues[queue as usize].bucket(caller.priority, reqs),
            status: CallStatus::Waiting,
            answered_before,
        };
        (seq, entry)
    }

    /// A caller transferred to one named agent: offered to it at once if it is ready
    /// (refused, with the state unchanged, otherwise). Should that offer fail, the caller
    /// waits at its place in `caller.queue` like any other.
    pub fn enqueue_for(
        &mut self,
        caller: Caller,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let qi = *self
            .queue_index
            .get(&caller.queue)
            .ok_or_else(|| RouterError::UnknownQueue(caller.queue.clone()))?;
        if self.call_index.contains_key(&caller.call) {
            return Err(RouterError::DuplicateCall(caller.call));
        }
        let a = self.agent_idx(agent)?;
        if self.agents[a as usize].state != AgentState::Ready
            || self.agents[a as usize].call.is_some()
        {
            return Err(self.invalid(a, "take a transferred call"));
        }
        let reqs = self.caller_reqs(qi, &caller.skills);
        let (seq, entry) = self.new_call(&caller, qi, reqs, true);
        self.calls.insert(seq, entry);
        self.call_index.insert(caller.call, seq);
        let mut out = Vec::new();
        self.reserve(seq, vec![a], false, now, &mut out);
        Ok(out)
    }

    /// The caller left (abandoned) while waiting or ringing; ringing agents are cancelled
    /// and become free. A connected call is ended with [`Router::call_ended`] instead.
    pub fn dequeue(&mut self, call: &CallId, now: Instant) -> Result<Vec<Decision>, RouterError> {
        let seq = self.call_seq(call)?;
        let mut out = Vec::new();
        let status = self.calls.get(&seq).map(|c| c.status.clone());
        match status {
            Some(CallStatus::Waiting) => {
                self.remove_waiting(seq);
            }
            Some(CallStatus::Offered(agents)) => {
                for a in agents {
                    out.push(Decision::Cancel {
                        call: call.clone(),
                        agent: self.agents[a as usize].id.clone(),
                    });
                    self.agents[a as usize].call = None;
                    self.release(a, now, &mut out);
                }
            }
            Some(CallStatus::Connected(a)) => return Err(self.invalid(a, "abandon a call")),
            None => return Err(RouterError::UnknownCall(call.clone())),
        }
        self.forget_call(seq);
        Ok(out)
    }

    /// `agent` answered the offer of `call`: it talks; other ring-all agents are cancelled.
    pub fn offer_answered(
        &mut self,
        call: &CallId,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let seq = self.call_seq(call)?;
        let a = self.agent_idx(agent)?;
        let others = match self.calls.get(&seq).map(|c| &c.status) {
            Some(CallStatus::Offered(list)) if list.contains(&a) => {
                list.iter().copied().filter(|&o| o != a).collect::<Vec<_>>()
            }
            _ => return Err(self.invalid(a, "answer a call not offered to it")),
        };
        let mut out = Vec::new();
        if let Some(c) = self.calls.get_mut(&seq) {
            c.status = CallStatus::Connected(a);
            // A requeued caller's time since enqueued_at includes its first conversation:
            // not a wait, so only a first answer is sampled.
            if !c.answered_before {
                c.answered_before = true;
                let waited = now.saturating_duration_since(c.enqueued_at);
                self.queues[c.queue as usize].sample_wait(waited);
            }
        }
        let entry = &mut self.agents[a as usize];
        entry.answered += 1;
        entry.no_answer_streak = 0;
        entry.talk_started = Some(now);
        self.set_state(a, AgentState::Talking { call: call.clone() }, now, &mut out);
        for o in others {
            out.push(Decision::Cancel {
                call: call.clone(),
                agent: self.agents[o as usize].id.clone(),
            });
            self.agents[o as usize].call = None;
            self.release(o, now, &mut out);
        }
        Ok(out)
    }

    /// The offer of `call` to `agent` did not connect. When no other agent still rings,
    /// the caller goes back to its place at the head of its queue and is offered to the
    /// next agent; the agent turns not-ready (`no-answer`) after `max_no_answer`
    /// consecutive no-answers, cools down (`cooldown`) after busy / declined /
    /// unreachable, else is ready again.
    pub fn offer_failed(
        &mut self,
        call: &CallId,
        agent: &AgentId,
        outcome: Outcome,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let seq = self.call_seq(call)?;
        let a = self.agent_idx(agent)?;
        let requeue = match self.calls.get_mut(&seq).map(|c| &mut c.status) {
            Some(CallStatus::Offered(list)) if list.contains(&a) => {
                list.retain(|&o| o != a);
                list.is_empty()
            }
            _ => return Err(self.invalid(a, "fail an offer not made to it")),
        };
        let mut out = Vec::new();
        self.agents[a as usize].call = None;
        if requeue {
            // Back in its original place (same key): ahead of everyone who came later.
            if let Some(c) = self.calls.get_mut(&seq) {
                c.status = CallStatus::Waiting;
                self.queues[c.queue as usize].insert(c, seq);
            }
            // The failed agent is not free yet, so it cannot be chosen again here.
            self.match_caller(seq, now, &mut out);
        }
        if self.agents[a as usize].logout_pending {
            self.finish_logout(a, now, &mut out);
            return Ok(out);
        }
        let entry = &mut self.agents[a as usize];
        let cooldown = match outcome {
            Outcome::NoAnswer => {
                entry.no_answer_streak += 1;
                if entry.no_answer_streak >= self.opts.max_no_answer.max(1) {
                    let reason = NO_ANSWER.to_owned();
                    self.set_state(a, AgentState::NotReady { reason }, now, &mut out);
                    return Ok(out);
                }
                Duration::ZERO
            }
            Outcome::Busy => self.opts.cooldown_busy,
            Outcome::Declined => self.opts.cooldown_declined,
            Outcome::Unreachable => self.opts.cooldown_unreachable,
        };
        if cooldown.is_zero() {
            self.become_ready(a, now, &mut out);
        } else {
            let reason = COOLDOWN.to_owned();
            self.set_state(a, AgentState::NotReady { reason }, now, &mut out);
            self.set_timer(a, now + cooldown);
        }
        Ok(out)
    }

    /// The call `agent` was talking on ended: wrap-up until now + `wrap_up`, or logged out
    /// when a logout was pending.
    pub fn call_ended(
        &mut self,
        call: &CallId,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let seq = self.call_seq(call)?;
        let a = self.agent_idx(agent)?;
        if self.calls.get(&seq).map(|c| &c.status) != Some(&CallStatus::Connected(a)) {
            return Err(self.invalid(a, "end a call it is not on"));
        }
        self.forget_call(seq);
        let mut out = Vec::new();
        self.end_call(a, now, &mut out);
        Ok(out)
    }

    /// The hold limit's `requeue` action: `agent` gives the connected `call` back. The
    /// agent ends the call as with [`Router::call_ended`] (talk time counted, wrap-up, or
    /// logged out when a logout was pending); the caller goes back to its queue at its
    /// original place — ahead of everyone who queued later — and is offered at once when
    /// a free agent can take it. A queue's `max_len` does not apply to it.
    pub fn requeue(
        &mut self,
        call: &CallId,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let seq = self.call_seq(call)?;
        let a = self.agent_idx(agent)?;
        if self.calls.get(&seq).map(|c| &c.status) != Some(&CallStatus::Connected(a)) {
            return Err(self.invalid(a, "requeue a call it is not on"));
        }
        let mut out = Vec::new();
        self.agents[a as usize].call = None;
        if let Some(c) = self.calls.get_mut(&seq) {
            c.status = CallStatus::Waiting;
            self.queues[c.queue as usize].insert(c, seq);
        }
        // The agent is still on the call, so it cannot be chosen for the caller again here.
        self.match_caller(seq, now, &mut out);
        self.end_call(a, now, &mut out);
        Ok(out)
    }

    /// Agent `a` is off its call: talk time counted, then logged out if a logout was
    /// pending, else wrap-up (or ready at once when there is no wrap-up).
    fn end_call(&mut self, a: AgentIdx, now: Instant, out: &mut Vec<Decision>) {
        let entry = &mut self.agents[a as usize];
        entry.call = None;
        if let Some(start) = entry.talk_started.take() {
            entry.talk_time += now.saturating_duration_since(start);
        }
        if entry.logout_pending {
            self.finish_logout(a, now, out);
        } else if self.opts.wrap_up.is_zero() {
            self.become_ready(a, now, out);
        } else {
            let until = now + self.opts.wrap_up;
            self.set_state(a, AgentState::WrapUp { until }, now, out);
            self.set_timer(a, until);
        }
    }

    /// The agent put `call` on hold.
    pub fn hold_started(
        &mut self,
        call: &CallId,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        self.switch_hold(call, agent, true, now)
    }

    /// The agent took `call` off hold.
    pub fn hold_ended(
        &mut self,
        call: &CallId,
        agent: &AgentId,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        self.switch_hold(call, agent, false, now)
    }

    /// Talking → on hold (`hold`), or back.
    fn switch_hold(
        &mut self,
        call: &CallId,
        agent: &AgentId,
        hold: bool,
        now: Instant,
    ) -> Result<Vec<Decision>, RouterError> {
        let a = self.agent_idx(agent)?;
        let next = match (&self.agents[a as usize].state, hold) {
            (AgentState::Talking { call: c }, true) if c == call => {
                AgentState::OnHold { call: call.clone() }
            }
            (AgentState::OnHold { call: c }, false) if c == call => {
                AgentState::Talking { call: call.clone() }
            }
            (_, true) => return Err(self.invalid(a, "hold a call it is not talking on")),
            (_, false) => return Err(self.invalid(a, "resume a call it has not on hold")),
        };
        let mut out = Vec::new();
        self.set_state(a, next, now, &mut out);
        Ok(out)
    }

    /// Ends expired wrap-ups and cool-downs, reports breaks over the limit, applies elapsed
    /// escalation steps, and matches.
    pub fn tick(&mut self, now: Instant) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Some(&(at, a)) = self.agent_timers.first() {
            if at > now {
                break;
            }
            self.agent_timers.pop_first();
            let entry = &mut self.agents[a as usize];
            if entry.timer == Some(at) {
                entry.timer = None;
                if matches!(
                    entry.state,
                    AgentState::WrapUp { .. } | AgentState::NotReady { .. }
                ) {
                    self.become_ready(a, now, &mut out);
                }
            }
        }
        while let Some(&(at, a)) = self.break_timers.first() {
            if at > now {
                break;
            }
            self.break_timers.pop_first();
            self.break_over_limit(a, at, now, &mut out);
        }
        while let Some(&(at, seq)) = self.esc_timers.first() {
            if at > now {
                break;
            }
            self.esc_timers.pop_first();
            if self.calls.get(&seq).map(|c| &c.status) == Some(&CallStatus::Waiting) {
                self.match_caller(seq, now, &mut out);
            }
        }
        out
    }

    /// The earliest instant at which [`Router::tick`] has work, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        [&self.agent_timers, &self.break_timers]
            .into_iter()
            .filter_map(|timers| timers.first().map(|t| t.0))
            .chain(self.esc_timers.first().map(|t| t.0))
            .min()
    }

    /// A plain owned picture of queues and agents.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let queues = self
            .queues
            .iter()
            .map(|q| {
                let longest_wait = q
                    .waiting
                    .iter()
                    .map(|k| now.saturating_duration_since(k.1))
                    .max()
                    .unwrap_or_default();
                let mut agents_by_state = BTreeMap::new();
                for &a in &q.agents {
                    *agents_by_state
                        .entry(self.agents[a as usize].state.name())
                        .or_insert(0) += 1;
                }
                QueueSnapshot {
                    id: q.cfg.id.clone(),
                    waiting: q.waiting.len(),
                    longest_wait,
                    estimated_wait: q.avg_wait,
                    staffed: q.staffed,
                    agents_by_state,
                }
            })
            .collect();
        let agents = self
            .agents
            .iter()
            .map(|a| AgentSnapshot {
                id: a.id.clone(),
                state: a.state.name(),
                since: a.since,
                reason: match &a.state {
                    AgentState::NotReady { reason } => Some(reason.clone()),
                    _ => None,
                },
                call: a.state.call().cloned(),
            })
            .collect();
        Snapshot { queues, agents }
    }

    // ----- internals --------------------------------------------------------------------

    fn set_state(&mut self, a: AgentIdx, state: AgentState, now: Instant, out: &mut Vec<Decision>) {
        let entry = &mut self.agents[a as usize];
        let before = entry.presence();
        // Any state change ends the break being timed; a new break starts its own.
        if let Some(at) = entry.break_at.take() {
            self.break_timers.remove(&(at, a));
        }
        if matches!(&state, AgentState::NotReady { reason } if reason != COOLDOWN)
            && !self.opts.break_limit.is_zero()
            && let Some(at) = now.checked_add(self.opts.break_limit)
        {
            entry.break_at = Some(at);
            self.break_timers.insert((at, a));
        }
        entry.state = state.clone();
        entry.since = now;
        out.push(Decision::AgentState {
            agent: entry.id.clone(),
            state,
        });
        self.recount_presence(a, before);
    }

    fn set_logout_pending(&mut self, a: AgentIdx, pending: bool) {
        let entry = &mut self.agents[a as usize];
        let before = entry.presence();
        entry.logout_pending = pending;
        self.recount_presence(a, before);
    }

    /// Brings the counts of the agent's queues in line with its presence, which was
    /// `before` the change just made.
    fn recount_presence(&mut self, a: AgentIdx, before: Presence) {
        let entry = &self.agents[a as usize];
        let after = entry.presence();
        if after == before {
            return;
        }
        for &qi in &entry.queues {
            let q = &mut self.queues[qi as usize];
            recount(&mut q.logged_in, before.logged_in, after.logged_in);
            recount(&mut q.staffed, before.staffed, after.staffed);
        }
    }

    /// A pending logout takes effect (the offer or call it waited for is over).
    fn finish_logout(&mut self, a: AgentIdx, now: Instant, out: &mut Vec<Decision>) {
        // Logged out while still pending: the agent stopped counting as staffed when the
        // logout was asked for, and only stops counting as logged in now.
        self.set_state(a, AgentState::LoggedOut, now, out);
        self.agents[a as usize].logout_pending = false;
    }

    /// Agent `a`'s break timer, due at `at`, has expired: reports the break and arms the
    /// timer for the next multiple of the limit. A late tick reports the multiples passed
    /// since in one decision, not in a burst.
    fn break_over_limit(
        &mut self,
        a: AgentIdx,
        at: Instant,
        now: Instant,
        out: &mut Vec<Decision>,
    ) {
        let limit = self.opts.break_limit;
        let entry = &mut self.agents[a as usize];
        debug_assert_eq!(entry.break_at, Some(at), "break timer out of step");
        entry.break_at = None;
        let AgentState::NotReady { reason } = &entry.state else {
            return;
        };
        let not_ready_for = now.saturating_duration_since(entry.since);
        let count = not_ready_for.as_nanos() / limit.as_nanos().max(1);
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        out.push(Decision::BreakOverLimit {
            agent: entry.id.clone(),
            reason: reason.clone(),
            not_ready_for,
            count,
        });
        if let Some(next) = limit
            .checked_mul(count.saturating_add(1))
            .and_then(|d| entry.since.checked_add(d))
        {
            entry.break_at = Some(next);
            self.break_timers.insert((next, a));
        }
    }

    fn set_timer(&mut self, a: AgentIdx, until: Instant) {
        self.clear_timer(a);
        self.agents[a as usize].timer = Some(until);
        self.agent_timers.insert((until, a));
    }

    fn clear_timer(&mut self, a: AgentIdx) {
        if let Some(t) = self.agents[a as usize].timer.take() {
            self.agent_timers.remove(&(t, a));
        }
    }

    fn remove_waiting(&mut self, seq: Seq) {
        if let Some(c) = self.calls.get(&seq) {
            self.queues[c.queue as usize].remove(c, seq);
        }
    }

    fn forget_call(&mut self, seq: Seq) {
        if let Some(c) = self.calls.remove(&seq) {
            self.call_index.remove(&c.id);
        }
    }

    /// An agent whose offer was cancelled: logged out if pending, else ready.
    fn release(&mut self, a: AgentIdx, now: Instant, out: &mut Vec<Decision>) {
        if self.agents[a as usize].logout_pending {
            self.finish_logout(a, now, out);
        } else {
            self.become_ready(a, now, out);
        }
    }

    /// The agent is ready: it takes the best waiting caller it is eligible for, or joins
    /// the free sets of its queues.
    fn become_ready(&mut self, a: AgentIdx, now: Instant, out: &mut Vec<Decision>) {
        self.set_state(a, AgentState::Ready, now, out);
        match self.find_caller(a, now) {
            Some(seq) => self.reserve(seq, vec![a], true, now, out),
            None => self.insert_free(a),
        }
    }

    fn free_key(&self, a: AgentIdx, qi: QueueIdx) -> FreeKey {
        let entry = &self.agents[a as usize];
        let primary = match self.queues[qi as usize].cfg.strategy {
            Strategy::LongestIdle => entry.since.saturating_duration_since(self.epoch).as_nanos(),
            Strategy::FewestCalls => u128::from(entry.answered),
            Strategy::LeastTalkTime => entry.talk_time.as_nanos(),
            Strategy::RoundRobin | Strategy::TopDown | Strategy::Random | Strategy::RingAll => 0,
        };
        (primary, a)
    }

    fn insert_free(&mut self, a: AgentIdx) {
        // The agent's key list keeps its capacity between turns: no allocation here.
        let mut keys = std::mem::take(&mut self.agents[a as usize].free_keys);
        debug_assert!(keys.is_empty());
        keys.extend(
            self.agents[a as usize]
                .queues
                .iter()
                .map(|&qi| (qi, self.free_key(a, qi))),
        );
        for &(qi, key) in &keys {
            self.queues[qi as usize].free.insert(key);
        }
        self.agents[a as usize].free_keys = keys;
    }

    fn remove_free(&mut self, a: AgentIdx) {
        for (qi, key) in self.agents[a as usize].free_keys.drain(..) {
            self.queues[qi as usize].free.remove(&key);
        }
    }

    /// The best waiting caller agent `a` is eligible for, over the queues it serves.
    fn find_caller(&self, a: AgentIdx, now: Instant) -> Option<Seq> {
        let agent = &self.agents[a as usize];
        let mut best: Option<Rank> = None;
        for (pref, &qi) in agent.queues.iter().enumerate() {
            let queue = &self.queues[qi as usize];
            let qprio = Reverse(queue.cfg.priority);
            // Only bucket heads are looked at: a bucket's callers share priority and
            // requirements, and its head has waited longest (escalation only widens), so
            // when the head does not fit the agent, no one in its bucket does.
            for &((prio, at, seq), bucket) in &queue.heads {
                let candidate = (prio, qprio, at, pref, seq);
                if best.is_some_and(|b| candidate >= b) {
                    break; // everything later in this queue ranks lower still
                }
                let reqs = &self.reqs[queue.bucket_reqs[bucket as usize] as usize];
                if eligible(agent, queue, reqs, at, now) {
                    best = Some(candidate);
                    break;
                }
            }
        }
        best.map(|b| b.4)
    }

    /// The free eligible agent(s) the strategy of queue `qi` picks for a caller needing
    /// `reqs`, queued since `enqueued_at`. Changes nothing: [`Router::picked`] records the
    /// pick once it is made.
    fn find_agents(
        &self,
        qi: QueueIdx,
        reqs: &Reqs,
        enqueued_at: Instant,
        now: Instant,
    ) -> Vec<AgentIdx> {
        let queue = &self.queues[qi as usize];
        if queue.free.is_empty() {
            return Vec::new();
        }
        let ok =
            |&&(_, a): &&FreeKey| eligible(&self.agents[a as usize], queue, reqs, enqueued_at, now);
        let start = match queue.cfg.strategy {
            Strategy::RingAll => return queue.free.iter().filter(ok).map(|k| k.1).collect(),
            Strategy::RoundRobin => queue.rr_last.map_or(0, |l| l + 1),
            Strategy::Random => (xorshift(self.rng) % self.agents.len().max(1) as u64) as AgentIdx,
            _ => 0,
        };
        let chosen = if start == 0 {
            queue.free.iter().find(ok)
        } else {
            queue
                .free
                .range((0, start)..)
                .chain(queue.free.range(..(0, start)))
                .find(ok)
        };
        chosen.map(|k| vec![k.1]).unwrap_or_default()
    }

    /// Records that `agents` were picked for a caller of queue `qi` (round-robin moves on,
    /// the random generator advances).
    fn picked(&mut self, qi: QueueIdx, agents: &[AgentIdx]) {
        let queue = &mut self.queues[qi as usize];
        match (queue.cfg.strategy, agents) {
            (Strategy::RoundRobin, &[a]) => queue.rr_last = Some(a),
            (Strategy::Random, _) => self.rng = xorshift(self.rng),
            _ => {}
        }
    }

    /// Offers the waiting caller `seq` to the agent(s) its queue's strategy picks, if any.
    fn match_caller(&mut self, seq: Seq, now: Instant, out: &mut Vec<Decision>) {
        let Some(call) = self.calls.get(&seq) else {
            return;
        };
        let qi = call.queue;
        let reqs = &self.reqs[call.reqs as usize];
        let agents = self.find_agents(qi, reqs, call.enqueued_at, now);
        if !agents.is_empty() {
            self.picked(qi, &agents);
            self.reserve(seq, agents, true, now, out);
        }
    }

    /// The one step that takes a caller off its queue (when `queued`) and reserves the
    /// agent(s) for it.
    fn reserve(
        &mut self,
        seq: Seq,
        agents: Vec<AgentIdx>,
        queued: bool,
        now: Instant,
        out: &mut Vec<Decision>,
    ) {
        debug_assert!(!agents.is_empty());
        let Some(call) = self.calls.get(&seq) else {
            return;
        };
        debug_assert_eq!(call.status, CallStatus::Waiting, "caller offered twice");
        debug_assert!(
            agents.len() == 1 || self.queues[call.queue as usize].cfg.strategy == Strategy::RingAll
        );
        let (call_id, qi) = (call.id.clone(), call.queue);
        if queued {
            self.remove_waiting(seq);
        }
        for &a in &agents {
            debug_assert_eq!(
                self.agents[a as usize].state,
                AgentState::Ready,
                "agent offered while not ready"
            );
            debug_assert!(
                self.agents[a as usize].call.is_none(),
                "agent holds two offers"
            );
            self.remove_free(a);
            self.agents[a as usize].call = Some(seq);
            let state = AgentState::Offered {
                call: call_id.clone(),
            };
            self.set_state(a, state, now, out);
        }
        let queue = self.queues[qi as usize].cfg.id.clone();
        let decision = match agents[..] {
            [a] => Decision::Offer {
                call: call_id,
                agent: self.agents[a as usize].id.clone(),
                queue,
            },
            _ => Decision::OfferMany {
                call: call_id,
                agents: agents
                    .iter()
                    .map(|&a| self.agents[a as usize].id.clone())
                    .collect(),
                queue,
            },
        };
        if let Some(c) = self.calls.get_mut(&seq) {
            c.status = CallStatus::Offered(agents);
        }
        out.push(decision);
    }

    /// Checks the router's internal invariants; returns the first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut waiting = 0;
        for (&seq, c) in &self.calls {
            if self.call_index.get(&c.id) != Some(&seq) {
                return Err(format!("call {} not indexed", c.id));
            }
            let queue = &self.queues[c.queue as usize];
            if queue.bucket_ids.get(&(c.priority, c.reqs)) != Some(&c.bucket)
                || queue.bucket_reqs.get(c.bucket as usize) != Some(&c.reqs)
            {
                return Err(format!("call {} in the wrong bucket", c.id));
            }
            let in_queues = self
                .queues
                .iter()
                .filter(|q| q.waiting.contains(&c.key(seq)))
                .count();
            match &c.status {
                CallStatus::Waiting => {
                    waiting += 1;
                    if in_queues != 1
                        || !self.queues[c.queue as usize].waiting.contains(&c.key(seq))
                    {
                        return Err(format!("waiting call {} is in {in_queues} queues", c.id));
                    }
                }
                CallStatus::Offered(list) => {
                    if in_queues != 0 || list.is_empty() {
                        return Err(format!("offered call {} still queued or unoffered", c.id));
                    }
                    if list.len() > 1
                        && self.queues[c.queue as usize].cfg.strategy != Strategy::RingAll
                    {
                        return Err(format!("call {} offered to several agents", c.id));
                    }
                    for &a in list {
                        let agent = &self.agents[a as usize];
                        if agent.call != Some(seq)
                            || agent.state != (AgentState::Offered { call: c.id.clone() })
                        {
                            return Err(format!(
                                "call {} offered to {} in {:?}",
                                c.id, agent.id, agent.state
                            ));
                        }
                    }
                }
                CallStatus::Connected(a) => {
                    if !c.answered_before {
                        return Err(format!("connected call {} never answered", c.id));
                    }
                    let agent = &self.agents[*a as usize];
                    let talking = matches!(&agent.state,
                        AgentState::Talking { call } | AgentState::OnHold { call } if *call == c.id);
                    if in_queues != 0 || agent.call != Some(seq) || !talking {
                        return Err(format!(
                            "connected call {} inconsistent with {}",
                            c.id, agent.id
                        ));
                    }
                }
            }
        }
        for q in &self.queues {
            let (mut logged_in, mut staffed) = (0, 0);
            for &a in &q.agents {
                let p = self.agents[a as usize].presence();
                logged_in += u32::from(p.logged_in);
                staffed += u32::from(p.staffed);
            }
            if (logged_in, staffed) != (q.logged_in, q.staffed) {
                return Err(format!(
                    "queue {} counts {}/{} logged in/staffed, agents say {logged_in}/{staffed}",
                    q.cfg.id, q.logged_in, q.staffed
                ));
            }
            if q.bucket_reqs.len() != q.buckets.len() {
                return Err(format!("queue {} buckets without requirements", q.cfg.id));
            }
            let in_buckets: usize = q.buckets.iter().map(BTreeSet::len).sum();
            let non_empty = q.buckets.iter().filter(|b| !b.is_empty()).count();
            let heads_ok = q
                .heads
                .iter()
                .all(|&((_, at, seq), b)| q.buckets[b as usize].first() == Some(&(at, seq)));
            if in_buckets != q.waiting.len() || non_empty != q.heads.len() || !heads_ok {
                return Err(format!(
                    "queue {} buckets disagree with waiting set",
                    q.cfg.id
                ));
            }
        }
        let queued: usize = self.queues.iter().map(|q| q.waiting.len()).sum();
        if queued != waiting {
            return Err(format!(
                "{queued} queue entries for {waiting} waiting calls"
            ));
        }
        for (i, agent) in self.agents.iter().enumerate() {
            let a = i as AgentIdx;
            let ready = agent.state == AgentState::Ready;
            let free_everywhere = agent.free_keys.len() == agent.queues.len()
                && agent
                    .free_keys
                    .iter()
                    .all(|(qi, k)| self.queues[*qi as usize].free.contains(k) && k.1 == a);
            if ready != free_everywhere || (!ready && !agent.free_keys.is_empty()) {
                return Err(format!(
                    "agent {} free sets disagree with {:?}",
                    agent.id, agent.state
                ));
            }
            match (agent.call, agent.state.call()) {
                (None, None) => {}
                (Some(seq), Some(id)) if self.calls.get(&seq).is_some_and(|c| c.id == *id) => {}
                _ => {
                    return Err(format!(
                        "agent {} call disagrees with {:?}",
                        agent.id, agent.state
                    ));
                }
            }
        }
        for (timers, name) in [(&self.agent_timers, "timer"), (&self.break_timers, "break")] {
            for &(at, a) in timers {
                let agent = &self.agents[a as usize];
                let armed = if name == "timer" {
                    agent.timer
                } else {
                    agent.break_at
                };
                if armed != Some(at) {
                    return Err(format!("{name} of {} out of step", agent.id));
                }
            }
        }
        for (i, agent) in self.agents.iter().enumerate() {
            let a = i as AgentIdx;
            let on_break =
                matches!(&agent.state, AgentState::NotReady { reason } if reason != COOLDOWN);
            let timed = on_break && !self.opts.break_limit.is_zero();
            let break_ok = match agent.break_at {
                None => !timed,
                Some(at) => timed && at > agent.since && self.break_timers.contains(&(at, a)),
            };
            let timer_ok = agent
                .timer
                .is_none_or(|at| self.agent_timers.contains(&(at, a)));
            if !break_ok || !timer_ok {
                return Err(format!(
                    "timers of {} disagree with {:?}",
                    agent.id, agent.state
                ));
            }
        }
        let free: usize = self.queues.iter().map(|q| q.free.len()).sum();
        let expected: usize = self.agents.iter().map(|a| a.free_keys.len()).sum();
        if free != expected {
            return Err(format!("{free} free entries, {expected} expected"));
        }
        Ok(())
    }
}

/// One step of the xorshift generator behind `Strategy::Random`.
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests;
