//! The ACD data model: identifiers, skills, agent states, routing strategies and the
//! configuration of queues and agents, plus the decisions the router hands back.
//! Plain values only: no I/O, no clocks (times are `Instant`s supplied by the caller).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(
    /// An agent (a person at a softphone), e.g. its agent number.
    AgentId
);
id_type!(
    /// A queue, as named in the configuration.
    QueueId
);
id_type!(
    /// A call, as known to the call actor.
    CallId
);

/// A skill an agent holds, with a proficiency of 1 (novice) to 10 (expert).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    pub name: String,
    pub proficiency: u8,
}

impl Skill {
    pub fn new(name: &str, proficiency: u8) -> Self {
        Self {
            name: name.to_owned(),
            proficiency,
        }
    }
}

/// Where an agent is. The router keeps the instant the state was entered beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    LoggedOut,
    Ready,
    NotReady { reason: String },
    Offered { call: CallId },
    Talking { call: CallId },
    OnHold { call: CallId },
    WrapUp { until: Instant },
}

impl AgentState {
    /// A stable, short name for metrics, snapshots and the CTI API.
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::LoggedOut => "logged-out",
            AgentState::Ready => "ready",
            AgentState::NotReady { .. } => "not-ready",
            AgentState::Offered { .. } => "offered",
            AgentState::Talking { .. } => "talking",
            AgentState::OnHold { .. } => "on-hold",
            AgentState::WrapUp { .. } => "wrap-up",
        }
    }

    /// The call this state is about, if any.
    pub fn call(&self) -> Option<&CallId> {
        match self {
            AgentState::Offered { call }
            | AgentState::Talking { call }
            | AgentState::OnHold { call } => Some(call),
            _ => None,
        }
    }
}

/// How a queue chooses among several free, eligible agents for an arriving caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The agent that has been ready the longest.
    #[default]
    LongestIdle,
    /// The next agent after the last one chosen for this queue, in agent order.
    RoundRobin,
    /// The agent with the fewest answered calls since the last counter reset.
    FewestCalls,
    /// The agent with the least total talk time since the last counter reset.
    LeastTalkTime,
    /// The first agent in agent order (the order agents were added to the router).
    TopDown,
    /// A deterministic pseudo-random agent (xorshift seeded in the options).
    Random,
    /// Every free eligible agent rings at once; the first to answer wins.
    RingAll,
}

/// A wait-time escalation step: once a caller has waited `after` (since `enqueued_at`),
/// the required proficiency drops to `min_proficiency` (if given) and agents holding any
/// of `extra_skills` (at any proficiency) become eligible too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    pub after: Duration,
    pub min_proficiency: Option<u8>,
    pub extra_skills: Vec<String>,
}

/// A queue's routing configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub id: QueueId,
    /// Breaks ties between callers of equal caller priority across queues (higher first).
    pub priority: u32,
    pub strategy: Strategy,
    /// Skills every caller of this queue needs, with the minimum proficiency.
    pub required_skills: Vec<(String, u8)>,
    pub escalation: Vec<Escalation>,
    /// At most this many callers wait in the queue: an arriving caller that would have to
    /// wait is refused ([`RouterError::QueueFull`]) once `max_len` callers already wait. A
    /// caller offered at once never counts, nor is one returning to the queue refused.
    pub max_len: Option<usize>,
    /// Whether callers may queue while no agent serving the queue is logged in (in any
    /// state but logged-out); when false they are refused ([`RouterError::NoAgents`]).
    pub join_empty: bool,
    /// Handover minimum (C2): agents serving the queue that are logged in without a
    /// pending logout. A voluntary logout that would leave fewer is refused; a forced one
    /// is reported ([`Decision::StaffingBelowMinimum`]). 0 turns the rule off.
    pub min_staffed: u32,
}

impl QueueConfig {
    /// A queue with the default strategy, no skill requirement, no escalation, no length
    /// limit, open while empty of agents, and no staffing minimum.
    pub fn new(id: &str) -> Self {
        Self {
            id: QueueId::from(id),
            priority: 0,
            strategy: Strategy::default(),
            required_skills: Vec::new(),
            escalation: Vec::new(),
            max_len: None,
            join_empty: true,
            min_staffed: 0,
        }
    }
}

/// An agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub id: AgentId,
    /// The queues the agent serves, in order of preference (ties between callers of equal
    /// priority and equal waiting time go to the earlier queue).
    pub queues: Vec<QueueId>,
    pub skills: Vec<Skill>,
}

/// A caller handed to the router by the IVR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub call: CallId,
    pub queue: QueueId,
    /// Higher is served first.
    pub priority: u32,
    /// When the caller first queued; kept across overflow so the waited time is kept.
    pub enqueued_at: Instant,
    /// Skills this call needs in addition to the queue's (minimum proficiency 1).
    pub skills: Vec<String>,
}

