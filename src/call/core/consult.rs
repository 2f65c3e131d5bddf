//! The consultation machine (rulebook L6): the agent on a call consults a
//! named agent or a queue while the caller waits on hold, then hands the
//! caller over (attended transfer, from the API or by REFER with Replaces),
//! joins everyone in a three-way call, or goes back to the caller.
//!
//! It owns the decisions only: which consulted agent rings, who answered,
//! when the caller is held for the consultation, what the router and the bus
//! hear, and who the third party of a three-way call is. The actor owns the
//! legs (dialogs, media) and carries the [`ConsultEffect`]s out, naming legs
//! by their agent.

use std::time::{Duration, Instant};

use crate::acd::{AgentId, CallId, Caller, Command, Outcome, QueueId, RouterError};
use crate::events::Event;

/// Marks the router's id of a call's consultation; a SIP Call-ID never
/// holds a `;`, so no real call can be mistaken for one.
pub const CONSULT_SUFFIX: &str = ";consult";

/// Whom the agent consults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsultTarget {
    /// A named agent, who must be ready.
    Agent(String),
    /// Whoever of a queue's agents is free first.
    Queue(String),
}

impl std::fmt::Display for ConsultTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsultTarget::Agent(a) => write!(f, "agent:{a}"),
            ConsultTarget::Queue(q) => write!(f, "queue:{q}"),
        }
    }
}

/// Why a consultation command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsultRefusal {
    #[error("only a call connected to an agent can consult")]
    NotBridged,
    #[error("no agent on the call")]
    NoAgent,
    #[error("a consultation is already going on")]
    AlreadyRunning,
    #[error("an agent cannot consult itself")]
    ConsultsItself,
    #[error("no queue {0}")]
    NoQueue(String),
    #[error("{}", crate::call::control::consult_refusal(target, reason))]
    Refused {
        target: ConsultTarget,
        reason: RouterError,
    },
    #[error("the ACD router has stopped")]
    RouterStopped,
    #[error("no consultation is going on")]
    NotRunning,
    #[error("the consulted agent has not answered")]
    NotAnswered,
    #[error("this call was transferred {done} time(s) already; at most {max} (rulebook L6)")]
    TransferLimit { done: u32, max: u32 },
    #[error("a consultation dialled from the phone joins with the phone's own conference key")]
    DialledFromPhone,
    #[error("a supervisor is on the call; a three-way call needs the mixer")]
    SupervisorOn,
}

/// Why a REFER with Replaces is refused (its SIP status: [`Self::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplacesRefusal {
    #[error("Replaces names {0}, not this call's consultation")]
    ForeignDialog(String),
    #[error("only a call connected to an agent can be transferred")]
    NotBridged,
    #[error("{0}")]
    TransferLimit(ConsultRefusal),
    #[error("the consulted agent has not answered yet")]
    NotAnswered,
}

impl ReplacesRefusal {
    pub fn status(&self) -> u16 {
        match self {
            ReplacesRefusal::ForeignDialog(_) => 481,
            ReplacesRefusal::NotBridged | ReplacesRefusal::TransferLimit(_) => 403,
            ReplacesRefusal::NotAnswered => 491,
        }
    }
}

/// A blind transfer asked by REFER in the connected agent's dialog (RFC
/// 3515): what the actor found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindRefer {
    /// The `Refer-To` user, or why the header cannot be used.
    pub user: Result<String, String>,
    /// The user names a hotline number, a queue or an agent.
    pub known: bool,
    /// The target is the queue's post-call survey, which is no transfer.
    pub survey: bool,
}

/// Why a blind REFER is refused (its SIP status: [`Self::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlindReferRefusal {
    #[error("{0}")]
    BadReferTo(String),
    #[error("`{0}` is no hotline number, queue or agent")]
    UnknownTarget(String),
    #[error("the call is not connected to this phone yet")]
    NotConnected,
    #[error("{0}")]
    TransferLimit(ConsultRefusal),
}

impl BlindReferRefusal {
    pub fn status(&self) -> u16 {
        match self {
            BlindReferRefusal::BadReferTo(_) => 400,
            BlindReferRefusal::UnknownTarget(_) => 404,
            BlindReferRefusal::NotConnected | BlindReferRefusal::TransferLimit(_) => 403,
        }
    }
}

/// Why the router did not take the consultation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueRefusal {
    /// The queue the consultation would wait in is not configured.
    NoQueue(String),
    /// The router refused, saying why.
    Refused(RouterError),
    RouterStopped,
}

