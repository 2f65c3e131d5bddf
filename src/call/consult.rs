//! Consultation, attended transfer and three-way calls (rulebook L6).
//!
//! The agent on a call consults a named agent or a queue (an expert, the
//! shift leader) while the caller waits on hold with music. The router knows
//! the consultation as a call of its own (the call's id with
//! [`CONSULT_SUFFIX`]), so the consulted agent is reserved like for any
//! offer and never rung twice. Once the consulted agent answers, the agent
//! can hand the caller over (attended transfer), bring everyone together
//! (three-way, mixed like a supervisor's barge) and then leave, or go back
//! to the caller. The agent consults from the CTI API over its call leg, or
//! from its phone by dialling the other agent (a second dialog); the phone
//! completes with REFER and Replaces.

use std::net::SocketAddr;

use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::StatusCode;
use rsipstack::transaction::Transaction;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::acd::{Connected, end_dialog};
use super::agent_leg::{self, AgentLeg, ForkFinal, ForkStatus};
use super::core::Input as CoreInput;
use super::media_session::MediaSession;
use super::relay::{LegFormat, relay};
use super::{Actor, CallCommand, Phase};
use crate::acd::{AgentId, CallId, Caller, Command, Outcome, QueueId};
use crate::events::Event;
use crate::media::sdp;

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

type Reply = oneshot::Sender<Result<(), String>>;

/// The agent's phone dialled another agent or a queue while on this call.
pub struct IncomingConsult {
    pub tx: Transaction,
    pub target: ConsultTarget,
}

impl std::fmt::Debug for IncomingConsult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingConsult")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What the CTI API, the SIP edge or the router asks of a consultation.
#[derive(Debug)]
pub enum ConsultCommand {
    Start {
        target: ConsultTarget,
        reply: Reply,
    },
    /// Attended transfer: the consulted agent takes the caller over.
    Transfer {
        reply: Reply,
    },
    /// Three-way: caller, agent and consulted agent hear each other.
    Conference {
        reply: Reply,
    },
    /// Back to the caller; the consulted agent is let go.
    Cancel {
        reply: Reply,
    },
    Incoming(Box<IncomingConsult>),
    /// A router decision about the consultation (offer, cancel).
    Router(Box<CallCommand>),
}

/// A consulted agent's leg, rung, on its way into the consultation.
pub struct PendingLeg(pub CallId, pub AgentLeg);

impl std::fmt::Debug for PendingLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PendingLeg")
            .field(&self.0)
            .field(&self.1.agent)
            .finish()
    }
}

/// The agent's own consultation dialog, when it consults from its phone.
pub struct PhoneSide {
    pub media: MediaSession,
    dialog: InviteDialog,
    pub sip_call_id: String,
}

pub struct Consult {
    pub target: ConsultTarget,
    router_call: CallId,
    /// The router still has the consultation waiting or offered.
    in_router: bool,
    /// Consulted agents being rung.
    legs: Vec<AgentLeg>,
    /// The consulted agent who answered.
    answered: Option<AgentLeg>,
    phone: Option<PhoneSide>,
    /// (agent side, consulted side) formats once both are known.
    formats: Option<(LegFormat, LegFormat)>,
    buf: Vec<u8>,
    started_at: Instant,
}

/// The consulted agent of a three-way call, whose leg the mixer holds.
pub struct ConferenceParty {
    pub agent: AgentId,
    pub queue: String,
    router_call: CallId,
    answered_at: Instant,
}

impl Consult {
    pub fn owns(&self, sip_call_id: &str) -> bool {
        self.legs.iter().any(|l| l.owns(sip_call_id))
            || self.answered.as_ref().is_some_and(|l| l.owns(sip_call_id))
    }

    pub fn phone_owns(&self, sip_call_id: &str) -> bool {
        self.phone
            .as_ref()
            .is_some_and(|p| p.sip_call_id == sip_call_id)
    }

    /// The SIP Call-ID of the agent's consultation dialog, for REFER/Replaces.
    pub fn phone_call_id(&self) -> Option<&str> {
        self.phone.as_ref().map(|p| p.sip_call_id.as_str())
    }

    /// The socket the consulted agent's RTP arrives on.
    pub fn consultant_rtp(&self) -> Option<std::sync::Arc<tokio::net::UdpSocket>> {
        self.answered.as_ref().map(|l| l.media.rtp.clone())
    }

