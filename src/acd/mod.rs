//! The `acd` room: queues, agents, skills, routing strategies and the router that matches
//! waiting callers with free agents, plus the call-center policies it enforces (ring
//! no-answer, wrap-up, cool-downs, wait-time escalation). [`Router`] is pure logic (time
//! comes in as `Instant` arguments); [`RouterHandle`] is the thin tokio actor that owns one
//! router, feeds it commands and a 250 ms tick, and sends its decisions out.

pub mod model;
pub mod router;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use model::{
    AgentConfig, AgentId, AgentSnapshot, AgentState, CallId, Caller, Decision, Escalation, Outcome,
    QueueConfig, QueueId, QueuePosition, QueueSnapshot, RouterError, RouterOptions, Skill,
    Snapshot, Strategy,
};
pub use router::Router;

/// A router holding the queues, agents and policies of the configuration.
pub fn router_from_settings(
    settings: &crate::config::Settings,
    now: std::time::Instant,
) -> Result<Router, RouterError> {
    use crate::config::WhenNoAgents;
    let acd = &settings.acd;
    let options = RouterOptions {
        max_no_answer: acd.max_no_answer,
        wrap_up: acd.wrap_up,
        cooldown_busy: acd.cooldown_busy,
        cooldown_declined: acd.cooldown_declined,
        cooldown_unreachable: acd.cooldown_unreachable,
        break_limit: acd.break_limit,
        seed: rand::random(),
    };
    let mut router = Router::new(options, now);
    for (name, queue) in &settings.queues {
        router.add_queue(QueueConfig {
            id: QueueId::from(name.as_str()),
            priority: queue.priority,
            strategy: queue.strategy,
            required_skills: queue
                .required_skills
                .iter()
                .map(|(skill, level)| (skill.clone(), *level))
                .collect(),
            escalation: queue
                .escalation
                .iter()
                .map(|step| Escalation {
                    after: step.after,
                    min_proficiency: step.min_proficiency,
                    extra_skills: step.add_skills.clone(),
                })
                .collect(),
            max_len: queue.max_len,
            join_empty: queue.when_no_agents == WhenNoAgents::Join,
            min_staffed: queue.min_staffed,
        })?;
    }
    for agent in settings.agents.values() {
        router.add_agent(AgentConfig {
            id: AgentId::from(agent.id.as_str()),
            queues: agent
                .queues
                .iter()
                .map(|q| QueueId::from(q.as_str()))
                .collect(),
            skills: agent
                .skills
                .iter()
                .map(|(name, level)| Skill::new(name, *level))
                .collect(),
        })?;
    }
    Ok(router)
}

/// How often the actor calls [`Router::tick`].
pub const TICK: Duration = Duration::from_millis(250);

/// A request to the router actor; each maps to the [`Router`] method of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    AddQueue(QueueConfig),
    AddAgent(AgentConfig),
    AgentLogin(AgentId),
    AgentReady(AgentId),
    AgentNotReady(AgentId, String),
    AgentLogout(AgentId),
    AgentRequestLogout(AgentId),
    Enqueue(Caller),
    Dequeue(CallId),
    OfferAnswered(CallId, AgentId),
    OfferFailed(CallId, AgentId, Outcome),
    CallEnded(CallId, AgentId),
    Requeue(CallId, AgentId),
    EnqueueFor(Caller, AgentId),
    HoldStarted(CallId, AgentId),
    HoldEnded(CallId, AgentId),
}

/// The router actor has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ACD router has stopped")]
pub struct RouterStopped;

enum Request {
    Command(Command, Option<oneshot::Sender<Result<(), RouterError>>>),
    Snapshot(oneshot::Sender<Snapshot>),
    Position(CallId, oneshot::Sender<Option<QueuePosition>>),
}

/// A cheap, cloneable handle to the router actor. The actor stops when every handle is
/// dropped or the decision receiver is closed.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    tx: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Command(c, _) => write!(f, "Command({c:?})"),
            Request::Snapshot(_) => f.write_str("Snapshot"),
            Request::Position(call, _) => write!(f, "Position({call})"),
        }
    }
}

