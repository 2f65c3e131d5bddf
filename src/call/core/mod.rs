//! The pure core of a call's life in the ACD: its place in a queue, the
//! agents being rung, the agent it is connected to and the hold. It takes
//! inputs with the time they happen at and answers with effects for the
//! driver (the call actor) to carry out; it owns no socket, no SIP dialog and
//! no runtime, so every combination is a script of inputs (see `tests.rs`).
//!
//! The stage is data, the call's one state: a caller in an IVR flow (the
//! run of the flow itself is kept in the stage: it is pure, and leaves with
//! the stage), hearing a queue's greeting, between two of these, waiting
//! (with the offers ringing, or kept for a callback), connected to an agent
//! (announced, calling the customer back, or talking, with at most one hold
//! carrying its reason), hearing a last prompt before it is hung up, or
//! ended. The driver asks the core what the end of a prompt means and
//! whether the call is bridged; it keeps no state of its own beside the
//! stage. Deadlines are computed from the stage, never stored beside it. Sub-machines: [`queue`] (waiting, announcements, overflow,
//! max wait, the callback offer), [`ringing`] (offers, ring limit, the answer
//! race), [`bridge`] (the connection, hold and the hold limit, release),
//! [`callback`] (the caller's number, the customer's ring limit), [`survey`]
//! (the score of the post-call survey), [`consult`] (consultation, transfer,
//! three-way calls) and [`monitor`] (a supervisor's session).

pub mod bridge;
pub mod callback;
pub mod consult;
pub mod monitor;
pub mod queue;
pub mod ringing;
pub mod survey;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::acd::{AgentId, CallId, Command, Outcome, QueuePosition};

use crate::events::{Event, ReleasedBy};
use crate::ivr::{Action as IvrAction, Input as IvrInput, IvrRun};

pub use self::bridge::{Bridge, Hold, HoldReason, Link};
pub use self::callback::{CallbackRequest, NumberEntry};
pub use self::queue::{CallbackOffer, KeptForCallback, Place, QueueTimers, Waiting};
pub use self::ringing::Offer;
use super::policy::CallPolicy;

/// One of the two parties of a bridged call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Agent,
}

/// Where the call stands in the ACD.
#[derive(Debug)]
pub enum Stage {
    /// Not in a queue: just arrived, or overflowed or released and not yet
    /// anywhere else. The caller's place is kept (its waited time survives),
    /// as in every stage before the end.
    Outside { place: Option<Place> },
    /// In IVR flow `flow` (a survey's too), at the point `run` stands.
    Ivr {
        place: Option<Place>,
        flow: String,
        run: Box<IvrRun>,
    },
    /// Hearing a greeting (or an overflow prompt) before joining `queue`.
    Greeting { place: Option<Place>, queue: String },
    /// In a queue, agents perhaps ringing.
    Waiting(Waiting),
    /// An agent answered.
    Connected {
        place: Option<Place>,
        bridge: Bridge,
    },
    /// Hearing a last prompt (or none): the call is hung up as it ends.
    Closing { place: Option<Place> },
    /// The call is over; every leg released, the router told.
    Ended,
}

