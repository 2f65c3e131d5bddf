//! Consultation, attended transfer and three-way calls (rulebook L6): the
//! actor's side. The decisions are the pure [`ConsultMachine`]'s; this file
//! owns the legs it names (the consulted agents' phones, the agent's own
//! consultation dialog), turns what happens to them into inputs and carries
//! the machine's effects out.
//!
//! The agent consults from the CTI API over its call leg, or from its phone
//! by dialling the other agent (a second dialog); the phone completes with
//! REFER and Replaces.

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
use super::control::ControlError;
use super::core::Input as CoreInput;
use super::core::consult::{
    BlindRefer, BlindReferRefusal, CallView, ConsultEffect, ConsultEnd, ConsultInput,
    ConsultMachine, Consultant, EnqueueRefusal, LegAt, TransferBy,
};
pub use super::core::consult::{CONSULT_SUFFIX, ConsultTarget};
use super::media_session::MediaSession;
use super::monitor::MixedLeg;
use super::relay::{LegFormat, RELAY_BUF_LEN, relay};
use super::{Actor, CallCommand};
use crate::acd::{AgentId, CallId, Command, RouterError};
use crate::events::Event;
use crate::media::sdp;

type Reply = oneshot::Sender<Result<(), ControlError>>;

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

/// A call's consultation: the machine and the legs it names.
pub struct Consult {
    machine: ConsultMachine,
    /// Consulted agents being rung.
    legs: Vec<AgentLeg>,
    /// A leg just rung, until the machine adopts or drops it. The legs
    /// here are boxed: every call has room for them, few consult.
    arriving: Option<Box<AgentLeg>>,
    /// The fork whose answer waits for the router's confirmation.
    answering: Option<(String, InviteDialog)>,
    /// The consulted agent who answered.
    answered: Option<Box<AgentLeg>>,
    phone: Option<Box<PhoneSide>>,
    /// (agent side, consulted side) formats once both are known.
    formats: Option<(LegFormat, LegFormat)>,
    /// The relay's output: room only while both sides' formats are known.
    buf: Vec<u8>,
}

/// What carrying effects out left to wait for.
enum Ask {
    Enqueue { queue: String, command: Command },
    Confirm { agent: AgentId, router_call: CallId },
}

impl Consult {
    pub fn new(call_id: &str, max_transfers: u32) -> Consult {
        Consult {
            machine: ConsultMachine::new(call_id, max_transfers),
            legs: Vec::new(),
            arriving: None,
            answering: None,
            answered: None,
            phone: None,
            formats: None,
            buf: Vec::new(),
        }
    }

    /// A consultation runs (not counting a three-way call it became).
    pub fn running(&self) -> bool {
        self.machine.running()
    }

    /// A three-way call is on; its third party's leg is in the mixer.
    pub fn in_conference(&self) -> bool {
        self.machine.third_party().is_some()
    }

    pub fn owns(&self, sip_call_id: &str) -> bool {
        self.legs.iter().any(|l| l.owns(sip_call_id))
            || self.answered.as_ref().is_some_and(|l| l.owns(sip_call_id))
    }

    pub fn phone_owns(&self, sip_call_id: &str) -> bool {
        self.phone
            .as_ref()
            .is_some_and(|p| p.sip_call_id == sip_call_id)
    }

    /// The socket the consulted agent's RTP arrives on.
    pub fn consultant_rtp(&self) -> Option<std::sync::Arc<tokio::net::UdpSocket>> {
        self.answered.as_ref().and_then(|l| l.media.rtp.watched())
    }

    /// The socket of the agent's own consultation dialog.
    pub fn phone_rtp(&self) -> Option<std::sync::Arc<tokio::net::UdpSocket>> {
        self.phone.as_ref().and_then(|p| p.media.rtp.watched())
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.machine.deadline().map(Instant::from_std)
    }

    /// Whether the agent's call leg carries its side of the consultation
    /// (consulting over the API rather than from a second dialog).
    pub fn over_call_leg(&self) -> bool {
        self.phone.is_none() && self.answered.is_some()
    }

    fn take_leg(&mut self, agent: &AgentId) -> Option<AgentLeg> {
        let i = self.legs.iter().position(|l| &l.agent == agent)?;
        Some(self.legs.swap_remove(i))
    }
}