/// How a consultation ends without a transfer; the outcome of
/// `consult_ended` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsultEnd {
    Cancelled,
    NotAnswered,
    ConsultantHungUp,
    AgentHungUp,
    CallEnded,
    Failed,
}

impl ConsultEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsultEnd::Cancelled => "cancelled",
            ConsultEnd::NotAnswered => "not_answered",
            ConsultEnd::ConsultantHungUp => "consultant_hung_up",
            ConsultEnd::AgentHungUp => "agent_hung_up",
            ConsultEnd::CallEnded => "call_ended",
            ConsultEnd::Failed => "failed",
        }
    }
}

/// Who asks for the attended transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferBy {
    /// The CTI API: hotline ends the agent's dialogs at once.
    Api,
    /// The agent's phone with REFER and Replaces: its dialogs end after the
    /// REFER's final NOTIFY.
    Refer,
}

/// Where the leg that takes the caller over is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegAt {
    /// The consulted agent's leg, answered.
    Consulted,
    /// The third party's leg in the mixer of a three-way call.
    Mixer(Consultant),
}

/// What the machine must know of the call around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    /// The call is bridged to an agent.
    pub bridged: bool,
    /// The agent on the call and the queue it took the call from.
    pub agent: Option<(AgentId, String)>,
    /// Transfers the call has had.
    pub transfers: u32,
    /// A supervisor monitors the call.
    pub supervisor: bool,
    /// How long a consulted agent's phone rings (the call's queue policy).
    pub ring_limit: Duration,
}

/// A consulted agent, and the queue it was offered the consultation from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consultant {
    pub agent: AgentId,
    pub queue: String,
}

/// A consulted agent whose phones ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    pub consultant: Consultant,
    pub deadline: Instant,
}

/// What a running consultation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub target: ConsultTarget,
    /// The consulting agent.
    pub agent: AgentId,
    /// Set when the agent consults from its phone (a second dialog): that
    /// dialog's SIP Call-ID.
    pub phone: Option<String>,
    pub since: Instant,
}

/// The consulted agent of a three-way call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThirdParty {
    pub agent: AgentId,
    pub queue: String,
    pub joined_at: Instant,
}

/// The consultation's state; each carries what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Consultation {
    #[default]
    Idle,
    /// Asked of the router; its answer comes next.
    Enqueuing(Session),
    /// The router holds the consultation; `rung` are the agents ringing.
    Ringing { session: Session, rung: Vec<Rung> },
    /// The consulted agent answered; agent and consultant talk.
    Talking {
        session: Session,
        consultant: Consultant,
    },
    /// Caller, agent and the third party hear each other.
    Conference { third: ThirdParty },
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsultInput {
    /// The agent asks to consult (from the API, or its phone's dialog).
    Start {
        target: ConsultTarget,
        phone: Option<String>,
    },
    /// The router's answer to [`ConsultEffect::Enqueue`].
    Enqueued(Result<(), EnqueueRefusal>),
    /// The router offers the consultation to these agents of `queue`.
    Offer {
        agents: Vec<AgentId>,
        queue: String,
    },
    /// The router takes an offer back.
    Withdrawn(AgentId),
    /// The phones of an agent [`ConsultEffect::Ring`] named were rung, or
    /// none could be (`rung` false).
    LegReady {
        router_call: CallId,
        consultant: Consultant,
        rung: bool,
        /// When its phones were rung: the ring limit counts from there.
        offered_at: Instant,
    },
    /// Every phone of a rung agent gave up.
    LegFailed {
        agent: AgentId,
        outcome: Outcome,
    },
    /// A rung agent's phone answered with usable media.
    LegAnswered(AgentId),
    /// The router's answer to [`ConsultEffect::ConfirmAnswer`].
    AnswerConfirmed {
        agent: AgentId,
        accepted: bool,
    },
    /// The consulted agent's dialog ended (`by_bye`: it hung up).
    ConsultantLeft {
        by_bye: bool,
    },
    /// The agent's own consultation dialog ended.
    PhoneLeft,
    Transfer(TransferBy),
    /// A REFER with Replaces in the dialog `refer_dialog`, replacing the
    /// dialog `replaced` (SIP Call-IDs); `agent_dialog` is the Call-ID of
    /// the agent's call dialog.
    ReferReplaces {
        refer_dialog: String,
        replaced: String,
        agent_dialog: Option<String>,
    },
    Conference,
    /// The agent goes back to the caller.
    Cancel,
    /// The call moves on (ends, is transferred, requeued) or a step failed.
    End(ConsultEnd),
    /// The third party of a three-way call left it, or was let go.
    ThirdPartyLeft,
    /// The agent hung up on a three-way call.
    AgentLeft,
    Timer,
}