fn apply(router: &mut Router, cmd: Command) -> Result<Vec<Decision>, RouterError> {
    let now = tokio::time::Instant::now().into_std();
    match cmd {
        Command::AddQueue(cfg) => router.add_queue(cfg).map(|()| Vec::new()),
        Command::AddAgent(cfg) => router.add_agent(cfg).map(|()| Vec::new()),
        Command::AgentLogin(a) => router.agent_login(&a, now),
        Command::AgentReady(a) => router.agent_ready(&a, now),
        Command::AgentNotReady(a, reason) => router.agent_not_ready(&a, &reason, now),
        Command::AgentLogout(a) => router.agent_logout(&a, now),
        Command::AgentRequestLogout(a) => router.agent_request_logout(&a, now),
        Command::Enqueue(caller) => router.enqueue(caller, now),
        Command::Dequeue(call) => router.dequeue(&call, now),
        Command::OfferAnswered(c, a) => router.offer_answered(&c, &a, now),
        Command::OfferFailed(c, a, outcome) => router.offer_failed(&c, &a, outcome, now),
        Command::CallEnded(c, a) => router.call_ended(&c, &a, now),
        Command::EnqueueFor(caller, a) => router.enqueue_for(caller, &a, now),
        Command::Requeue(c, a) => router.requeue(&c, &a, now),
        Command::HoldStarted(c, a) => router.hold_started(&c, &a, now),
        Command::HoldEnded(c, a) => router.hold_ended(&c, &a, now),
    }
}