fn end_of(outcome: &str) -> ConsultEnd {
    match outcome {
        "not_answered" => ConsultEnd::NotAnswered,
        "consultant_hung_up" => ConsultEnd::ConsultantHungUp,
        "agent_hung_up" => ConsultEnd::AgentHungUp,
        "call_ended" => ConsultEnd::CallEnded,
        "failed" => ConsultEnd::Failed,
        _ => ConsultEnd::Cancelled,
    }
}

impl Actor {
    /// What the consultation machine needs to know of the call.
    fn consult_view(&self) -> CallView {
        CallView {
            bridged: self.core.bridged(),
            agent: self
                .acd
                .connected
                .as_ref()
                .map(|c| (c.leg.agent.clone(), c.leg.queue.clone())),
            transfers: self.core.transfers(),
            supervisor: self.supervisor.supervisor().is_some(),
            ring_limit: self.acd.policy.ring_limit,
        }
    }

    fn consult_handle(&mut self, input: ConsultInput) -> Vec<ConsultEffect> {
        let view = self.consult_view();
        let now = Instant::now().into_std();
        self.consult.machine.handle(input, &view, now)
    }

    /// Feeds the machine `input`, carries its effects out and answers the
    /// router's questions they ask; the command's answer, if it has one.
    async fn consult_run(&mut self, input: ConsultInput) -> Option<Result<(), ControlError>> {
        let mut effects = self.consult_handle(input);
        let mut reply = None;
        loop {
            let (answer, ask) = self.consult_effects(effects);
            reply = reply.or(answer);
            let next = match ask {
                None => return reply,
                Some(Ask::Enqueue { queue, command }) => {
                    let answer = match self.ctx.settings.queues.contains_key(&queue) {
                        false => Err(EnqueueRefusal::NoQueue(queue)),
                        true => match self.ctx.router.request(command).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(refused)) => Err(EnqueueRefusal::Refused(refused)),
                            Err(_) => Err(EnqueueRefusal::RouterStopped),
                        },
                    };
                    ConsultInput::Enqueued(answer)
                }
                Some(Ask::Confirm { agent, router_call }) => {
                    let answer: Result<Result<(), RouterError>, _> = self
                        .ctx
                        .router
                        .request(Command::OfferAnswered(router_call, agent.clone()))
                        .await;
                    ConsultInput::AnswerConfirmed {
                        agent,
                        accepted: matches!(answer, Ok(Ok(()))),
                    }
                }
            };
            effects = self.consult_handle(next);
        }
    }

    /// Feeds the machine an input whose effects never wait for the router.
    fn consult_now(&mut self, input: ConsultInput) {
        let effects = self.consult_handle(input);
        let (_, ask) = self.consult_effects(effects);
        debug_assert!(ask.is_none(), "only start and answer ask the router");
    }

    /// Carries the machine's effects out, in order, up to the first that
    /// waits for the router.
    fn consult_effects(
        &mut self,
        effects: Vec<ConsultEffect>,
    ) -> (Option<Result<(), ControlError>>, Option<Ask>) {
        let mut reply = None;
        let mut ask = None;
        for effect in effects {
            match effect {
                ConsultEffect::Reply(result) => reply = Some(result.map_err(ControlError::from)),
                ConsultEffect::Enqueue { queue, command } => {
                    ask = Some(Ask::Enqueue { queue, command })
                }
                ConsultEffect::ConfirmAnswer { agent, router_call } => {
                    ask = Some(Ask::Confirm { agent, router_call })
                }
                ConsultEffect::Router(command) => self.tell_router(command),
                ConsultEffect::Ring {
                    agent,
                    queue,
                    router_call,
                } => self.ring_consultant(agent, queue, router_call),
                ConsultEffect::AdoptLeg => {
                    if let Some(leg) = self.consult.arriving.take() {
                        info!(agent = %leg.agent, "ringing the consulted agent");
                        self.consult.legs.push(*leg);
                    }
                }
                ConsultEffect::DropLeg => {
                    if let Some(mut leg) = self.consult.arriving.take() {
                        leg.cancel_ringing(None);
                    }
                }
                ConsultEffect::CancelRinging(agent) => {
                    if let Some(mut leg) = self.consult.take_leg(&agent) {
                        leg.cancel_ringing(None);
                    }
                }
                ConsultEffect::TakeAnswer(agent) => self.take_consult_answer(&agent),
                ConsultEffect::RejectAnswer(_) => {
                    if let Some((_, dialog)) = self.consult.answering.take() {
                        end_dialog(&self.ctx, dialog);
                    }
                }
                ConsultEffect::HangUpConsultant => {
                    if let Some(dialog) = self.consult.answered.as_ref().and_then(|l| l.answered())
                    {
                        end_dialog(&self.ctx, dialog.clone());
                    }
                }
                ConsultEffect::HangUpPhone => {
                    if let Some(phone) = self.consult.phone.as_ref() {
                        end_dialog(&self.ctx, phone.dialog.clone());
                    }
                }
                ConsultEffect::Hold(on) => self.consult_hold(on),
                ConsultEffect::HandOver {
                    leg,
                    router_call,
                    since,
                    hang_up,
                } => {
                    let leg = match leg {
                        LegAt::Consulted => self.consult.answered.take().map(|leg| *leg),
                        LegAt::Mixer(third) => self.third_party_leg(third),
                    };
                    if let Some(leg) = leg {
                        self.hand_over(leg, router_call, Instant::from_std(since), hang_up);
                    }
                }
                ConsultEffect::Mix(_) => self.mix_consultant(),
                ConsultEffect::Publish(event) => {
                    if let Event::ConsultEnded { outcome, .. } = &event {
                        info!(outcome, "consultation ended");
                    }
                    self.ctx.bus.publish(event);
                }
                // A REFER's answer goes out where the REFER is handled.
                ConsultEffect::AcceptRefer | ConsultEffect::RefuseRefer(_) => {}
            }
        }
        if !self.consult.machine.running() {
            // What the machine let go of goes with it.
            self.consult.answered = None;
            self.consult.phone = None;
            self.consult.formats = None;
            self.consult.buf = Vec::new();
            self.consult.answering = None;
            for mut leg in std::mem::take(&mut self.consult.legs) {
                leg.cancel_ringing(None);
            }
        }
        (reply, ask)
    }

    pub(super) async fn on_consult_command(&mut self, command: ConsultCommand) {
        let (input, reply) = match command {
            ConsultCommand::Start { target, reply } => (
                ConsultInput::Start {
                    target,
                    phone: None,
                },
                reply,
            ),
            ConsultCommand::Transfer { reply } => (ConsultInput::Transfer(TransferBy::Api), reply),
            ConsultCommand::Conference { reply } => (ConsultInput::Conference, reply),
            ConsultCommand::Cancel { reply } => (ConsultInput::Cancel, reply),
            ConsultCommand::Incoming(incoming) => {
                return self.answer_consult_phone(*incoming).await;
            }
            ConsultCommand::Router(command) => {
                match *command {
                    CallCommand::Offer { agents, queue } => {
                        let queue = queue.0;
                        self.consult_now(ConsultInput::Offer { agents, queue });
                    }
                    CallCommand::Cancel { agent } => {
                        self.consult_now(ConsultInput::Withdrawn(agent));
                    }
                    _ => {}
                }
                return;
            }
        };
        let result = self.consult_run(input).await;
        if let Some(result) = result {
            let _ = reply.send(result);
        }
    }

    /// Rings every phone of the agent the router offers the consultation to.
    fn ring_consultant(&mut self, agent: AgentId, queue: String, router_call: CallId) {
        let now = Instant::now();
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
                        crate::acd::Outcome::Unreachable,
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
            let _ = mailbox.send(Box::new(CallCommand::ConsultLeg(Box::new(PendingLeg(
                router_call,
                leg,
            )))));
        });
    }

    /// A consulted agent's phones are ringing (or could not be rung).
    pub(super) fn consult_leg_ready(&mut self, pending: PendingLeg) {
        let PendingLeg(router_call, leg) = pending;
        let input = ConsultInput::LegReady {
            router_call,
            consultant: Consultant {
                agent: leg.agent.clone(),
                queue: leg.queue.clone(),
            },
            rung: !leg.forks.is_empty(),
            offered_at: leg.offered_at.into_std(),
        };
        if let Some(mut stale) = self.consult.arriving.replace(Box::new(leg)) {
            stale.cancel_ringing(None);
        }
        self.consult_now(input);
    }

    pub(super) fn is_consult_fork(&self, fork: &str) -> bool {
        self.consult.owns(fork)
    }

    /// A consulted agent's phone answered, or gave up.
    pub(super) async fn on_consult_final(&mut self, fin: ForkFinal) {
        let consult = &mut self.consult;
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
                info!(agent = %leg.agent, "the consulted agent did not answer");
                self.consult_now(ConsultInput::LegFailed {
                    agent: leg.agent.clone(),
                    outcome: leg.failure(),
                });
            }
            return;
        };
        if let Err(e) = sdp::parse(&response.body).and_then(|a| leg.media.accept_answer(&a)) {
            warn!(error = %e, "the consulted agent's phone answered with unusable SDP");
            end_dialog(&self.ctx, dialog);
            return;
        }
        let agent = leg.agent.clone();
        consult.answering = Some((fin.fork, dialog));
        self.consult_run(ConsultInput::LegAnswered(agent)).await;
        // An answer the machine did not ask the router about is not taken.
        if let Some((_, dialog)) = self.consult.answering.take() {
            end_dialog(&self.ctx, dialog);
        }
    }

    /// The machine took the answer of `agent`'s phone: that leg is the
    /// consulted one.
    fn take_consult_answer(&mut self, agent: &AgentId) {
        let Some((fork, _)) = self.consult.answering.take() else {
            return;
        };
        let Some(mut leg) = self.consult.take_leg(agent) else {
            return;
        };
        if let Some(f) = leg.fork_mut(&fork) {
            f.status = ForkStatus::Answered;
        }
        leg.cancel_ringing(Some(&fork));
        let consultant = leg.media.negotiated().map(LegFormat::from);
        let own = match &self.consult.phone {
            Some(phone) => phone.media.negotiated().map(LegFormat::from),
            None => self
                .acd
                .connected
                .as_ref()
                .and_then(|c| c.leg.media.negotiated())
                .map(LegFormat::from),
        };
        self.consult.formats = own.zip(consultant);
        if self.consult.formats.is_some() && self.consult.buf.is_empty() {
            self.consult.buf = vec![0; RELAY_BUF_LEN];
        }
        info!(consultant = %agent, "the consulted agent answered");
        self.consult.answered = Some(Box::new(leg));
    }

    /// The consulted agent's audio goes to the agent.
    pub(super) fn relay_from_consultant(&mut self, source: SocketAddr, packet: &[u8]) {
        let consult = &mut self.consult;
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
        let consult = &mut self.consult;
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
            .phone
            .as_mut()
            .is_some_and(|p| p.media.accept(source, packet));
        if accepted {
            self.relay_to_consultant(packet);
        }
    }

    /// A REFER with Replaces in the agent's call dialog or in its
    /// consultation dialog (`refer_dialog`, where the REFER came), replacing
    /// `replaced`: the machine's verdict. Taken, the effects of the attended
    /// transfer are returned to be carried out once the REFER is answered,
    /// with the other of the two dialogs (the replaced one) to be ended after
    /// the final NOTIFY; the REFER's own dialog is left to the phone.
    /// Refused, the SIP status and why.
    pub(super) fn consult_refer(
        &mut self,
        refer_dialog: &InviteDialog,
        replaced: &str,
    ) -> Result<(Vec<ConsultEffect>, Option<InviteDialog>), (u16, String)> {
        let previous = self
            .acd
            .connected
            .as_ref()
            .and_then(|c| c.leg.answered())
            .cloned();
        let phone = self.consult.phone.as_ref().map(|p| p.dialog.clone());
        let effects = self.consult_handle(ConsultInput::ReferReplaces {
            refer_dialog: refer_dialog.id().call_id.clone(),
            replaced: replaced.to_string(),
            agent_dialog: previous.as_ref().map(|d| d.id().call_id.clone()),
        });
        if let Some(ConsultEffect::RefuseRefer(refusal)) = effects.first() {
            return Err((refusal.status(), refusal.to_string()));
        }
        let replaced = [phone, previous]
            .into_iter()
            .flatten()
            .find(|d| d.id() != refer_dialog.id());
        Ok((effects, replaced))
    }

    /// Whether a blind REFER may hand the caller over.
    pub(super) fn consult_blind_refer(&self, refer: &BlindRefer) -> Result<(), BlindReferRefusal> {
        self.consult
            .machine
            .blind_refer(refer, &self.consult_view())
    }

    /// Carries out the attended transfer [`Self::consult_refer`] took.
    pub(super) fn consult_transfer_by_refer(&mut self, effects: Vec<ConsultEffect>) {
        self.consult_effects(effects);
        info!("attended transfer completed");
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
        self.bridge();
    }

    /// Three-way: the consulted leg goes into the mixer, like a barging
    /// supervisor's.
    fn mix_consultant(&mut self) {
        let Some(leg) = self.consult.answered.take() else {
            return;
        };
        let Some(dialog) = leg.answered().cloned() else {
            return;
        };
        let sip_call_id = dialog.id().call_id.clone();
        info!(consultant = %leg.agent, "three-way call");
        self.mixed = Some(MixedLeg::ThirdParty(Box::new(
            super::monitor::Monitor::conference(leg.media, dialog, sip_call_id),
        )));
    }

    /// The third party's leg, out of the mixer, to take the caller over.
    fn third_party_leg(&mut self, third: Consultant) -> Option<AgentLeg> {
        let (media, dialog, sip_call_id) = self
            .mixed
            .take_if(|m| m.is_third_party())
            .map(|m| m.into_leg().into_leg())?;
        let now = Instant::now();
        Some(AgentLeg {
            agent: third.agent,
            queue: third.queue,
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
        })
    }

    /// The consulted agent of a three-way call left it: the router frees it.
    pub(super) fn conference_party_left(&mut self) {
        self.consult_now(ConsultInput::ThirdPartyLeft);
    }

    /// The agent hung up on a three-way call: the consulted agent stays with
    /// the caller. False when there is no three-way call.
    pub(super) fn agent_left_conference(&mut self) -> bool {
        let Some(third) = self.consult.machine.third_party() else {
            return false;
        };
        if !self.mixed.as_ref().is_some_and(MixedLeg::is_third_party) {
            return false;
        }
        info!(consultant = %third.agent, "the agent left the three-way call");
        // The leg leaves the mixer when the machine hands the caller over.
        let effects = self.consult_handle(ConsultInput::AgentLeft);
        self.consult_effects(effects);
        true
    }

    /// Ends the consultation without a transfer: the consulted agent gets
    /// BYE or CANCEL, the caller comes back to the agent.
    pub(super) fn end_consult(&mut self, outcome: &'static str) {
        self.consult_now(ConsultInput::End(end_of(outcome)));
    }

    /// Ring limits of consulted agents.
    pub(super) fn on_consult_timer(&mut self, now: Instant) {
        if self.consult.deadline().is_some_and(|d| d <= now) {
            self.consult_now(ConsultInput::Timer);
        }
    }

    /// A request or state change in a consulted agent's dialog, or in the
    /// agent's own consultation dialog.
    pub(super) async fn on_consult_dialog(&mut self, state: DialogState) {
        let call_id = super::dialog_of(&state).call_id.clone();
        let phone = self.consult.phone_owns(&call_id);
        match state {
            DialogState::Terminated(id, reason) => {
                let answered = self
                    .consult
                    .answered
                    .as_ref()
                    .and_then(|l| l.answered())
                    .is_some_and(|d| d.id().call_id == call_id);
                if phone {
                    self.ctx.dialogs.remove_dialog(&id);
                    self.consult_now(ConsultInput::PhoneLeft);
                } else if answered {
                    debug!(?reason, "the consulted agent hung up");
                    self.ctx.dialogs.remove_dialog(&id);
                    let by_bye = matches!(reason, TerminatedReason::UasBye);
                    self.consult_now(ConsultInput::ConsultantLeft { by_bye });
                }
            }
            DialogState::Updated(_, req, handle) => {
                let consult = &mut self.consult;
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
                let dialog = self.consult.phone.as_ref().map(|p| p.dialog.clone());
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
        let sip_call_id = phone.sip_call_id.clone();
        let side = PhoneSide {
            media: phone.media,
            dialog: phone.dialog,
            sip_call_id: phone.sip_call_id,
        };
        // While one runs, the machine refuses a second; its dialog stays.
        if !self.consult.running() {
            self.consult.phone = Some(Box::new(side));
        }
        let start = ConsultInput::Start {
            target,
            phone: Some(sip_call_id),
        };
        if let Some(Err(why)) = self.consult_run(start).await {
            info!(%why, "consultation refused");
            let reason = format!(
                "SIP;cause=480;text=\"{}\"",
                why.to_string().replace('"', "'")
            );
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