/// Why an offer to an agent did not connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    NoAnswer,
    Busy,
    Declined,
    Unreachable,
}

/// What the router asks the rest of the server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ring `agent` for `call` (the agent is reserved, the caller is off the queue).
    Offer {
        call: CallId,
        agent: AgentId,
        queue: QueueId,
    },
    /// Ring all these agents for `call` (ring-all); the first to answer wins.
    OfferMany {
        call: CallId,
        agents: Vec<AgentId>,
        queue: QueueId,
    },
    /// Stop ringing `agent` for `call`.
    Cancel { call: CallId, agent: AgentId },
    /// `agent` entered `state`.
    AgentState { agent: AgentId, state: AgentState },
    /// Rulebook L7: `agent` has been not-ready for `reason` for `not_ready_for`, which is
    /// `count` times the break limit or more (reported once per multiple reached).
    BreakOverLimit {
        agent: AgentId,
        reason: String,
        not_ready_for: Duration,
        count: u32,
    },
    /// Rulebook C2: a forced logout left `queue` with `staffed` agents, below its `min`.
    StaffingBelowMinimum {
        queue: QueueId,
        staffed: u32,
        min: u32,
    },
}

/// Router policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterOptions {
    /// Consecutive no-answers after which an agent is set not-ready (`no-answer`).
    pub max_no_answer: u32,
    /// After-call work time (L4).
    pub wrap_up: Duration,
    /// Not-ready (`cooldown`) time after a busy / declined / unreachable offer.
    pub cooldown_busy: Duration,
    pub cooldown_declined: Duration,
    pub cooldown_unreachable: Duration,
    /// Seed of the xorshift generator used by `Strategy::Random` (0 is replaced).
    pub seed: u64,
    /// Rulebook L7: an agent not-ready for any reason but the router's own `cooldown` is
    /// reported once this long has passed, and again at every further multiple. Zero
    /// turns the rule off.
    pub break_limit: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            max_no_answer: 1,
            wrap_up: Duration::from_secs(60),
            cooldown_busy: Duration::from_secs(10),
            cooldown_declined: Duration::from_secs(10),
            cooldown_unreachable: Duration::from_secs(30),
            seed: 0x9E37_79B9_7F4A_7C15,
            break_limit: Duration::from_secs(5 * 60),
        }
    }
}

/// Errors for requests the router cannot apply; the state is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    #[error("unknown queue {0}")]
    UnknownQueue(QueueId),
    #[error("unknown call {0}")]
    UnknownCall(CallId),
    #[error("call {0} is already known to the router")]
    DuplicateCall(CallId),
    #[error("agent {0} already exists")]
    DuplicateAgent(AgentId),
    #[error("queue {0} already exists")]
    DuplicateQueue(QueueId),
    #[error("agent {agent} cannot {action} while {state}")]
    InvalidState {
        agent: AgentId,
        action: &'static str,
        state: &'static str,
    },
    #[error("queue {queue} is full: {max_len} callers already wait")]
    QueueFull { queue: QueueId, max_len: usize },
    #[error("queue {queue} has no agent logged in")]
    NoAgents { queue: QueueId },
    #[error("logout refused: queue {queue} has {staffed} staffed agents and needs at least {min}")]
    MinStaffed {
        queue: QueueId,
        staffed: u32,
        min: u32,
    },
}

/// Where a waiting caller stands, for "you are number 3 in the queue" announcements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePosition {
    pub queue: QueueId,
    /// 1-based, among the callers waiting in the queue, in the queue's service order.
    pub position: usize,
    /// Callers waiting in the queue, this one included.
    pub waiting: usize,
    /// The queue's average wait less the time this caller has already waited (zero when
    /// it has waited longer); `None` until a caller of the queue has been answered.
    pub estimated_wait: Option<Duration>,
}

/// One queue in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub id: QueueId,
    pub waiting: usize,
    pub longest_wait: Duration,
    /// Moving average of the queue's recent waits until answer; `None` before the first.
    pub estimated_wait: Option<Duration>,
    /// Agents serving this queue that are logged in without a pending logout.
    pub staffed: u32,
    /// Agents serving this queue, counted by state name.
    pub agents_by_state: BTreeMap<&'static str, usize>,
}

/// One agent in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSnapshot {
    pub id: AgentId,
    pub state: &'static str,
    pub since: Instant,
    /// Why the agent is not ready, when it is not.
    pub reason: Option<String>,
    /// The call the agent is offered, talking on or holding.
    pub call: Option<CallId>,
}

/// A plain owned picture of the router, for wallboards and the CTI API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub queues: Vec<QueueSnapshot>,
    pub agents: Vec<AgentSnapshot>,
}