impl RouterHandle {
    /// Spawns the actor owning `router`; its decisions go to `decisions`, in order. Must be
    /// called inside a tokio runtime. The join handle yields the router when the actor stops.
    pub fn start(
        mut router: Router,
        decisions: mpsc::UnboundedSender<Decision>,
    ) -> (Self, JoinHandle<Router>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let out = tokio::select! {
                    req = rx.recv() => match req {
                        None => break,
                        Some(Request::Snapshot(reply)) => {
                            let now = tokio::time::Instant::now().into_std();
                            let _ = reply.send(router.snapshot(now));
                            continue;
                        }
                        Some(Request::Position(call, reply)) => {
                            let now = tokio::time::Instant::now().into_std();
                            let _ = reply.send(router.position(&call, now));
                            continue;
                        }
                        Some(Request::Command(cmd, reply)) => {
                            let result = apply(&mut router, cmd);
                            let (out, result) = match result {
                                Ok(out) => (out, Ok(())),
                                Err(e) => {
                                    tracing::debug!(error = %e, "router refused a command");
                                    (Vec::new(), Err(e))
                                }
                            };
                            if let Some(reply) = reply {
                                let _ = reply.send(result);
                            }
                            out
                        }
                    },
                    _ = tick.tick() => router.tick(tokio::time::Instant::now().into_std()),
                };
                for d in out {
                    if decisions.send(d).is_err() {
                        return router;
                    }
                }
            }
            router
        });
        (Self { tx }, task)
    }

    /// Sends a command without waiting for its result (refusals are logged at debug).
    pub fn send(&self, cmd: Command) -> Result<(), RouterStopped> {
        self.tx
            .send(Request::Command(cmd, None))
            .map_err(|_| RouterStopped)
    }

    /// Sends a command and waits until the router has applied (or refused) it; its
    /// decisions are on the decision channel by then.
    pub async fn request(&self, cmd: Command) -> Result<Result<(), RouterError>, RouterStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Command(cmd, Some(reply)))
            .map_err(|_| RouterStopped)?;
        rx.await.map_err(|_| RouterStopped)
    }

    /// Where a waiting caller stands in its queue (`None` when it is not waiting).
    pub async fn position(&self, call: CallId) -> Result<Option<QueuePosition>, RouterStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Position(call, reply))
            .map_err(|_| RouterStopped)?;
        rx.await.map_err(|_| RouterStopped)
    }

    /// The router's current snapshot.
    pub async fn snapshot(&self) -> Result<Snapshot, RouterStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Snapshot(reply))
            .map_err(|_| RouterStopped)?;
        rx.await.map_err(|_| RouterStopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn actor_routes_and_replies() {
        let (dtx, mut drx) = mpsc::unbounded_channel();
        let router = Router::new(RouterOptions::default(), std::time::Instant::now());
        let (handle, task) = RouterHandle::start(router, dtx);
        let q = QueueConfig::new("q");
        handle.request(Command::AddQueue(q)).await.unwrap().unwrap();
        let agent = AgentConfig {
            id: AgentId::from("a"),
            queues: vec![QueueId::from("q")],
            skills: vec![],
        };
        handle
            .request(Command::AddAgent(agent))
            .await
            .unwrap()
            .unwrap();
        handle
            .request(Command::AgentLogin(AgentId::from("a")))
            .await
            .unwrap()
            .unwrap();
        let caller = Caller {
            call: CallId::from("c"),
            queue: QueueId::from("q"),
            priority: 0,
            enqueued_at: std::time::Instant::now(),
            skills: vec![],
        };
        handle
            .request(Command::Enqueue(caller.clone()))
            .await
            .unwrap()
            .unwrap();
        let mut offered = false;
        while let Ok(d) = drx.try_recv() {
            offered |= matches!(d, Decision::Offer { ref agent, .. } if agent.0 == "a");
        }
        assert!(offered);
        let refused = handle
            .request(Command::AgentLogin(AgentId::from("nobody")))
            .await
            .unwrap();
        assert!(matches!(refused, Err(RouterError::UnknownAgent(_))));
        let snap = handle.snapshot().await.unwrap();
        assert_eq!(snap.agents[0].state, "offered");
        // The offered caller is not waiting; a second one is, first in line.
        let waiting = Caller {
            call: CallId::from("c2"),
            ..caller
        };
        handle
            .request(Command::Enqueue(waiting))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handle.position(CallId::from("c")).await, Ok(None));
        let pos = handle.position(CallId::from("c2")).await.unwrap().unwrap();
        assert_eq!(
            (pos.position, pos.waiting, pos.estimated_wait),
            (1, 1, None)
        );
        drop(handle);
        let router = task.await.unwrap();
        router.check_invariants().unwrap();
    }

    #[tokio::test]
    async fn actor_refuses_a_logout_below_minimum_staffing() {
        let (dtx, mut drx) = mpsc::unbounded_channel();
        let mut router = Router::new(RouterOptions::default(), std::time::Instant::now());
        router
            .add_queue(QueueConfig {
                min_staffed: 1,
                ..QueueConfig::new("q")
            })
            .unwrap();
        router
            .add_agent(AgentConfig {
                id: AgentId::from("a"),
                queues: vec![QueueId::from("q")],
                skills: vec![],
            })
            .unwrap();
        let (handle, _task) = RouterHandle::start(router, dtx);
        let a = || AgentId::from("a");
        handle
            .request(Command::AgentLogin(a()))
            .await
            .unwrap()
            .unwrap();
        let refused = handle
            .request(Command::AgentRequestLogout(a()))
            .await
            .unwrap();
        assert!(matches!(
            refused,
            Err(RouterError::MinStaffed {
                staffed: 1,
                min: 1,
                ..
            })
        ));
        handle
            .request(Command::AgentLogout(a()))
            .await
            .unwrap()
            .unwrap();
        let mut alerted = false;
        while let Ok(d) = drx.try_recv() {
            alerted |= matches!(
                d,
                Decision::StaffingBelowMinimum {
                    staffed: 0,
                    min: 1,
                    ..
                }
            );
        }
        assert!(alerted);
        assert_eq!(handle.snapshot().await.unwrap().queues[0].staffed, 0);
    }

    /// Wrap-up (L4) and the break limit (L7) run on the actor's own tick,
    /// measured here on tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn wrap_up_and_break_timers_fire_on_the_actor_tick() {
        let (dtx, mut drx) = mpsc::unbounded_channel();
        let opts = RouterOptions {
            wrap_up: Duration::from_secs(60),
            break_limit: Duration::from_secs(300),
            ..RouterOptions::default()
        };
        let router = Router::new(opts, tokio::time::Instant::now().into_std());
        let (handle, _task) = RouterHandle::start(router, dtx);
        let a = AgentId::from("a");
        let c = CallId::from("c");
        let send = |cmd| {
            let handle = handle.clone();
            async move { handle.request(cmd).await.unwrap().unwrap() }
        };
        send(Command::AddQueue(QueueConfig::new("q"))).await;
        send(Command::AddAgent(AgentConfig {
            id: a.clone(),
            queues: vec![QueueId::from("q")],
            skills: vec![],
        }))
        .await;
        send(Command::AgentLogin(a.clone())).await;
        send(Command::Enqueue(Caller {
            call: c.clone(),
            queue: QueueId::from("q"),
            priority: 0,
            enqueued_at: tokio::time::Instant::now().into_std(),
            skills: vec![],
        }))
        .await;
        send(Command::OfferAnswered(c.clone(), a.clone())).await;
        send(Command::CallEnded(c, a.clone())).await;
        let state = |d: &Decision| match d {
            Decision::AgentState { state, .. } => Some(state.name()),
            _ => None,
        };
        let mut last = None;
        while let Ok(d) = drx.try_recv() {
            last = state(&d).or(last);
        }
        assert_eq!(last, Some("wrap-up"));
        tokio::time::sleep(Duration::from_millis(59_700)).await;
        assert!(drx.try_recv().is_err(), "wrap-up ended early");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let ready = drx.try_recv().expect("ready after 60 s of wrap-up");
        assert_eq!(state(&ready), Some("ready"));

        send(Command::AgentNotReady(a.clone(), "lunch".into())).await;
        while drx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(299_700)).await;
        assert!(drx.try_recv().is_err(), "break alert before the limit");
        tokio::time::sleep(Duration::from_millis(600)).await;
        match drx.try_recv() {
            Ok(Decision::BreakOverLimit { reason, count, .. }) => {
                assert_eq!((reason.as_str(), count), ("lunch", 1));
            }
            other => panic!("expected a break alert, got {other:?}"),
        }
    }
}