    /// The socket of the agent's own consultation dialog.
    pub fn phone_rtp(&self) -> Option<std::sync::Arc<tokio::net::UdpSocket>> {
        self.phone.as_ref().map(|p| p.media.rtp.clone())
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.legs.iter().map(|l| l.ring_deadline).min()
    }

    /// Whether the agent's call leg carries its side of the consultation
    /// (consulting over the API rather than from a second dialog).
    pub fn over_call_leg(&self) -> bool {
        self.phone.is_none() && self.answered.is_some()
    }
}

impl Actor {
    pub(super) async fn on_consult_command(&mut self, command: ConsultCommand) {
        match command {
            ConsultCommand::Start { target, reply } => {
                let result = self.start_consult(target, None).await;
                let _ = reply.send(result);
            }
            ConsultCommand::Transfer { reply } => {
                let _ = reply.send(self.complete_consult());
            }
            ConsultCommand::Conference { reply } => {
                let _ = reply.send(self.start_conference());
            }
            ConsultCommand::Cancel { reply } => {
                let result = match self.consult.is_some() {
                    true => {
                        self.end_consult("cancelled");
                        Ok(())
                    }
                    false => Err("no consultation is going on".to_string()),
                };
                let _ = reply.send(result);
            }
            ConsultCommand::Incoming(incoming) => self.answer_consult_phone(*incoming).await,
            ConsultCommand::Router(command) => match *command {
                CallCommand::Offer { agents, queue } => {
                    for agent in agents {
                        self.ring_consultant(agent, &queue);
                    }
                }
                CallCommand::Cancel { agent } => {
                    if let Some(consult) = self.consult.as_mut()
                        && let Some(i) = consult.legs.iter().position(|l| l.agent == agent)
                    {
                        let mut leg = consult.legs.swap_remove(i);
                        leg.cancel_ringing(None);
                    }
                }
                _ => {}
            },
        }
    }