/// What happens to a call, as the core sees it.
#[derive(Debug)]
pub enum Input {
    /// The caller enters IVR flow `flow`, `run` started (its first actions
    /// are the driver's already).
    EnterIvr { flow: String, run: Box<IvrRun> },
    /// Something for the IVR flow (a key, a timer, a lookup's reply); the
    /// end of a prompt comes as [`Input::PromptEnded`].
    Ivr(IvrInput),
    /// The caller hears `queue`'s greeting, then joins it.
    Greet { queue: String },
    /// The caller is hung up after the prompt it hears (or at once).
    Close,
    /// The agent passes the call on (API or phone): the transfer is counted
    /// (rulebook L6).
    PassedOn(PassedOn),
    /// The caller joins `queue` (`paused`: the queue takes nobody, the
    /// caller goes straight to its overflow).
    Enqueue {
        queue: String,
        timers: QueueTimers,
        /// The trunk can call back and no callback is under way.
        callback_possible: bool,
        paused: bool,
    },
    /// The router refused to queue the caller.
    Refused,
    /// The caller left its queue for the overflow target (named for the event).
    Overflowed {
        reason: &'static str,
        target: String,
    },
    /// The router's answer to where the caller stands.
    Position {
        position: Option<QueuePosition>,
        /// The caller is keying a callback number: no announcement.
        entering_number: bool,
    },
    /// The caller pressed the callback key and is giving a number: the
    /// position announcements stop.
    NumberEntryStarted,
    /// A number offered for the callback (the caller's own, or one keyed
    /// in); `e164`: the trunk's dial plan allows it, as these digits.
    NumberProposed {
        number: String,
        e164: Option<String>,
    },
    /// A key while the caller gives its number (the confirmation records
    /// the callback: the call keeps its place without the caller, no more
    /// queue timers).
    NumberKey(char),
    /// The called-back customer's phone rings (its ring limit counts from now).
    CustomerDialled,
    /// The customer's phone answered, or failed.
    CustomerFinal,
    /// The router offered the call to `agent`; `contacts` phones ring (0:
    /// none could be rung).
    Offered {
        agent: AgentId,
        queue: String,
        contacts: usize,
    },
    /// The router took the offer back.
    OfferWithdrawn(AgentId),
    /// Every phone of `agent` answered no.
    OfferSettled { agent: AgentId, outcome: Outcome },
    /// The router accepted `agent`'s answer: the call is connected
    /// (`announce`: the queue has the caller hear the agent's number first).
    AgentAnswered { agent: AgentId, announce: bool },
    /// The router refused `agent`'s answer (the call went elsewhere);
    /// `still_ringing`: other phones of that agent still ring.
    AnswerRefused { agent: AgentId, still_ringing: bool },
    /// A consulted agent takes the call over (attended transfer).
    TakenOver {
        agent: AgentId,
        queue: String,
        router_call: CallId,
        /// When the consulted agent's phone began to ring.
        rang_since: Instant,
    },
    /// Caller and agent hear each other (after the agent's announcement).
    Bridged,
    /// Whether each phone's media is on hold, after either side's offer.
    PhoneHold { caller: bool, agent: bool },
    /// CTI hold (true) or resume (false).
    ApiHold(bool),
    /// The agent consults someone (true) or is back (false).
    ConsultHold(bool),
    /// A phone answered (or not) hotline's resume re-INVITE; still held
    /// means the limit counts again from now.
    ResumeAnswered,
    /// The prompt the caller heard ended (the stage says what follows).
    PromptEnded,
    /// The agent goes to wrap-up, the caller stays (transfer, survey).
    ReleaseAgent(ReleasedBy),
    /// The call is over.
    Ended(ReleasedBy),
    /// Time passed: whatever is due at `now` happens.
    Tick,
}

/// What the driver does for the core.
#[derive(Debug, PartialEq)]
pub enum Effect {
    Publish(Event),
    Router(Command),
    /// Queue the caller with the router (first offered to `first`, the
    /// agent a transfer named).
    JoinRouter {
        first: Option<AgentId>,
    },
    /// The queue is paused: straight to the overflow.
    Paused,
    /// CANCEL the agent's ringing phones; its leg is given up.
    CancelRinging(AgentId),
    /// BYE the connected agent's dialog.
    EndAgentDialog,
    /// The hold limit takes the agent off the call: its leg is dropped (its
    /// dialog ended), consultation and monitoring end.
    DetachAgent,
    /// The agent who was on the call before a take-over passed it on (the
    /// transfer is counted: `count` so far; the driver publishes it).
    Transferred {
        agent: AgentId,
        from_queue: String,
        count: u32,
    },
    /// The IVR flow asks for these actions.
    Ivr(Vec<IvrAction>),
    /// Hang the caller up (its number is kept for a callback).
    HangUpCaller,
    /// The caller hears these prompts once.
    Play(Vec<String>),
    /// The caller hears the agent's number; the bridge follows the prompt.
    Announce(Vec<String>),
    /// Caller and agent are connected now.
    Bridge,
    /// A callback's agent is on the line: the customer is called.
    DialCustomer,
    /// The caller hears its queue's music again.
    QueueMusic,
    /// The held side hears music on hold.
    HoldMusic(Side),
    /// Off hold: both legs' music stops.
    StopHoldMusic,
    /// Tell the agent's phone how long the caller is held (a MESSAGE).
    HoldAlert {
        held: Duration,
        limit: Duration,
    },
    /// Take the phones off hold (a re-INVITE to each side holding).
    ResumePhones,
    /// The caller queues afresh in `queue` (after the hold limit, when the
    /// agent had taken the call over from a consultation).
    EnterQueue(String),
    /// Ask the router where the caller stands.
    AskPosition,
    /// Check a keyed-in callback number against the trunk's dial plan (the
    /// answer comes back as [`Input::NumberProposed`]).
    CheckNumber(String),
    /// The caller keys another number: the read-back stops.
    StopPrompt,
    /// The caller gave no number (timeout, too many refused): it goes on
    /// waiting with its music.
    NumberEntryEnded,
    /// The called-back customer did not answer in time: its INVITE is
    /// cancelled and the callback failed.
    CustomerUnanswered,
    /// The caller leaves its queue for the overflow (`max_wait`).
    Overflow(&'static str),
}

/// Where the agent passes the call on to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassedOn {
    /// A queue; `first`: the agent the next queueing offers the call to
    /// first (a transfer to a named agent).
    Queue { first: Option<AgentId> },
    /// An IVR flow.
    Flow,
}