/// What the actor is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsultEffect {
    /// The answer to the command.
    Reply(Result<(), ConsultRefusal>),
    /// Ask the router to take the consultation waiting in `queue`; its answer
    /// comes back as [`ConsultInput::Enqueued`].
    Enqueue {
        queue: String,
        command: Command,
    },
    /// Tell the router.
    Router(Command),
    /// Ring the agent the router offered the consultation to; the leg comes
    /// back as [`ConsultInput::LegReady`].
    Ring {
        agent: AgentId,
        queue: String,
        router_call: CallId,
    },
    /// Keep the leg just reported ready.
    AdoptLeg,
    /// Cancel the leg just reported ready.
    DropLeg,
    /// Stop ringing the agent's phones.
    CancelRinging(AgentId),
    /// Ask the router to confirm the answer; its answer comes back as
    /// [`ConsultInput::AnswerConfirmed`].
    ConfirmAnswer {
        agent: AgentId,
        router_call: CallId,
    },
    /// The agent's leg is the consulted one: its other phones stop ringing,
    /// its audio is relayed to the consulting agent.
    TakeAnswer(AgentId),
    /// An answer that came too late: BYE to that phone.
    RejectAnswer(AgentId),
    /// BYE to the consulted agent.
    HangUpConsultant,
    /// BYE to the agent's own consultation dialog.
    HangUpPhone,
    /// The caller is held for the consultation (true) or no more (false).
    Hold(bool),
    /// The agent on the call leaves it; the leg at `leg` takes the caller.
    HandOver {
        leg: LegAt,
        router_call: CallId,
        since: Instant,
        /// BYE to the leaving agent's call dialog.
        hang_up: bool,
    },
    /// A REFER with Replaces is taken: answer 202 before the hand-over.
    AcceptRefer,
    RefuseRefer(ReplacesRefusal),
    /// The consulted leg joins caller and agent in the mixer.
    Mix(AgentId),
    Publish(Event),
}

/// The consultation of one call.
#[derive(Debug, Clone)]
pub struct ConsultMachine {
    call_id: String,
    /// `acd.max_transfers` (rulebook L6).
    max_transfers: u32,
    state: Consultation,
}

impl ConsultMachine {
    pub fn new(call_id: &str, max_transfers: u32) -> ConsultMachine {
        ConsultMachine {
            call_id: call_id.to_string(),
            max_transfers,
            state: Consultation::Idle,
        }
    }

    pub fn state(&self) -> &Consultation {
        &self.state
    }

    /// The router's id of this call's consultation.
    pub fn router_call(&self) -> CallId {
        CallId::from(format!("{}{CONSULT_SUFFIX}", self.call_id).as_str())
    }

    /// A consultation runs (asked, ringing or talking).
    pub fn running(&self) -> bool {
        self.session().is_some()
    }

    pub fn answered(&self) -> bool {
        matches!(self.state, Consultation::Talking { .. })
    }

    /// The caller is held for the consultation.
    pub fn holds_caller(&self) -> bool {
        matches!(
            self.state,
            Consultation::Ringing { .. } | Consultation::Talking { .. }
        )
    }

    pub fn third_party(&self) -> Option<&ThirdParty> {
        match &self.state {
            Consultation::Conference { third } => Some(third),
            _ => None,
        }
    }

    /// The SIP Call-ID of the agent's consultation dialog, when it consults
    /// from its phone.
    pub fn phone(&self) -> Option<&str> {
        self.session().and_then(|s| s.phone.as_deref())
    }

    fn session(&self) -> Option<&Session> {
        match &self.state {
            Consultation::Enqueuing(session)
            | Consultation::Ringing { session, .. }
            | Consultation::Talking { session, .. } => Some(session),
            Consultation::Idle | Consultation::Conference { .. } => None,
        }
    }