    /// Starts a consultation: the caller goes on hold, the router reserves
    /// the consulted agent.
    async fn start_consult(
        &mut self,
        target: ConsultTarget,
        phone: Option<PhoneSide>,
    ) -> Result<(), String> {
        if !matches!(self.phase, Phase::Bridged) {
            return Err("only a call connected to an agent can consult".into());
        }
        let Some(connected) = self.acd.connected.as_ref() else {
            return Err("no agent on the call".into());
        };
        if self.consult.is_some() || self.conference.is_some() {
            return Err("a consultation is already going on".into());
        }
        let agent = connected.leg.agent.clone();
        let queue = match &target {
            ConsultTarget::Agent(other) if *other == agent.0 => {
                return Err("an agent cannot consult itself".into());
            }
            ConsultTarget::Agent(_) => connected.leg.queue.clone(),
            ConsultTarget::Queue(queue) => queue.clone(),
        };
        if !self.ctx.settings.queues.contains_key(&queue) {
            return Err(format!("no queue {queue}"));
        }
        let router_call = CallId::from(format!("{}{CONSULT_SUFFIX}", self.call_id).as_str());
        let caller = Caller {
            call: router_call.clone(),
            queue: QueueId::from(queue.as_str()),
            // Ahead of waiting callers: a caller already waits on hold for it.
            priority: u32::MAX,
            enqueued_at: Instant::now().into_std(),
            skills: Vec::new(),
        };
        let command = match &target {
            ConsultTarget::Agent(other) => {
                Command::EnqueueFor(caller, AgentId::from(other.as_str()))
            }
            ConsultTarget::Queue(_) => Command::Enqueue(caller),
        };
        // The consultation exists before the router answers: its offer may
        // come right behind the answer.
        self.consult = Some(Consult {
            target: target.clone(),
            router_call,
            in_router: true,
            legs: Vec::new(),
            answered: None,
            phone,
            formats: None,
            buf: vec![0; 2048],
            started_at: Instant::now(),
        });
        match self.ctx.router.request(command).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                self.consult = None;
                return Err(match &target {
                    ConsultTarget::Agent(other) => {
                        format!("agent {other} cannot be consulted now: {refused}")
                    }
                    ConsultTarget::Queue(q) => {
                        format!("queue {q} refused the consultation: {refused}")
                    }
                });
            }
            Err(_) => {
                self.consult = None;
                return Err("the ACD router has stopped".into());
            }
        }
        info!(%target, "consultation started; the caller waits on hold");
        self.ctx.bus.publish(Event::ConsultStarted {
            call_id: self.call_id.clone(),
            agent: agent.0.clone(),
            target: target.to_string(),
        });
        self.consult_hold(true);
        Ok(())
    }

    /// Rings every phone of the agent the router offers the consultation to.
    fn ring_consultant(&mut self, agent: AgentId, queue: &QueueId) {
        let now = Instant::now();
        let Some(consult) = self.consult.as_ref() else {
            // The consultation ended meanwhile: the router hears so.
            self.tell_router(Command::OfferFailed(
                CallId::from(format!("{}{CONSULT_SUFFIX}", self.call_id).as_str()),
                agent,
                Outcome::Unreachable,
            ));
            return;
        };
        let router_call = consult.router_call.clone();
        let consulting = self
            .acd
            .connected
            .as_ref()
            .map(|c| c.leg.agent.0.clone())
            .unwrap_or_default();
        let bindings = self.ctx.registrar.contacts(&agent.0);
        let ip = self
            .media
            .rtp
            .local_addr()
            .map_or(self.media.advertised.ip(), |a| a.ip());
        let room = self.ctx.media.clone();
        let advertise = self.ctx.settings.sip.external.map(|a| a.ip());
        let mailbox = self.acd.mailbox.clone();
        let states = self.acd.states.clone();
        let finals = self.acd.finals.0.clone();
        let ring_limit = self.acd.policy.ring_limit;
        let ctx = self.ctx.clone();
        let queue = queue.0.clone();
        // Opening media is async; the leg joins the consultation through the
        // actor's own mailbox so the loop never waits here.
        tokio::spawn(async move {
            let mut media = match MediaSession::open(&room, ip, advertise).await {
                Ok(media) => media,
                Err(e) => {
                    warn!(error = %e, "no RTP ports for the consulted agent");
                    let _ = ctx.router.send(Command::OfferFailed(
                        router_call,
                        agent,
                        Outcome::Unreachable,
                    ));
                    return;
                }
            };
            let offer = media.offer();
            let mut forks = Vec::new();
            for binding in &bindings {
                let dial = agent_leg::Dial {
                    from_user: &consulting,
                    display: Some("consult"),
                    header: Some(("X-Hotline-Consult", &queue)),
                    session_timer: Vec::new(),
                };
                match agent_leg::ring(
                    &ctx,
                    binding.into(),
                    &dial,
                    offer.clone(),
                    states.clone(),
                    finals.clone(),
                ) {
                    Ok(fork) => forks.push(fork),
                    Err(e) => warn!(error = %e, "cannot ring the consulted agent's phone"),
                }
            }
            let leg = AgentLeg {
                agent,
                queue,
                media,
                forks,
                offered_at: now,
                ring_deadline: now + ring_limit,
            };
            let _ = mailbox.send(CallCommand::ConsultLeg(Box::new(PendingLeg(
                router_call,
                leg,
            ))));
        });
    }

    /// A consulted agent's phones are ringing (or could not be rung).
    pub(super) fn consult_leg_ready(&mut self, pending: PendingLeg) {
        let PendingLeg(router_call, leg) = pending;
        let current = self
            .consult
            .as_ref()
            .is_some_and(|c| c.router_call == router_call && c.answered.is_none());
        if !current || leg.forks.is_empty() {
            let mut leg = leg;
            leg.cancel_ringing(None);
            let outcome = Outcome::Unreachable;
            self.tell_router(Command::OfferFailed(
                router_call,
                leg.agent.clone(),
                outcome,
            ));
            return;
        }
        if let Some(consult) = self.consult.as_mut() {
            info!(agent = %leg.agent, "ringing the consulted agent");
            consult.legs.push(leg);
        }
    }

    pub(super) fn is_consult_fork(&self, fork: &str) -> bool {
        self.consult.as_ref().is_some_and(|c| c.owns(fork))
    }

    /// A consulted agent's phone answered, or gave up.
    pub(super) async fn on_consult_final(&mut self, fin: ForkFinal) {
        let Some(consult) = self.consult.as_mut() else {
            return;
        };
        let Some(i) = consult.legs.iter().position(|l| l.owns(&fin.fork)) else {
            return;
        };
        let leg = &mut consult.legs[i];
        let Some(fork) = leg.fork_mut(&fin.fork) else {
            return;
        };
        let dialog = fork.dialog.clone();
        let answered = fin.response.filter(agent_leg::is_success);
        let Some(response) = answered.filter(|_| fork.status == ForkStatus::Ringing) else {
            if fork.status == ForkStatus::Ringing {
                fork.status = ForkStatus::Failed(None);
            }
            if !leg.ringing() {
                let leg = consult.legs.swap_remove(i);
                let router_call = consult.router_call.clone();
                let by_name = matches!(consult.target, ConsultTarget::Agent(_));
                info!(agent = %leg.agent, "the consulted agent did not answer");
                self.tell_router(Command::OfferFailed(
                    router_call,
                    leg.agent.clone(),
                    leg.failure(),
                ));
                if by_name {
                    self.end_consult("not_answered");
                }
            }
            return;
        };
        if let Err(e) = sdp::parse(&response.body).and_then(|a| leg.media.accept_answer(&a)) {
            warn!(error = %e, "the consulted agent's phone answered with unusable SDP");
            end_dialog(&self.ctx, dialog);
            return;
        }
        let agent = leg.agent.clone();
        let router_call = consult.router_call.clone();
        let accepted = matches!(
            self.ctx
                .router
                .request(Command::OfferAnswered(router_call, agent.clone()))
                .await,
            Ok(Ok(()))
        );
        let Some(consult) = self.consult.as_mut() else {
            end_dialog(&self.ctx, dialog);
            return;
        };
        if !accepted || consult.answered.is_some() {
            end_dialog(&self.ctx, dialog);
            return;
        }
        let Some(i) = consult.legs.iter().position(|l| l.owns(&fin.fork)) else {
            end_dialog(&self.ctx, dialog);
            return;
        };
        let mut leg = consult.legs.swap_remove(i);
        if let Some(fork) = leg.fork_mut(&fin.fork) {
            fork.status = ForkStatus::Answered;
        }
        leg.cancel_ringing(Some(&fin.fork));
        for mut other in std::mem::take(&mut consult.legs) {
            other.cancel_ringing(None);
        }
        consult.in_router = false;
        let consultant = leg.media.negotiated().map(LegFormat::from);
        let own = match &consult.phone {
            Some(phone) => phone.media.negotiated().map(LegFormat::from),
            None => self
                .acd
                .connected
                .as_ref()
                .and_then(|c| c.leg.media.negotiated())
                .map(LegFormat::from),
        };
        consult.formats = own.zip(consultant);
        consult.answered = Some(leg);
        info!(consultant = %agent, "the consulted agent answered");
        self.ctx.bus.publish(Event::ConsultAnswered {
            call_id: self.call_id.clone(),
            consultant: agent.0,
        });
    }

    /// The consulted agent's audio goes to the agent.
    pub(super) fn relay_from_consultant(&mut self, source: SocketAddr, packet: &[u8]) {
        let Some(consult) = self.consult.as_mut() else {
            return;
        };
        let Some(leg) = consult.answered.as_mut() else {
            return;
        };
        if !leg.media.accept(source, packet) {
            return;
        }
        let Some((own, consultant)) = consult.formats else {
            return;
        };
        let media = match consult.phone.as_ref() {
            Some(phone) => &phone.media,
            None => match self.acd.connected.as_ref() {
                Some(c) => &c.leg.media,
                None => return,
            },
        };
        let Some(dst) = media.remote() else {
            return;
        };
        if let Some(out) = relay(packet, &consultant, &own, &mut consult.buf)
            && let Ok(sent) = media.rtp.try_send_to(&consult.buf[..out.len()], dst)
        {
            media.relayed(sent);
        }
    }

    /// The agent's audio (from its call leg, or its consultation dialog)
    /// goes to the consulted agent.
    pub(super) fn relay_to_consultant(&mut self, packet: &[u8]) {
        let Some(consult) = self.consult.as_mut() else {
            return;
        };
        let (Some(leg), Some((own, consultant))) = (consult.answered.as_ref(), consult.formats)
        else {
            return;
        };
        let Some(dst) = leg.media.remote() else {
            return;
        };
        if let Some(out) = relay(packet, &own, &consultant, &mut consult.buf)
            && let Ok(sent) = leg.media.rtp.try_send_to(&consult.buf[..out.len()], dst)
        {
            leg.media.relayed(sent);
        }
    }

    /// RTP of the agent's own consultation dialog.
    pub(super) fn on_consult_phone_rtp(&mut self, source: SocketAddr, packet: &[u8]) {
        let accepted = self
            .consult
            .as_mut()
            .and_then(|c| c.phone.as_mut())
            .is_some_and(|p| p.media.accept(source, packet));
        if accepted {
            self.relay_to_consultant(packet);
        }
    }

    /// Attended transfer: the consulted agent takes the caller; the agent
    /// is released to wrap-up. Counts against `acd.max_transfers`.
    pub(super) fn complete_consult(&mut self) -> Result<(), String> {
        self.finish_consult(true).map(|_| ())
    }

    pub(super) fn consult_answered(&self) -> bool {
        self.consult.as_ref().is_some_and(|c| c.answered.is_some())
    }

    /// Attended transfer asked by the agent's phone with REFER and Replaces
    /// in `refer_dialog` (its call dialog or its consultation dialog): the
    /// other of the two, the replaced one, is returned to be ended after the
    /// final NOTIFY; the REFER's own dialog is left to the phone.
    pub(super) fn complete_consult_by_refer(
        &mut self,
        refer_dialog: &InviteDialog,
    ) -> Result<Option<InviteDialog>, String> {
        let (phone, previous) = self.finish_consult(false)?;
        let replaced = [phone, previous]
            .into_iter()
            .flatten()
            .find(|d| d.id() != refer_dialog.id());
        Ok(replaced)
    }

    /// Hands the caller to the consulted agent; `hang_up` ends the agent's
    /// dialogs (call and consultation) at once, else they are returned.
    fn finish_consult(
        &mut self,
        hang_up: bool,
    ) -> Result<(Option<InviteDialog>, Option<InviteDialog>), String> {
        if !self.consult_answered() {
            return Err("the consulted agent has not answered".into());
        }
        let max = self.ctx.settings.acd.max_transfers;
        if self.acd.transfers >= max {
            return Err(format!(
                "this call was transferred {} time(s) already; at most {max} (rulebook L6)",
                self.acd.transfers
            ));
        }
        let Some(mut consult) = self.consult.take() else {
            return Err("no consultation is going on".into());
        };
        let Some(leg) = consult.answered.take() else {
            return Err("the consulted agent has not answered".into());
        };
        // The hold ends with the agent who started it.
        self.consult_hold(false);
        let phone = consult.phone.take().map(|p| p.dialog);
        let previous = self
            .acd
            .connected
            .as_ref()
            .and_then(|c| c.leg.answered())
            .cloned();
        if hang_up && let Some(phone) = &phone {
            end_dialog(&self.ctx, phone.clone());
        }
        self.hand_over(leg, consult.router_call, consult.started_at, hang_up);
        info!("attended transfer completed");
        self.ctx.bus.publish(Event::ConsultEnded {
            call_id: self.call_id.clone(),
            outcome: "transferred",
        });
        Ok((phone, previous))
    }

    /// The agent on the call leaves; `leg` (a consulted agent) takes over.
    fn hand_over(&mut self, leg: AgentLeg, router_call: CallId, since: Instant, hang_up: bool) {
        self.end_monitor("transferred", true);
        if let Some(previous) = self.acd.connected.take() {
            // The consulted agent's dialog runs no session timer of hotline's.
            self.lifetime.disconnected();
            if hang_up && let Some(dialog) = previous.leg.answered().cloned() {
                end_dialog(&self.ctx, dialog);
            }
            self.forget_leg(&previous.leg);
        }
        let agent = leg.agent.clone();
        let queue = leg.queue.clone();
        self.acd.connected = Some(Connected::new(leg));
        self.core_do(CoreInput::TakenOver {
            agent,
            queue,
            router_call,
            rang_since: since.into_std(),
        });
        self.phase = Phase::Bridged;
        self.bridge();
    }

    /// Three-way: the consulted agent joins caller and agent, mixed.
    pub(super) fn start_conference(&mut self) -> Result<(), String> {
        let Some(consult) = self.consult.as_ref() else {
            return Err("no consultation is going on".into());
        };
        if consult.answered.is_none() {
            return Err("the consulted agent has not answered".into());
        }
        if consult.phone.is_some() {
            return Err(
                "a consultation dialled from the phone joins with the phone's own conference key"
                    .into(),
            );
        }
        if self.monitor.is_some() {
            return Err("a supervisor is on the call; a three-way call needs the mixer".into());
        }
        let Some(mut consult) = self.consult.take() else {
            return Err("no consultation is going on".into());
        };
        let Some(leg) = consult.answered.take() else {
            return Err("the consulted agent has not answered".into());
        };
        let Some(dialog) = leg.answered().cloned() else {
            return Err("the consulted agent has not answered".into());
        };
        let sip_call_id = dialog.id().call_id.clone();
        self.conference = Some(ConferenceParty {
            agent: leg.agent.clone(),
            queue: leg.queue.clone(),
            router_call: consult.router_call,
            answered_at: Instant::now(),
        });
        self.monitor = Some(super::monitor::Monitor::conference(
            leg.agent.0.clone(),
            leg.media,
            dialog,
            sip_call_id,
        ));
        self.consult_hold(false);
        info!(consultant = %leg.agent, "three-way call");
        self.ctx.bus.publish(Event::ConsultEnded {
            call_id: self.call_id.clone(),
            outcome: "conference",
        });
        self.ctx.bus.publish(Event::ConferenceStarted {
            call_id: self.call_id.clone(),
            consultant: leg.agent.0,
        });
        Ok(())
    }

    /// The consulted agent of a three-way call left it: the router frees it.
    pub(super) fn conference_party_left(&mut self) {
        let Some(party) = self.conference.take() else {
            return;
        };
        let talk_ms = party.answered_at.elapsed().as_millis() as u64;
        self.tell_router(Command::CallEnded(party.router_call, party.agent.clone()));
        self.ctx.bus.publish(Event::ConferenceEnded {
            call_id: self.call_id.clone(),
            consultant: party.agent.0,
            talk_ms,
        });
    }

    /// The agent hung up on a three-way call: the consulted agent stays with
    /// the caller. False when there is no three-way call.
    pub(super) fn agent_left_conference(&mut self) -> bool {
        let Some(party) = self.conference.take() else {
            return false;
        };
        let Some((media, dialog, sip_call_id)) = self.monitor.take().map(|m| m.into_leg()) else {
            return false;
        };
        info!(consultant = %party.agent, "the agent left the three-way call");
        self.ctx.bus.publish(Event::ConferenceEnded {
            call_id: self.call_id.clone(),
            consultant: party.agent.0.clone(),
            talk_ms: party.answered_at.elapsed().as_millis() as u64,
        });
        let now = Instant::now();
        let leg = AgentLeg {
            agent: party.agent,
            queue: party.queue,
            media,
            forks: vec![agent_leg::Fork {
                call_id: sip_call_id,
                dialog,
                status: ForkStatus::Answered,
                peer: None,
                again: None,
            }],
            offered_at: now,
            ring_deadline: now,
        };
        // The agent's own dialog is over already: no BYE for it.
        self.hand_over(leg, party.router_call, party.answered_at, false);
        true
    }

    /// Ends the consultation without a transfer: the consulted agent gets
    /// BYE or CANCEL, the caller comes back to the agent.
    pub(super) fn end_consult(&mut self, outcome: &'static str) {
        let Some(mut consult) = self.consult.take() else {
            return;
        };
        for mut leg in std::mem::take(&mut consult.legs) {
            leg.cancel_ringing(None);
        }
        if let Some(leg) = consult.answered.take() {
            if let Some(dialog) = leg.answered().cloned()
                && outcome != "consultant_hung_up"
            {
                end_dialog(&self.ctx, dialog);
            }
            self.tell_router(Command::CallEnded(
                consult.router_call.clone(),
                leg.agent.clone(),
            ));
        } else if consult.in_router {
            self.tell_router(Command::Dequeue(consult.router_call.clone()));
        }
        if let Some(phone) = consult.phone.take()
            && outcome != "agent_hung_up"
        {
            end_dialog(&self.ctx, phone.dialog);
        }
        info!(outcome, "consultation ended");
        self.ctx.bus.publish(Event::ConsultEnded {
            call_id: self.call_id.clone(),
            outcome,
        });
        self.consult_hold(false);
    }

    /// Ring limits of consulted agents.
    pub(super) fn on_consult_timer(&mut self, now: Instant) {
        let Some(consult) = self.consult.as_mut() else {
            return;
        };
        let mut expired = Vec::new();
        let mut i = 0;
        while i < consult.legs.len() {
            if consult.legs[i].ring_deadline <= now {
                expired.push(consult.legs.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let router_call = consult.router_call.clone();
        let by_name = matches!(consult.target, ConsultTarget::Agent(_));
        for mut leg in expired {
            leg.cancel_ringing(None);
            self.tell_router(Command::OfferFailed(
                router_call.clone(),
                leg.agent.clone(),
                Outcome::NoAnswer,
            ));
            if by_name {
                self.end_consult("not_answered");
                return;
            }
        }
    }

    /// A request or state change in a consulted agent's dialog, or in the
    /// agent's own consultation dialog.
    pub(super) async fn on_consult_dialog(&mut self, state: DialogState) {
        let call_id = super::dialog_of(&state).call_id.clone();
        let phone = self
            .consult
            .as_ref()
            .is_some_and(|c| c.phone_owns(&call_id));
        match state {
            DialogState::Terminated(id, reason) => {
                let answered = self
                    .consult
                    .as_ref()
                    .and_then(|c| c.answered.as_ref())
                    .and_then(|l| l.answered())
                    .is_some_and(|d| d.id().call_id == call_id);
                if phone {
                    self.ctx.dialogs.remove_dialog(&id);
                    self.end_consult("agent_hung_up");
                } else if answered {
                    debug!(?reason, "the consulted agent hung up");
                    self.ctx.dialogs.remove_dialog(&id);
                    let by_bye = matches!(reason, TerminatedReason::UasBye);
                    self.end_consult(if by_bye {
                        "consultant_hung_up"
                    } else {
                        "cancelled"
                    });
                }
            }
            DialogState::Updated(_, req, handle) => {
                let Some(consult) = self.consult.as_mut() else {
                    return;
                };
                let media = if phone {
                    consult.phone.as_mut().map(|p| &mut p.media)
                } else {
                    consult.answered.as_mut().map(|l| &mut l.media)
                };
                match media {
                    Some(media) => {
                        super::answer_update(media, &req, &handle).await;
                    }
                    None => {
                        let _ = handle.reply(StatusCode::CallTransactionDoesNotExist).await;
                    }
                }
            }
            DialogState::Info(_, _, handle) | DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            DialogState::Refer(id, req, handle) if phone => {
                let dialog = self
                    .consult
                    .as_ref()
                    .and_then(|c| c.phone.as_ref())
                    .map(|p| p.dialog.clone());
                let values = crate::sip::header_values(&req.headers, "Refer-To");
                let compact = crate::sip::header_values(&req.headers, "r");
                let value = values
                    .first()
                    .or(compact.first())
                    .copied()
                    .unwrap_or_default();
                match (dialog, super::refer::refer_to_user(value)) {
                    (Some(dialog), Err(super::refer::ReferToError::Replaces(replaced))) => {
                        self.attended_refer(dialog, id, &replaced, handle).await;
                    }
                    _ => {
                        // A blind transfer is asked in the call's own dialog.
                        let warning = rsipstack::sip::Header::Other(
                            "Warning".into(),
                            "399 hotline \"a consultation dialog only completes an attended transfer (Refer-To with Replaces)\"".into(),
                        );
                        let _ = handle
                            .respond(StatusCode::Forbidden, Some(vec![warning]), None)
                            .await;
                    }
                }
            }
            DialogState::Message(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Refer(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::MethodNotAllowed).await;
            }
            _ => {}
        }
    }

    /// The agent's phone dialled another agent or a queue while on this
    /// call: its INVITE is answered here and the consultation starts.
    async fn answer_consult_phone(&mut self, incoming: IncomingConsult) {
        let IncomingConsult { mut tx, target } = incoming;
        let Some(phone) = self.take_phone_invite(&mut tx).await else {
            return;
        };
        let dialog = phone.dialog.clone();
        let answer = phone.answer.clone();
        let side = PhoneSide {
            media: phone.media,
            dialog: phone.dialog,
            sip_call_id: phone.sip_call_id,
        };
        if let Err(why) = self.start_consult(target, Some(side)).await {
            info!(%why, "consultation refused");
            let reason = format!("SIP;cause=480;text=\"{}\"", why.replace('"', "'"));
            let headers = vec![rsipstack::sip::Header::Other("Reason".into(), reason)];
            let _ = tx
                .reply_with(StatusCode::TemporarilyUnavailable, headers, None)
                .await;
            self.ctx.dialogs.remove_dialog(&dialog.id());
            return;
        }
        // Answered at once: the agent hears the consulted agent as soon as it
        // answers, and its phone may REFER.
        if !super::accept_phone(&dialog, &answer, tx) {
            self.end_consult("failed");
        }
    }
}