/// `acd.max_transfers` is reached (rulebook L6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimit {
    pub done: u32,
    pub max: u32,
}

/// The call's identity, for the events it publishes.
#[derive(Debug, Clone)]
pub struct Ident {
    pub call_id: String,
    pub caller: String,
    pub number: String,
}

/// A call's ACD life.
#[derive(Debug)]
pub struct CallCore {
    pub ident: Ident,
    policy: CallPolicy,
    pub stage: Stage,
    /// The router knows the call (waiting, offered or connected).
    in_router: bool,
    /// What the IVR learned (the screen pop of every offer).
    pub vars: BTreeMap<String, String>,
    /// The caller left a number: from then on the call is a callback.
    callback: Option<CallbackRequest>,
    /// Transfers so far (rulebook L6), whoever passed the call on.
    transfers: u32,
    /// The agent the next queueing offers the call to first (a transfer
    /// named it); taken when the call joins the router.
    direct_to: Option<AgentId>,
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl CallCore {
    pub fn new(ident: Ident, policy: CallPolicy) -> CallCore {
        CallCore {
            ident,
            policy,
            stage: Stage::Outside { place: None },
            in_router: false,
            vars: BTreeMap::new(),
            callback: None,
            transfers: 0,
            direct_to: None,
        }
    }

    pub fn call(&self) -> CallId {
        CallId::from(self.ident.call_id.as_str())
    }

    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// Transfers so far (rulebook L6).
    pub fn transfers(&self) -> u32 {
        self.transfers
    }

    /// The agent a transfer named, until the call joins the router.
    pub fn direct_to(&self) -> Option<&AgentId> {
        self.direct_to.as_ref()
    }

    /// Whether `acd.max_transfers` forbids passing the call on again.
    pub fn transfer_limit(&self) -> Option<TransferLimit> {
        let max = self.policy.max_transfers;
        (self.transfers >= max).then_some(TransferLimit {
            done: self.transfers,
            max,
        })
    }

    /// The router knows the call.
    pub fn in_router(&self) -> bool {
        self.in_router
    }

    /// The router let the call go (a dequeue it confirmed).
    pub fn left_router(&mut self) {
        self.in_router = false;
    }

    /// The caller's place: its queue and when it first queued.
    pub fn place(&self) -> Option<&Place> {
        match &self.stage {
            Stage::Outside { place }
            | Stage::Ivr { place, .. }
            | Stage::Greeting { place, .. }
            | Stage::Closing { place }
            | Stage::Connected { place, .. } => place.as_ref(),
            Stage::Waiting(waiting) => Some(&waiting.place),
            Stage::Ended => None,
        }
    }

    pub fn waiting(&self) -> Option<&Waiting> {
        match &self.stage {
            Stage::Waiting(waiting) => Some(waiting),
            _ => None,
        }
    }

    pub fn bridge(&self) -> Option<&Bridge> {
        match &self.stage {
            Stage::Connected { bridge, .. } => Some(bridge),
            _ => None,
        }
    }

    pub(crate) fn bridge_mut(&mut self) -> Option<&mut Bridge> {
        match &mut self.stage {
            Stage::Connected { bridge, .. } => Some(bridge),
            _ => None,
        }
    }

    /// The IVR flow the caller is in, and where its run stands.
    pub fn ivr(&self) -> Option<(&str, &IvrRun)> {
        match &self.stage {
            Stage::Ivr { flow, run, .. } => Some((flow, run)),
            _ => None,
        }
    }

    /// The caller hung up in an IVR flow: the driver takes the flow's name
    /// and run for the last events; the call stands outside (its place
    /// kept) for its end.
    pub fn take_ivr(&mut self) -> Option<(String, Box<IvrRun>)> {
        if !matches!(self.stage, Stage::Ivr { .. }) {
            return None;
        }
        let place = self.place().cloned();
        match std::mem::replace(&mut self.stage, Stage::Outside { place }) {
            Stage::Ivr { flow, run, .. } => Some((flow, run)),
            _ => None,
        }
    }

    /// The caller waits in a queue, on the line (no callback recorded).
    pub fn queued(&self) -> bool {
        self.waiting().is_some_and(|w| w.kept.is_none())
    }

    /// Caller and agent hear each other (the announcement over, the
    /// called-back customer answered).
    pub fn bridged(&self) -> bool {
        self.bridge().is_some_and(Bridge::talking)
    }

    /// The caller left a number and is hung up (or being so), the agent
    /// not yet talking to the called-back customer: the end of the
    /// caller's dialog is expected and ends nothing.
    pub fn caller_gone_for_callback(&self) -> bool {
        match &self.stage {
            Stage::Waiting(waiting) => waiting.kept.is_some(),
            Stage::Connected { bridge, .. } => bridge.link == Link::CallingCustomer,
            _ => false,
        }
    }

    /// The call is hung up when the prompt playing ends.
    pub fn closing(&self) -> bool {
        matches!(self.stage, Stage::Closing { .. })
    }

    /// The hold in progress.
    pub fn hold(&self) -> Option<&Hold> {
        self.bridge().and_then(|b| b.hold.as_ref())
    }

    pub fn is_held(&self) -> bool {
        self.hold().is_some()
    }

    /// Agents whose phones ring.
    pub fn offers(&self) -> &[Offer] {
        match &self.stage {
            Stage::Waiting(waiting) => &waiting.offers,
            _ => &[],
        }
    }

    /// An agent's phones may ring for the call: it waits in a queue.
    pub fn may_ring(&self) -> bool {
        matches!(self.stage, Stage::Waiting(_))
    }

    /// When the core next has something to do (ring limit, queue timers,
    /// the callback number's entry, hold clock, the customer's ring limit),
    /// computed from the stage.
    pub fn deadline(&self) -> Option<Instant> {
        [self.stage_deadline(), self.callback_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn stage_deadline(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Waiting(waiting) => {
                let ring = waiting
                    .offers
                    .iter()
                    .map(|o| o.ring_deadline(self.policy.ring_limit))
                    .min();
                [ring, waiting.deadline()].into_iter().flatten().min()
            }
            Stage::Connected { bridge, .. } => bridge.deadline(),
            Stage::Outside { .. }
            | Stage::Ivr { .. }
            | Stage::Greeting { .. }
            | Stage::Closing { .. }
            | Stage::Ended => None,
        }
    }

    /// Takes one input at `now`; returns what the driver must do, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::EnterIvr { flow, run } => {
                let place = self.place().cloned();
                self.stage = Stage::Ivr { place, flow, run };
            }
            Input::Ivr(input) => {
                if let Stage::Ivr { run, .. } = &mut self.stage {
                    out.push(Effect::Ivr(run.on(input)));
                }
            }
            Input::Greet { queue } => {
                let place = self.place().cloned();
                self.stage = Stage::Greeting { place, queue };
            }
            Input::Close => {
                let place = self.place().cloned();
                self.stage = Stage::Closing { place };
            }
            Input::PassedOn(to) => {
                self.transfers += 1;
                if let PassedOn::Queue { first } = to {
                    self.direct_to = first;
                }
            }
            Input::Enqueue {
                queue,
                timers,
                callback_possible,
                paused,
            } => self.enqueue(queue, timers, callback_possible, paused, now, &mut out),
            Input::Refused => self.in_router = false,
            Input::Overflowed { reason, target } => self.overflowed(reason, target, now, &mut out),
            Input::Position {
                position,
                entering_number,
            } => self.position(position, entering_number, now, &mut out),
            Input::NumberEntryStarted => self.start_number_entry(now),
            Input::NumberProposed { number, e164 } => {
                self.number_proposed(&number, e164, now, &mut out)
            }
            Input::NumberKey(digit) => self.number_key(digit, now, &mut out),
            Input::CustomerDialled => self.customer_dialled(now),
            Input::CustomerFinal => self.customer_final(),
            Input::Offered {
                agent,
                queue,
                contacts,
            } => self.offered(agent, queue, contacts, now, &mut out),
            Input::OfferWithdrawn(agent) => self.withdrawn(&agent, &mut out),
            Input::OfferSettled { agent, outcome } => self.settled(&agent, outcome, now, &mut out),
            Input::AgentAnswered { agent, announce } => {
                self.answered(agent, announce, now, &mut out)
            }
            Input::AnswerRefused {
                agent,
                still_ringing,
            } => self.answer_refused(&agent, still_ringing),
            Input::TakenOver {
                agent,
                queue,
                router_call,
                rang_since,
            } => self.taken_over(agent, queue, router_call, rang_since, now, &mut out),
            Input::Bridged => {
                if let Some(bridge) = self.bridge_mut() {
                    bridge.link = Link::Talking;
                }
                // A hold asked for during the announcement starts now.
                self.holds(now, &mut out, |_| {});
            }
            Input::PhoneHold { caller, agent } => self.holds(now, &mut out, |r| {
                r.caller_phone = caller;
                r.agent_phone = agent;
            }),
            Input::ApiHold(on) => self.holds(now, &mut out, |r| r.api = on),
            Input::ConsultHold(on) => self.holds(now, &mut out, |r| r.consultation = on),
            Input::ResumeAnswered => self.resume_answered(now),
            Input::PromptEnded => self.prompt_ended(&mut out),
            Input::ReleaseAgent(by) => self.release_agent(by, now, &mut out),
            Input::Ended(by) => self.end(by, now, &mut out),
            Input::Tick => {
                self.ring_limits(now, &mut out);
                self.queue_timers(now, &mut out);
                self.hold_clock(now, &mut out);
                self.callback_timers(now, &mut out);
                debug_assert!(self.deadline().is_none_or(|d| d > now));
            }
        }
        debug_assert_eq!(self.invariants(), Ok(()));
        out
    }

    /// What must hold after every input: checked by the tests after every
    /// step, and in debug builds (with: no deadline left in the past after
    /// a tick).
    pub fn invariants(&self) -> Result<(), String> {
        // The router knows only a caller with a place (its queue).
        if self.in_router && self.place().is_none() {
            return Err("in the router without a place".into());
        }
        match &self.stage {
            Stage::Connected { bridge, .. } => {
                let requested = bridge.requests.any() && bridge.talking();
                if requested != bridge.hold.is_some() {
                    return Err(format!(
                        "held {} but hold requested {requested}",
                        bridge.hold.is_some()
                    ));
                }
            }
            Stage::Waiting(waiting) => {
                let mut agents: Vec<_> = waiting.offers.iter().map(|o| &o.agent).collect();
                agents.sort();
                agents.dedup();
                if agents.len() != waiting.offers.len() {
                    return Err("an agent offered twice".into());
                }
                if waiting.kept.is_some() && waiting.deadline().is_some() {
                    return Err("a call kept for a callback runs queue timers".into());
                }
                if waiting.kept.is_some() && waiting.number_entry.is_some() {
                    return Err("a call kept for a callback takes a number".into());
                }
            }
            Stage::Ended => {
                if self.in_router {
                    return Err("an ended call still in the router".into());
                }
                if self.deadline().is_some() {
                    return Err("an ended call has a deadline".into());
                }
            }
            Stage::Outside { .. }
            | Stage::Ivr { .. }
            | Stage::Greeting { .. }
            | Stage::Closing { .. } => {}
        }
        Ok(())
    }
}

/// The prompts that read a number out digit by digit.
fn digit_prompts(n: u64) -> Vec<String> {
    n.to_string()
        .chars()
        .map(|d| format!("digit_{d}"))
        .collect()
}