    /// When a consulted agent's ring limit expires.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            Consultation::Ringing { rung, .. } => rung.iter().map(|r| r.deadline).min(),
            _ => None,
        }
    }

    pub fn handle(
        &mut self,
        input: ConsultInput,
        call: &CallView,
        now: Instant,
    ) -> Vec<ConsultEffect> {
        let mut out = Vec::new();
        match input {
            ConsultInput::Start { target, phone } => self.start(target, phone, call, now, &mut out),
            ConsultInput::Enqueued(answer) => self.enqueued(answer, &mut out),
            ConsultInput::Offer { agents, queue } => {
                for agent in agents {
                    if matches!(self.state, Consultation::Ringing { .. }) {
                        out.push(ConsultEffect::Ring {
                            agent,
                            queue: queue.clone(),
                            router_call: self.router_call(),
                        });
                    } else {
                        // The consultation ended meanwhile: the router hears so.
                        out.push(ConsultEffect::Router(Command::OfferFailed(
                            self.router_call(),
                            agent,
                            Outcome::Unreachable,
                        )));
                    }
                }
            }
            ConsultInput::Withdrawn(agent) => {
                if let Consultation::Ringing { rung, .. } = &mut self.state
                    && let Some(i) = rung.iter().position(|r| r.consultant.agent == agent)
                {
                    rung.swap_remove(i);
                    out.push(ConsultEffect::CancelRinging(agent));
                }
            }
            ConsultInput::LegReady {
                router_call,
                consultant,
                rung: ready,
                offered_at,
            } => {
                let current = router_call == self.router_call();
                match &mut self.state {
                    Consultation::Ringing { rung, .. }
                        if current
                            && ready
                            && !rung.iter().any(|r| r.consultant.agent == consultant.agent) =>
                    {
                        rung.push(Rung {
                            consultant,
                            deadline: offered_at + call.ring_limit,
                        });
                        out.push(ConsultEffect::AdoptLeg);
                    }
                    _ => {
                        out.push(ConsultEffect::DropLeg);
                        out.push(ConsultEffect::Router(Command::OfferFailed(
                            router_call,
                            consultant.agent,
                            Outcome::Unreachable,
                        )));
                    }
                }
            }
            ConsultInput::LegFailed { agent, outcome } => {
                if self.unring(&agent) {
                    out.push(ConsultEffect::Router(Command::OfferFailed(
                        self.router_call(),
                        agent,
                        outcome,
                    )));
                    if self.by_name() {
                        self.end(ConsultEnd::NotAnswered, &mut out);
                    }
                }
            }
            ConsultInput::LegAnswered(agent) => {
                if self.is_rung(&agent) {
                    out.push(ConsultEffect::ConfirmAnswer {
                        agent,
                        router_call: self.router_call(),
                    });
                }
            }
            ConsultInput::AnswerConfirmed { agent, accepted } => {
                self.answer_confirmed(agent, accepted, &mut out)
            }
            ConsultInput::ConsultantLeft { by_bye } => {
                if self.answered() {
                    let end = match by_bye {
                        true => ConsultEnd::ConsultantHungUp,
                        false => ConsultEnd::Cancelled,
                    };
                    self.end(end, &mut out);
                }
            }
            ConsultInput::PhoneLeft => {
                if self.phone().is_some() {
                    self.end(ConsultEnd::AgentHungUp, &mut out);
                }
            }
            ConsultInput::Transfer(by) => {
                let result = self.transfer(by, call, &mut out);
                out.push(ConsultEffect::Reply(result));
            }
            ConsultInput::ReferReplaces {
                refer_dialog,
                replaced,
                agent_dialog,
            } => self.refer_replaces(&refer_dialog, &replaced, agent_dialog, call, &mut out),
            ConsultInput::Conference => {
                let result = self.conference(call, now, &mut out);
                out.push(ConsultEffect::Reply(result));
            }
            ConsultInput::Cancel => {
                let result = match self.running() {
                    true => {
                        self.end(ConsultEnd::Cancelled, &mut out);
                        Ok(())
                    }
                    false => Err(ConsultRefusal::NotRunning),
                };
                out.push(ConsultEffect::Reply(result));
            }
            ConsultInput::End(end) => self.end(end, &mut out),
            ConsultInput::ThirdPartyLeft => {
                if let Some(third) = self.leave_conference() {
                    out.push(ConsultEffect::Router(Command::CallEnded(
                        self.router_call(),
                        third.agent.clone(),
                    )));
                    out.push(self.conference_ended(&third, now));
                }
            }
            ConsultInput::AgentLeft => {
                if let Some(third) = self.leave_conference() {
                    out.push(self.conference_ended(&third, now));
                    // The agent's own dialog is over already: no BYE for it.
                    out.push(ConsultEffect::HandOver {
                        leg: LegAt::Mixer(Consultant {
                            agent: third.agent.clone(),
                            queue: third.queue.clone(),
                        }),
                        router_call: self.router_call(),
                        since: third.joined_at,
                        hang_up: false,
                    });
                }
            }
            ConsultInput::Timer => self.timer(now, &mut out),
        }
        out
    }

    fn start(
        &mut self,
        target: ConsultTarget,
        phone: Option<String>,
        call: &CallView,
        now: Instant,
        out: &mut Vec<ConsultEffect>,
    ) {
        let refused = |out: &mut Vec<ConsultEffect>, why| out.push(ConsultEffect::Reply(Err(why)));
        if !call.bridged {
            return refused(out, ConsultRefusal::NotBridged);
        }
        let Some((agent, agent_queue)) = call.agent.clone() else {
            return refused(out, ConsultRefusal::NoAgent);
        };
        if self.state != Consultation::Idle {
            return refused(out, ConsultRefusal::AlreadyRunning);
        }
        let queue = match &target {
            ConsultTarget::Agent(other) if *other == agent.0 => {
                return refused(out, ConsultRefusal::ConsultsItself);
            }
            ConsultTarget::Agent(_) => agent_queue,
            ConsultTarget::Queue(queue) => queue.clone(),
        };
        let caller = Caller {
            call: self.router_call(),
            queue: QueueId::from(queue.as_str()),
            // Ahead of waiting callers: a caller already waits on hold for it.
            priority: u32::MAX,
            enqueued_at: now,
            skills: Vec::new(),
        };
        let command = match &target {
            ConsultTarget::Agent(other) => {
                Command::EnqueueFor(caller, AgentId::from(other.as_str()))
            }
            ConsultTarget::Queue(_) => Command::Enqueue(caller),
        };
        self.state = Consultation::Enqueuing(Session {
            target,
            agent,
            phone,
            since: now,
        });
        out.push(ConsultEffect::Enqueue { queue, command });
    }

    fn enqueued(&mut self, answer: Result<(), EnqueueRefusal>, out: &mut Vec<ConsultEffect>) {
        if !matches!(self.state, Consultation::Enqueuing(_)) {
            return;
        }
        let Consultation::Enqueuing(session) = std::mem::take(&mut self.state) else {
            return;
        };
        let refusal = match (answer, &session.target) {
            (Ok(()), _) => None,
            (Err(EnqueueRefusal::NoQueue(queue)), _) => Some(ConsultRefusal::NoQueue(queue)),
            (Err(EnqueueRefusal::Refused(reason)), target) => Some(ConsultRefusal::Refused {
                target: target.clone(),
                reason,
            }),
            (Err(EnqueueRefusal::RouterStopped), _) => Some(ConsultRefusal::RouterStopped),
        };
        if let Some(refusal) = refusal {
            out.push(ConsultEffect::Reply(Err(refusal)));
            return;
        }
        out.push(ConsultEffect::Publish(Event::ConsultStarted {
            call_id: self.call_id.clone(),
            agent: session.agent.0.clone(),
            target: session.target.to_string(),
        }));
        out.push(ConsultEffect::Hold(true));
        out.push(ConsultEffect::Reply(Ok(())));
        self.state = Consultation::Ringing {
            session,
            rung: Vec::new(),
        };
    }

    fn answer_confirmed(&mut self, agent: AgentId, accepted: bool, out: &mut Vec<ConsultEffect>) {
        if !accepted || !self.is_rung(&agent) {
            out.push(ConsultEffect::RejectAnswer(agent));
            return;
        }
        let Consultation::Ringing { session, rung } = std::mem::take(&mut self.state) else {
            return;
        };
        out.push(ConsultEffect::TakeAnswer(agent.clone()));
        let mut consultant = None;
        for r in rung {
            match r.consultant.agent == agent {
                true => consultant = Some(r.consultant),
                false => out.push(ConsultEffect::CancelRinging(r.consultant.agent)),
            }
        }
        let Some(consultant) = consultant else {
            return;
        };
        out.push(ConsultEffect::Publish(Event::ConsultAnswered {
            call_id: self.call_id.clone(),
            consultant: agent.0.clone(),
        }));
        self.state = Consultation::Talking {
            session,
            consultant,
        };
    }

    fn transfer_limit(&self, call: &CallView) -> Option<ConsultRefusal> {
        let max = self.max_transfers;
        (call.transfers >= max).then_some(ConsultRefusal::TransferLimit {
            done: call.transfers,
            max,
        })
    }

    /// Attended transfer: the consulted agent takes the caller; the agent
    /// is released to wrap-up. Counts against `acd.max_transfers`.
    fn transfer(
        &mut self,
        by: TransferBy,
        call: &CallView,
        out: &mut Vec<ConsultEffect>,
    ) -> Result<(), ConsultRefusal> {
        if !self.answered() {
            return Err(ConsultRefusal::NotAnswered);
        }
        if let Some(refusal) = self.transfer_limit(call) {
            return Err(refusal);
        }
        let Consultation::Talking { session, .. } = std::mem::take(&mut self.state) else {
            return Err(ConsultRefusal::NotAnswered);
        };
        // The hold ends with the agent who started it.
        out.push(ConsultEffect::Hold(false));
        let hang_up = by == TransferBy::Api;
        if hang_up && session.phone.is_some() {
            out.push(ConsultEffect::HangUpPhone);
        }
        out.push(ConsultEffect::HandOver {
            leg: LegAt::Consulted,
            router_call: self.router_call(),
            since: session.since,
            hang_up,
        });
        out.push(ConsultEffect::Publish(Event::ConsultEnded {
            call_id: self.call_id.clone(),
            outcome: "transferred",
        }));
        Ok(())
    }

    /// Whether a blind REFER may hand the caller over: a usable `Refer-To`
    /// naming something hotline knows, a connected call, and the transfer
    /// limit (rulebook L6), which the survey does not count against.
    pub fn blind_refer(
        &self,
        refer: &BlindRefer,
        call: &CallView,
    ) -> Result<(), BlindReferRefusal> {
        let user = refer.user.clone().map_err(BlindReferRefusal::BadReferTo)?;
        if !refer.known {
            return Err(BlindReferRefusal::UnknownTarget(user));
        }
        if !call.bridged {
            return Err(BlindReferRefusal::NotConnected);
        }
        match self.transfer_limit(call).filter(|_| !refer.survey) {
            Some(limit) => Err(BlindReferRefusal::TransferLimit(limit)),
            None => Ok(()),
        }
    }

    /// A REFER with Replaces is an attended transfer only when it comes in
    /// one of the agent's two dialogs (call, consultation) naming the other.
    fn refer_replaces(
        &mut self,
        refer_dialog: &str,
        replaced: &str,
        agent_dialog: Option<String>,
        call: &CallView,
        out: &mut Vec<ConsultEffect>,
    ) {
        let in_call_dialog = agent_dialog.as_deref() == Some(refer_dialog);
        let names_the_other = match (in_call_dialog, self.phone(), agent_dialog.as_deref()) {
            (true, Some(consult), _) => consult == replaced,
            (false, Some(consult), Some(agent)) => agent == replaced && consult == refer_dialog,
            _ => false,
        };
        let refusal = if !names_the_other {
            Some(ReplacesRefusal::ForeignDialog(replaced.to_string()))
        } else if !call.bridged || call.agent.is_none() {
            Some(ReplacesRefusal::NotBridged)
        } else if let Some(limit) = self.transfer_limit(call) {
            Some(ReplacesRefusal::TransferLimit(limit))
        } else if !self.answered() {
            Some(ReplacesRefusal::NotAnswered)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            out.push(ConsultEffect::RefuseRefer(refusal));
            return;
        }
        out.push(ConsultEffect::AcceptRefer);
        let result = self.transfer(TransferBy::Refer, call, out);
        out.push(ConsultEffect::Reply(result));
    }

    /// Three-way: the consulted agent joins caller and agent, mixed.
    fn conference(
        &mut self,
        call: &CallView,
        now: Instant,
        out: &mut Vec<ConsultEffect>,
    ) -> Result<(), ConsultRefusal> {
        let Some(session) = self.session() else {
            return Err(ConsultRefusal::NotRunning);
        };
        if !self.answered() {
            return Err(ConsultRefusal::NotAnswered);
        }
        if session.phone.is_some() {
            return Err(ConsultRefusal::DialledFromPhone);
        }
        if call.supervisor {
            return Err(ConsultRefusal::SupervisorOn);
        }
        let Consultation::Talking { consultant, .. } = std::mem::take(&mut self.state) else {
            return Err(ConsultRefusal::NotAnswered);
        };
        out.push(ConsultEffect::Mix(consultant.agent.clone()));
        out.push(ConsultEffect::Hold(false));
        out.push(ConsultEffect::Publish(Event::ConsultEnded {
            call_id: self.call_id.clone(),
            outcome: "conference",
        }));
        out.push(ConsultEffect::Publish(Event::ConferenceStarted {
            call_id: self.call_id.clone(),
            consultant: consultant.agent.0.clone(),
        }));
        self.state = Consultation::Conference {
            third: ThirdParty {
                agent: consultant.agent,
                queue: consultant.queue,
                joined_at: now,
            },
        };
        Ok(())
    }

    /// Ends the three-way call, if one is on: its third party.
    fn leave_conference(&mut self) -> Option<ThirdParty> {
        self.third_party()?;
        match std::mem::take(&mut self.state) {
            Consultation::Conference { third } => Some(third),
            _ => None,
        }
    }

    fn conference_ended(&self, third: &ThirdParty, now: Instant) -> ConsultEffect {
        ConsultEffect::Publish(Event::ConferenceEnded {
            call_id: self.call_id.clone(),
            consultant: third.agent.0.clone(),
            talk_ms: now.saturating_duration_since(third.joined_at).as_millis() as u64,
        })
    }

    /// Ends the consultation without a transfer: the consulted agent gets
    /// BYE or CANCEL, the caller comes back to the agent.
    fn end(&mut self, end: ConsultEnd, out: &mut Vec<ConsultEffect>) {
        let session = match std::mem::take(&mut self.state) {
            Consultation::Ringing { session, rung } => {
                for r in rung {
                    out.push(ConsultEffect::CancelRinging(r.consultant.agent));
                }
                out.push(ConsultEffect::Router(Command::Dequeue(self.router_call())));
                session
            }
            Consultation::Talking {
                session,
                consultant,
            } => {
                if end != ConsultEnd::ConsultantHungUp {
                    out.push(ConsultEffect::HangUpConsultant);
                }
                out.push(ConsultEffect::Router(Command::CallEnded(
                    self.router_call(),
                    consultant.agent,
                )));
                session
            }
            other => {
                // Nothing runs (an Enqueuing consultation ends with the
                // router's answer).
                self.state = other;
                return;
            }
        };
        if session.phone.is_some() && end != ConsultEnd::AgentHungUp {
            out.push(ConsultEffect::HangUpPhone);
        }
        out.push(ConsultEffect::Publish(Event::ConsultEnded {
            call_id: self.call_id.clone(),
            outcome: end.as_str(),
        }));
        out.push(ConsultEffect::Hold(false));
    }

    /// Ring limits of consulted agents.
    fn timer(&mut self, now: Instant, out: &mut Vec<ConsultEffect>) {
        let Consultation::Ringing { rung, .. } = &mut self.state else {
            return;
        };
        let (expired, ringing): (Vec<Rung>, Vec<Rung>) = std::mem::take(rung)
            .into_iter()
            .partition(|r| r.deadline <= now);
        *rung = ringing;
        for r in expired {
            out.push(ConsultEffect::CancelRinging(r.consultant.agent.clone()));
            out.push(ConsultEffect::Router(Command::OfferFailed(
                self.router_call(),
                r.consultant.agent,
                Outcome::NoAnswer,
            )));
            if self.by_name() {
                self.end(ConsultEnd::NotAnswered, out);
                return;
            }
        }
    }

    fn by_name(&self) -> bool {
        self.session()
            .is_some_and(|s| matches!(s.target, ConsultTarget::Agent(_)))
    }

    fn is_rung(&self, agent: &AgentId) -> bool {
        matches!(&self.state, Consultation::Ringing { rung, .. } if rung.iter().any(|r| &r.consultant.agent == agent))
    }

    /// Forgets a rung agent; false when it was not rung.
    fn unring(&mut self, agent: &AgentId) -> bool {
        let Consultation::Ringing { rung, .. } = &mut self.state else {
            return false;
        };
        let Some(i) = rung.iter().position(|r| &r.consultant.agent == agent) else {
            return false;
        };
        rung.swap_remove(i);
        true
    }
}

#[cfg(test)]
mod tests;
