//! The call actor's queue, agent legs and bridge, as the driver of the call
//! core ([`super::core`]): it feeds the core what happens (offers, answers,
//! phones' holds, timers) and carries out what the core decides: it rings
//! the agents the router offers, takes the first answer the router accepts,
//! announces the agent's number, relays audio both ways, plays the hold
//! music, and sends the router the core's messages.

use std::sync::Arc;

use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Request, StatusCode};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::agent_leg::{self, AgentLeg, ForkFinal, ForkStatus};
use super::control::ControlError;
pub use super::core::Side;
use super::core::{Effect, Input as CoreInput, PassedOn, QueueTimers};
use super::monitor::MixedLeg;
use super::policy::CallPolicy;
use super::relay::{LegFormat, relay};
use super::{Actor, CallCommand, sdp_header};
use crate::acd::{AgentId, CallId, Caller, Command, QueueId};
use crate::config::Overflow;
use crate::events::{Event, ReleasedBy};
use crate::media::engine::{BridgeMedia, LegMedia};
use crate::media::pacer::RemoteFollower;
use crate::media::sdp;
use crate::sip::EdgeContext;

/// Datagrams that reach a caller who only listens (half a second of its
/// audio) before a media loop reads them instead of its call.
const LISTENER_AFTER_PACKETS: u64 = 25;

/// The agent who answered: its leg and the relay between it and the caller
/// (the core keeps the rest: [`super::core::Bridge`]).
pub struct Connected {
    pub leg: AgentLeg,
    /// Caller's and agent's formats once both are known.
    formats: Option<(LegFormat, LegFormat)>,
    buf: Vec<u8>,
}

impl Connected {
    pub fn new(leg: AgentLeg) -> Connected {
        Connected {
            leg,
            formats: None,
            buf: vec![0; 2048],
        }
    }
}

/// Everything about the call's life in the ACD.
pub struct AcdState {
    pub policy: CallPolicy,
    pub(super) caller: String,
    pub(super) number: String,
    pub priority: u32,
    pub skills: Vec<String>,
    /// The IVR's variables when the caller was queued (the screen pop).
    pub ivr_vars: std::collections::BTreeMap<String, String>,
    pub(super) mailbox: mpsc::UnboundedSender<Box<CallCommand>>,
    pub commands: mpsc::UnboundedReceiver<Box<CallCommand>>,
    pub(super) states: super::dialog_events::CallDialogs,
    /// Boxed: a channel keeps room for 32 of its messages, and a final
    /// response is large and rare.
    pub finals: (
        mpsc::UnboundedSender<Box<ForkFinal>>,
        mpsc::UnboundedReceiver<Box<ForkFinal>>,
    ),
    /// Agents being rung (the core's offers, one leg each).
    pub(super) legs: Vec<AgentLeg>,
    pub connected: Option<Connected>,
    /// Legs with a re-INVITE of hotline's in flight (glare).
    pub(super) reinvites: super::glare::PendingReinvites,
    /// Set when the agent ended the call: the actor's loop returns it.
    pub released: Option<ReleasedBy>,
    /// Forks of legs given up (ring limit, withdrawn, lost the race), by
    /// Call-ID: a 2xx that beat our CANCEL is ended with BYE.
    pub(super) given_up: std::collections::HashMap<String, InviteDialog>,
    /// The trunk the call came in on: its dial plan, where it takes hotline's
    /// own calls (`outbound`) and its outbound ceilings.
    pub(super) trunk: Arc<crate::config::Trunk>,
    /// The called-back customer's INVITE, once an agent answered a callback.
    pub(super) customer: Option<super::callback::CustomerCall>,
    /// The SIP Call-ID of the caller's dialog (a callback's is new).
    pub caller_sip_call_id: String,
    /// The call's recording, from its first bridge (rulebook Q1).
    pub(super) recording: crate::recording::CallRecording,
}

impl AcdState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &EdgeContext,
        call_id: String,
        trunk: &Arc<crate::config::Trunk>,
        caller: String,
        number: String,
        mailbox: mpsc::UnboundedSender<Box<CallCommand>>,
        commands: mpsc::UnboundedReceiver<Box<CallCommand>>,
        states: super::dialog_events::CallDialogs,
    ) -> AcdState {
        AcdState {
            policy: CallPolicy::from_settings(&ctx.settings),
            caller,
            number,
            priority: 0,
            skills: Vec::new(),
            ivr_vars: std::collections::BTreeMap::new(),
            mailbox,
            commands,
            states,
            finals: mpsc::unbounded_channel(),
            legs: Vec::new(),
            connected: None,
            reinvites: Default::default(),
            released: None,
            given_up: std::collections::HashMap::new(),
            trunk: trunk.clone(),
            customer: None,
            caller_sip_call_id: call_id,
            recording: crate::recording::CallRecording::new(),
        }
    }

    /// The socket the answered agent's RTP arrives on.
    pub fn agent_rtp(&self) -> Option<Arc<UdpSocket>> {
        self.connected
            .as_ref()
            .and_then(|c| c.leg.media.rtp.watched())
    }

    /// The driver's own deadline: the recording's flush (the call's come
    /// from the core).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.recording.flush_at()
    }
}

/// Sends BYE in the background and then drops the dialog from the dialog
/// layer (a confirmed dialog stays registered until someone removes it).
pub(super) fn end_dialog(ctx: &EdgeContext, dialog: InviteDialog) {
    let dialogs = ctx.dialogs.clone();
    tokio::spawn(async move {
        if let Err(e) = dialog.bye().await {
            debug!(error = %e, "BYE failed");
        }
        dialogs.remove_dialog(&dialog.id());
    });
}

impl Actor {
    pub(super) fn call(&self) -> CallId {
        CallId::from(self.call_id.as_str())
    }

    pub(super) fn tell_router(&self, command: Command) {
        if self.ctx.router.send(command).is_err() {
            warn!("the ACD router has stopped");
        }
    }

    /// Hands `input` to the call core and carries out what it decides;
    /// returns the overflow it asks for (carried out by the caller, which
    /// may wait for the router).
    pub(super) fn core_do(&mut self, input: CoreInput) -> Option<&'static str> {
        let effects = self.core.handle(input, Instant::now().into_std());
        self.apply(effects)
    }

    fn apply(&mut self, effects: Vec<Effect>) -> Option<&'static str> {
        let mut overflow = None;
        for effect in effects {
            match effect {
                Effect::Publish(event) => self.ctx.bus.publish(event),
                Effect::Router(command) => self.tell_router(command),
                Effect::JoinRouter { first } => self.join_router(first),
                Effect::Paused => {
                    let _ = self.acd.mailbox.send(Box::new(CallCommand::Paused));
                }
                Effect::CancelRinging(agent) => {
                    if let Some(i) = self.acd.legs.iter().position(|l| l.agent == agent) {
                        let mut leg = self.acd.legs.swap_remove(i);
                        info!(agent = %agent, "no longer ringing: CANCEL");
                        leg.cancel_ringing(None);
                        self.forget_leg(&leg);
                    }
                }
                Effect::EndAgentDialog => {
                    if let Some(dialog) = self.acd.connected.as_ref().and_then(|c| c.leg.answered())
                    {
                        end_dialog(&self.ctx, dialog.clone());
                    }
                }
                Effect::DetachAgent => self.detach_agent(),
                Effect::Transferred {
                    agent,
                    from_queue,
                    count,
                } => {
                    let (to_queue, to_agent) = self
                        .core
                        .bridge()
                        .map(|b| (b.queue.clone(), b.agent.0.clone()))
                        .unwrap_or_default();
                    self.ctx.bus.publish(Event::CallTransferred {
                        call_id: self.call_id.clone(),
                        agent: agent.0,
                        from_queue,
                        to_queue,
                        to_agent: Some(to_agent),
                        count,
                    });
                }
                Effect::Ivr(actions) => self.carry_out(actions),
                Effect::HangUpCaller => self.callback_recorded(),
                Effect::Play(prompts) | Effect::Announce(prompts) => self.play(&prompts, false),
                Effect::Bridge => self.bridge(),
                Effect::DialCustomer => self.dial_customer(),
                Effect::QueueMusic => {
                    let moh = self.queue_moh();
                    self.media.stream.play(moh, true);
                }
                Effect::HoldMusic(side) => {
                    info!(
                        by = self.core.hold().map(|h| h.reason.as_str()),
                        "call on hold"
                    );
                    let moh = self.queue_moh();
                    match side {
                        Side::Caller => {
                            self.media.stream.play(moh, true);
                        }
                        Side::Agent => {
                            if let Some(connected) = self.acd.connected.as_mut() {
                                connected.leg.media.stream.play(moh, true);
                            }
                        }
                    }
                }
                Effect::StopHoldMusic => {
                    info!("call off hold");
                    if let Some(connected) = self.acd.connected.as_mut() {
                        connected.leg.media.stream.stop();
                    }
                    self.playing = None;
                    self.media.stream.stop();
                }
                Effect::HoldAlert { held, limit } => self.hold_alert(held, limit),
                Effect::ResumePhones => self.hold_resume(),
                Effect::EnterQueue(queue) => self.enter_queue(&queue),
                Effect::AskPosition => self.ask_position(),
                Effect::Overflow(reason) => overflow = Some(reason),
                Effect::CheckNumber(number) => self.propose_number(&number),
                Effect::StopPrompt => {
                    self.playing = None;
                    self.media.stream.stop();
                }
                Effect::NumberEntryEnded => self.number_entry_ended(),
                Effect::CustomerUnanswered => self.customer_unanswered(),
            }
        }
        overflow
    }

    /// Puts the caller in `queue` with music on hold and hands it to the router.
    pub(super) fn enter_queue(&mut self, queue: &str) {
        info!(%queue, "caller waits in queue (music on hold)");
        let config = self.ctx.settings.queues.get(queue);
        let moh = self.ctx.media.music_on_hold(config);
        self.playing = None;
        self.media.stream.play(moh, true);
        let timers = QueueTimers {
            max_wait: config.and_then(|q| q.max_wait),
            announce_every: config.and_then(|q| q.announce_position_every),
            callback_after: config.and_then(|q| q.callback_after),
        };
        self.core_do(CoreInput::Enqueue {
            queue: queue.to_string(),
            timers,
            callback_possible: self.acd.trunk.outbound.is_some() && self.core.callback().is_none(),
            paused: self.ctx.calls.is_paused(queue),
        });
    }

    /// Queues the caller with the router (first with the agent a transfer
    /// named); a refusal comes back as [`CallCommand::Refused`].
    fn join_router(&mut self, direct: Option<AgentId>) {
        let Some(place) = self.core.place() else {
            return;
        };
        let caller = Caller {
            call: self.call(),
            queue: QueueId::from(place.queue.as_str()),
            priority: self.acd.priority,
            enqueued_at: place.first,
            skills: self.acd.skills.clone(),
        };
        let router = self.ctx.router.clone();
        let mailbox = self.acd.mailbox.clone();
        tokio::spawn(async move {
            // A transfer to a named agent that is no longer ready falls back
            // to the queue, where the caller keeps its place.
            if let Some(agent) = direct {
                match router
                    .request(Command::EnqueueFor(caller.clone(), agent))
                    .await
                {
                    Ok(Ok(())) | Err(_) => return,
                    Ok(Err(refused)) => {
                        tracing::info!(error = %refused, "transfer target not ready; queueing")
                    }
                }
            }
            if let Ok(Err(refused)) = router.request(Command::Enqueue(caller)).await {
                let _ = mailbox.send(Box::new(CallCommand::Refused(refused)));
            }
        });
    }

    /// Rings every registered phone of `agent`.
    pub(super) async fn offer(&mut self, agent: AgentId, queue: &QueueId) {
        let now = Instant::now();
        let bindings = self.ctx.registrar.contacts(&agent.0);
        let mut leg = None;
        if !bindings.is_empty() && self.core.may_ring() {
            leg = self.ring_agent(&agent, &queue.0, &bindings, now).await;
        }
        let contacts = leg.as_ref().map_or(0, |l: &AgentLeg| l.forks.len());
        info!(agent = %agent, %queue, contacts, "offering the call");
        if let Some(leg) = leg {
            // Room for this leg only: a leg is large, and a call is most
            // often offered to one agent at a time (a push would make room
            // for four).
            self.acd.legs.reserve_exact(1);
            self.acd.legs.push(leg);
        }
        self.core_do(CoreInput::Offered {
            agent,
            queue: queue.0.clone(),
            contacts,
        });
    }

    async fn ring_agent(
        &mut self,
        agent: &AgentId,
        queue: &str,
        bindings: &[crate::sip::registrar::Binding],
        now: Instant,
    ) -> Option<AgentLeg> {
        let mut media = match self.open_leg_media().await {
            Ok(media) => media,
            Err(e) => {
                warn!(agent = %agent, error = %e, "no RTP ports for the agent leg");
                return None;
            }
        };
        let offer = media.offer();
        let session_timer = super::timer_settings(&self.ctx)
            .map(|t| super::session_timer::uac_headers(t.session_expires, t.min_se, false))
            .unwrap_or_default();
        let mut forks = Vec::new();
        for binding in bindings {
            let dial = agent_leg::Dial {
                from_user: &self.acd.caller,
                display: Some(queue),
                header: Some((&self.acd.policy.queue_header, queue)),
                session_timer: session_timer.clone(),
            };
            match agent_leg::ring(
                &self.ctx,
                binding.into(),
                &dial,
                offer.clone(),
                self.acd.states.clone(),
                self.acd.finals.0.clone(),
            ) {
                Ok(fork) => forks.push(fork),
                Err(e) => warn!(agent = %agent, error = %e, "cannot ring a phone"),
            }
        }
        if forks.is_empty() {
            return None;
        }
        Some(AgentLeg {
            agent: agent.clone(),
            queue: queue.to_string(),
            media,
            forks,
            offered_at: now,
            ring_deadline: now + self.acd.policy.ring_limit,
        })
    }

    /// Remembers the forks of a leg that is given up while they may still
    /// answer. Unanswered INVITEs leave the dialog layer by themselves; an
    /// answered one is ended (and dropped) with [`end_dialog`].
    pub(super) fn forget_leg(&mut self, leg: &AgentLeg) {
        for fork in &leg.forks {
            if fork.status == ForkStatus::Cancelled {
                self.acd
                    .given_up
                    .insert(fork.call_id.clone(), fork.dialog.clone());
            }
        }
    }

    pub(super) async fn on_fork_final(&mut self, fin: Box<ForkFinal>) {
        let fin = *fin;
        if self.is_consult_fork(&fin.fork) {
            self.on_consult_final(fin).await;
            return;
        }
        if self.is_monitor_fork(&fin.fork) {
            self.on_monitor_final(fin);
            return;
        }
        if self.is_customer_fork(&fin.fork) {
            self.on_customer_final(fin);
            return;
        }
        let now = Instant::now();
        let Some(i) = self.acd.legs.iter().position(|l| l.owns(&fin.fork)) else {
            // A leg given up. A 2xx that crossed our CANCEL is ended by the
            // dialog layer; one that came before the CANCEL left a confirmed
            // dialog that is ours to end.
            if let Some(dialog) = self.acd.given_up.remove(&fin.fork)
                && fin.response.as_ref().is_some_and(agent_leg::is_success)
                && matches!(dialog.state(), DialogState::Confirmed(..))
            {
                info!("a phone answered an offer already given up: BYE");
                end_dialog(&self.ctx, dialog);
            }
            return;
        };
        let leg = &mut self.acd.legs[i];
        let Some(fork) = leg.fork_mut(&fin.fork) else {
            return;
        };
        let status = fork.status;
        let dialog = fork.dialog.clone();
        if status == ForkStatus::Ringing
            && let Some(too_small) = fin.response.as_ref().filter(|r| agent_leg::code(r) == 422)
            && self.ring_again_after_422(i, &fin.fork, too_small)
        {
            return;
        }
        let leg = &mut self.acd.legs[i];
        let Some(fork) = leg.fork_mut(&fin.fork) else {
            return;
        };
        let response = match fin.response {
            Some(r) if agent_leg::is_success(&r) && status == ForkStatus::Ringing => r,
            other => {
                if status == ForkStatus::Ringing {
                    fork.status = ForkStatus::Failed(other.as_ref().map(agent_leg::code));
                }
                self.settle_leg(i);
                return;
            }
        };
        let peer = leg.fork_mut(&fin.fork).and_then(|f| f.peer);
        leg.media.set_signalling(peer.map(|a| a.ip()));
        let answer = sdp::parse(&response.body).and_then(|a| leg.media.accept_answer(&a));
        if let Err(e) = answer {
            warn!(agent = %leg.agent, error = %e, "the agent's phone answered with unusable SDP");
            if let Some(fork) = leg.fork_mut(&fin.fork) {
                fork.status = ForkStatus::Failed(None);
            }
            end_dialog(&self.ctx, dialog);
            self.settle_leg(i);
            return;
        }
        let agent = leg.agent.clone();
        // The router decides who wins: a second answer (ring-all race, or one
        // crossing the ring limit) is refused and that phone gets BYE.
        let accepted = matches!(
            self.ctx
                .router
                .request(Command::OfferAnswered(self.call(), agent.clone()))
                .await,
            Ok(Ok(()))
        );
        // A leg given up while the router decided (the caller left, the
        // ring limit) is no longer the core's offer.
        let Some(i) = self.acd.legs.iter().position(|l| l.agent == agent) else {
            end_dialog(&self.ctx, dialog);
            return;
        };
        let leg = &mut self.acd.legs[i];
        let offered = self.core.offers().iter().any(|o| o.agent == agent);
        if !accepted || !offered || self.acd.connected.is_some() {
            info!(agent = %agent, "answer refused: the call went elsewhere");
            if let Some(fork) = leg.fork_mut(&fin.fork) {
                fork.status = ForkStatus::Failed(None);
            }
            end_dialog(&self.ctx, dialog);
            let still_ringing = leg.ringing();
            if !still_ringing {
                // The router already settled this agent (released or failed).
                let leg = self.acd.legs.swap_remove(i);
                self.forget_leg(&leg);
            }
            self.core_do(CoreInput::AnswerRefused {
                agent,
                still_ringing,
            });
            return;
        }
        if let Some(fork) = leg.fork_mut(&fin.fork) {
            fork.status = ForkStatus::Answered;
        }
        leg.cancel_ringing(Some(&fin.fork));
        let leg = self.acd.legs.swap_remove(i);
        info!(agent = %agent, "agent answered");
        let announce = self
            .ctx
            .settings
            .queues
            .get(&leg.queue)
            .is_none_or(|q| q.announce_agent);
        self.acd.connected = Some(Connected::new(leg));
        self.lifetime.agent_session = super::timer_settings(&self.ctx).map(|timers| {
            let (interval, we_refresh) =
                super::session_timer::from_answer(&response, timers.session_expires);
            super::lifetime::LegSession {
                timer: super::session_timer::SessionTimer::start(interval, we_refresh, now),
                allows_update: super::session_timer::allows_update(&response.headers),
            }
        });
        // Any other agent still ringing lost the race; the core says what
        // comes next (the agent's number, the bridge, or the customer).
        self.core_do(CoreInput::AgentAnswered { agent, announce });
    }

    /// A phone of leg `i` answered its INVITE 422 Session Interval Too
    /// Small: the INVITE goes again, same Call-ID, asking for the phone's
    /// `Min-SE` (when hotline would accept that long an interval: at most
    /// ten times `sip.session_expires`). False when it does not.
    fn ring_again_after_422(
        &mut self,
        i: usize,
        fork_id: &str,
        response: &rsipstack::sip::Response,
    ) -> bool {
        let Some(timers) = super::timer_settings(&self.ctx) else {
            return false;
        };
        let Some(min_se) = super::session_timer::min_se_of(response) else {
            return false;
        };
        let asked = std::time::Duration::from_secs(min_se);
        if asked > timers.session_expires.saturating_mul(10) {
            return false;
        }
        let leg = &self.acd.legs[i];
        let Some(again) = leg
            .forks
            .iter()
            .find(|f| f.call_id == fork_id)
            .and_then(|f| f.again.clone())
        else {
            return false;
        };
        let queue = leg.queue.clone();
        let dial = agent_leg::Dial {
            from_user: &self.acd.caller,
            display: Some(&queue),
            header: Some((&self.acd.policy.queue_header, &queue)),
            session_timer: super::session_timer::uac_headers(asked, asked, false),
        };
        let target = agent_leg::Target {
            uri: &again.uri,
            address: again.address,
            tcp: again.tcp,
        };
        let fork = agent_leg::ring_as(
            &self.ctx,
            target,
            &dial,
            again.offer.clone(),
            self.acd.states.clone(),
            self.acd.finals.0.clone(),
            fork_id.to_string(),
        );
        match fork {
            Ok(fork) => {
                info!(
                    min_se,
                    "the phone wants a longer session interval: INVITE again"
                );
                super::session_timer::Totals::count(
                    &self.ctx.calls.session_timers.retried_after_422,
                );
                let leg = &mut self.acd.legs[i];
                if let Some(slot) = leg.forks.iter_mut().find(|f| f.call_id == fork_id) {
                    *slot = fork;
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot send the INVITE again");
                false
            }
        }
    }

    /// Once no phone of leg `i` rings any more, the offer failed: the router
    /// hears how, and the leg is dropped.
    fn settle_leg(&mut self, i: usize) {
        if self.acd.legs[i].ringing() {
            return;
        }
        let leg = self.acd.legs.swap_remove(i);
        let outcome = leg.failure();
        info!(agent = %leg.agent, ?outcome, "offer failed");
        self.forget_leg(&leg);
        self.core_do(CoreInput::OfferSettled {
            agent: leg.agent,
            outcome,
        });
    }

    /// Connects caller and agent: the caller's music stops, audio is relayed.
    pub(super) fn bridge(&mut self) {
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        self.playing = None;
        self.media.stream.stop();
        connected.leg.media.stream.stop();
        let caller = self.media.negotiated().map(LegFormat::from);
        let agent = connected.leg.media.negotiated().map(LegFormat::from);
        if let (Some(c), Some(a)) = (caller, agent) {
            connected.formats = Some((c, a));
            self.ctx.bus.publish(Event::CallBridged {
                call_id: self.call_id.clone(),
                agent: connected.leg.agent.0.clone(),
                caller_codec: c.codec.name().to_string(),
                agent_codec: a.codec.name().to_string(),
            });
        }
        info!("caller and agent bridged");
        let queue_max = self
            .ctx
            .settings
            .queues
            .get(&connected.leg.queue)
            .and_then(|q| q.max_duration);
        let answered_at = self
            .core
            .bridge()
            .map_or_else(Instant::now, |b| Instant::from_std(b.answered_at));
        self.lifetime.connected(answered_at, queue_max);
        self.core_do(CoreInput::Bridged);
        self.start_recording();
        self.hold_changed();
    }

    /// After a prompt over the bridge or the queue (hold alert, queue
    /// announcements), the music comes back when the caller still waits.
    pub(super) fn after_prompt(&mut self) {
        self.core_do(CoreInput::PromptEnded);
    }

    fn queue_moh(&self) -> Vec<Arc<crate::media::prompt::Prompt>> {
        let queue = self.core.place().map(|p| p.queue.as_str());
        self.ctx
            .media
            .music_on_hold(queue.and_then(|q| self.ctx.settings.queues.get(q)))
    }

    /// Asks the router where the caller stands; the answer comes back as
    /// [`CallCommand::Position`].
    fn ask_position(&self) {
        let router = self.ctx.router.clone();
        let mailbox = self.acd.mailbox.clone();
        let call = self.call();
        tokio::spawn(async move {
            if let Ok(position) = router.position(call).await {
                let _ = mailbox.send(Box::new(CallCommand::Position(position)));
            }
        });
    }

    /// Starts or ends a hold after either side's new offer.
    pub(super) fn hold_changed(&mut self) {
        let Some(connected) = self.acd.connected.as_ref() else {
            return;
        };
        let agent = connected.leg.media.on_hold();
        let caller = self.media.on_hold();
        self.core_do(CoreInput::PhoneHold { caller, agent });
    }

    /// The agent consults someone (the caller waits on hold), or is back.
    pub(super) fn consult_hold(&mut self, on: bool) {
        self.core_do(CoreInput::ConsultHold(on));
    }

    /// Both legs' formats after either side's media changed.
    pub(super) fn update_formats(&mut self) {
        if let (Some(connected), Some(caller)) = (
            self.acd.connected.as_mut(),
            self.media.negotiated().map(LegFormat::from),
        ) && let Some(agent) = connected.leg.media.negotiated().map(LegFormat::from)
        {
            connected.formats = Some((caller, agent));
        }
    }

    /// Passes a caller's INFO digit on to the agent's phone.
    pub(super) fn forward_info(&self, req: &Request) {
        let Some(dialog) = self
            .acd
            .connected
            .as_ref()
            .and_then(|c| c.leg.answered())
            .cloned()
        else {
            return;
        };
        let headers = vec![Header::ContentType(super::content_type(req).into())];
        let body = req.body.clone();
        tokio::spawn(async move {
            if let Err(e) = dialog.info(Some(headers), Some(body)).await {
                debug!(error = %e, "INFO to the agent failed");
            }
        });
    }

    /// Whether the bridge is a plain one a media loop may relay: caller and
    /// agent connected and both formats known, neither side on hold, no
    /// supervisor or third party in the mixer, no consultation (a recording
    /// goes to the loop with the bridge).
    fn plain_bridge(&self) -> bool {
        let Some(connected) = self.acd.connected.as_ref() else {
            return false;
        };
        connected.formats.is_some()
            && self.core.bridged()
            && !self.core.is_held()
            && !self.media.on_hold()
            && !connected.leg.media.on_hold()
            && self.nobody_else_on_the_media()
    }

    /// No supervisor or third party mixed in, no consultation running or
    /// holding a leg.
    fn nobody_else_on_the_media(&self) -> bool {
        self.mixed.is_none()
            && !self.consult.running()
            && !self.consult.in_conference()
            && self.consult.consultant_rtp().is_none()
            && self.consult.phone_rtp().is_none()
    }

    /// Whether the caller's audio is wanted for nothing but RFC 4733 keys
    /// (an IVR prompt, music on hold): a media loop may then read it.
    /// Not while in-band tones are looked for, a recording runs, or anyone
    /// else is on the call's media.
    fn caller_only_listens(&self) -> bool {
        let Some(negotiated) = self.media.negotiated() else {
            return false;
        };
        (self.core.queued() || self.core.ivr().is_some())
            && !self.core.bridged()
            && self.acd.connected.is_none()
            && !self.acd.recording.is_active()
            && self.nobody_else_on_the_media()
            && (negotiated.telephone_event.is_some() || !self.digits_wanted())
    }

    /// Hands a plain bridge, or a caller who only listens, to a media loop,
    /// or takes it back once that no longer holds.
    pub(super) async fn place_bridge(&mut self) {
        let current = self.on_loop.as_ref().map(|on| on.listening);
        let usable = !self.loop_refused && self.ctx.media.engine.is_some();
        // The two exclude each other: a bridge has an agent connected, a
        // listening caller none.
        let bridge = usable && self.plain_bridge();
        let listens = usable && !bridge && self.caller_only_listens();
        if !listens {
            self.listen_mark = None;
        }
        let wanted = if bridge {
            Some(false)
        } else if listens {
            // Only once datagrams arrive (the caller's, or a stranger's
            // the loop drops as cheaply): handing a quiet caller over
            // would cost the round trips and save nothing.
            let packets = self.media.packets_in() + self.media.dropped();
            let mark = *self.listen_mark.get_or_insert(packets);
            (current == Some(true) || packets.saturating_sub(mark) >= LISTENER_AFTER_PACKETS)
                .then_some(true)
        } else {
            None
        };
        if wanted == current {
            return;
        }
        if current.is_some() {
            self.take_bridge_back().await;
        }
        match wanted {
            Some(false) => self.hand_bridge_over(),
            Some(true) => self.hand_listener_over(),
            None => {}
        }
    }

    fn hand_bridge_over(&mut self) {
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        let Some((caller_format, agent_format)) = connected.formats else {
            return;
        };
        let agent_socket = match connected.leg.media.park_rtp() {
            Ok(socket) => socket,
            Err(e) => {
                warn!(error = %e, "cannot hand the bridge to a media loop; relaying here");
                self.loop_refused = true;
                return;
            }
        };
        let agent = LegMedia {
            socket: agent_socket,
            format: agent_format,
            latch: connected.leg.media.latch().clone(),
            stats: connected.leg.media.stats.clone(),
            keys: None,
            follow: None,
        };
        let recording = self
            .acd
            .recording
            .is_active()
            .then(|| std::mem::take(&mut self.acd.recording));
        self.hand_to_loop(caller_format, None, Some(agent), recording);
    }

    /// Hands the caller's lone leg to a media loop: it reads, judges and
    /// counts the caller's packets and passes RFC 4733 keys on; the prompt
    /// or music follows the caller's source if it latches there.
    fn hand_listener_over(&mut self) {
        let Some(format) = self.media.negotiated().map(LegFormat::from) else {
            return;
        };
        let follow = (!self.media.on_hold()).then(|| self.media.stream.follower());
        self.hand_to_loop(format, follow, None, None);
    }

    fn hand_to_loop(
        &mut self,
        caller_format: LegFormat,
        follow: Option<RemoteFollower>,
        agent: Option<LegMedia>,
        recording: Option<crate::recording::CallRecording>,
    ) {
        let room = self.ctx.media.clone();
        let Some(engine) = room.engine.as_ref() else {
            return;
        };
        let listening = agent.is_none();
        let caller_socket = match self.media.park_rtp() {
            Ok(socket) => socket,
            Err(e) => {
                warn!(error = %e, "cannot hand the call's media to a media loop; reading it here");
                self.loop_refused = true;
                self.restore_from_loop(None, agent.map(|a| a.socket), None, recording);
                return;
            }
        };
        let caller_keys = caller_format
            .telephone_event
            .map(|_| self.media.take_key_detector());
        let media = BridgeMedia {
            caller: LegMedia {
                socket: caller_socket,
                format: caller_format,
                latch: self.media.latch().clone(),
                stats: self.media.stats.clone(),
                keys: caller_keys,
                follow,
            },
            agent,
            digits: self.loop_keys.0.clone(),
            recording,
        };
        match engine.attach(media) {
            Ok(ticket) => {
                debug!(listening, "call's media on a media loop");
                self.on_loop = Some(super::OnLoop { ticket, listening });
            }
            Err(media) => {
                warn!("no media loop takes the call's media; reading it here");
                self.loop_refused = true;
                if let Some(media) = media {
                    let media = *media;
                    self.restore_from_loop(
                        Some(media.caller.socket),
                        media.agent.map(|a| a.socket),
                        media.caller.keys,
                        media.recording,
                    );
                }
            }
        }
    }

    /// Takes the call's media back from its media loop (if it is on one),
    /// with the legs' latches as they now stand.
    pub(super) async fn take_bridge_back(&mut self) {
        let room = self.ctx.media.clone();
        let (Some(on_loop), Some(engine)) = (self.on_loop.take(), room.engine.as_ref()) else {
            return;
        };
        let Some(returned) = engine.detach(on_loop.ticket).await else {
            warn!("the media loop did not hand the call's media back; its RTP is lost");
            self.loop_refused = true;
            return;
        };
        self.media.restore_latch(returned.caller_latch);
        self.restore_from_loop(
            Some(returned.caller_socket),
            returned.agent_socket,
            returned.caller_keys,
            returned.recording,
        );
        // The agent may have left meanwhile (the hold limit requeued the
        // caller): its latch then goes with its leg.
        if let (Some(connected), Some(latch)) = (self.acd.connected.as_mut(), returned.agent_latch)
        {
            connected.leg.media.restore_latch(latch);
        }
        debug!("call's media read by its call again");
    }

    /// What a media loop held (or a handover that did not happen) back
    /// with the call: the legs' RTP sockets, the caller's key detector (a
    /// key may be half pressed), the recording.
    fn restore_from_loop(
        &mut self,
        caller: Option<std::net::UdpSocket>,
        agent: Option<std::net::UdpSocket>,
        keys: Option<crate::media::dtmf::EventDetector>,
        recording: Option<crate::recording::CallRecording>,
    ) {
        if let Some(caller) = caller
            && let Err(e) = self.media.unpark_rtp(caller)
        {
            warn!(error = %e, "the caller's RTP socket is lost");
        }
        // The agent may have left meanwhile (the hold limit requeued the
        // caller): its socket then closes with this handle.
        if let (Some(agent), Some(connected)) = (agent, self.acd.connected.as_mut())
            && let Err(e) = connected.leg.media.unpark_rtp(agent)
        {
            warn!(error = %e, "the agent's RTP socket is lost");
        }
        if let Some(keys) = keys {
            self.media.restore_key_detector(keys);
        }
        if let Some(recording) = recording {
            self.acd.recording = recording;
        }
    }

    pub(super) fn relay_from_caller(&mut self, packet: &[u8]) {
        let format = self.media.negotiated().map(|n| (n.codec, n.payload_type));
        let held = self.core.is_held();
        (self.acd.recording).caller(packet, format, held);
        if !self.core.bridged() || held {
            return;
        }
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        let (Some((from, to)), Some(dst)) = (connected.formats, connected.leg.media.remote())
        else {
            return;
        };
        let relayed = match self.mixed.as_mut().map(MixedLeg::leg_mut) {
            Some(monitor) => monitor.relay(Side::Caller, packet, &from, &to, &mut connected.buf),
            None => relay(packet, &from, &to, &mut connected.buf),
        };
        if let Some(out) = relayed
            && let Ok(sent) = connected
                .leg
                .media
                .rtp
                .try_send_to(&connected.buf[..out.len()], dst)
        {
            connected.leg.media.relayed(sent);
        }
    }

    pub(super) fn relay_from_agent(&mut self, source: std::net::SocketAddr, packet: &[u8]) {
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        let accepted = connected.leg.media.accept(source, packet);
        if accepted {
            let format = connected
                .leg
                .media
                .negotiated()
                .map(|n| (n.codec, n.payload_type));
            (self.acd.recording).agent(packet, format, self.core.is_held());
        }
        if accepted && self.consult.over_call_leg() {
            self.relay_to_consultant(packet);
            return;
        }
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        if !accepted || !self.core.bridged() || self.core.is_held() {
            return;
        }
        let (Some((caller, agent)), Some(dst)) = (connected.formats, self.media.remote()) else {
            return;
        };
        let relayed = match self.mixed.as_mut().map(MixedLeg::leg_mut) {
            Some(monitor) => {
                monitor.relay(Side::Agent, packet, &agent, &caller, &mut connected.buf)
            }
            None => relay(packet, &agent, &caller, &mut connected.buf),
        };
        if let Some(out) = relayed
            && let Ok(sent) = self.media.rtp.try_send_to(&connected.buf[..out.len()], dst)
        {
            self.media.relayed(sent);
        }
    }

    /// A state change or request in an agent's dialog. Boxed: the call's
    /// loop keeps room for the largest future it awaits for the call's whole
    /// life, and an agent's dialog speaks rarely.
    pub(super) async fn on_agent_dialog(&mut self, state: DialogState) {
        Box::pin(self.agent_dialog_changed(state)).await;
    }

    async fn agent_dialog_changed(&mut self, state: DialogState) {
        if let DialogState::Confirmed(id, _) = &state {
            self.refer_answered(id);
        }
        let call_id = super::dialog_of(&state).call_id.clone();
        let ours = self
            .acd
            .connected
            .as_ref()
            .is_some_and(|c| c.leg.owns(&call_id));
        match state {
            DialogState::Terminated(id, reason) if ours => {
                let answered = self
                    .acd
                    .connected
                    .as_ref()
                    .and_then(|c| c.leg.answered())
                    .is_some_and(|d| d.id().call_id == call_id);
                if answered {
                    self.ctx.dialogs.remove_dialog(&id);
                    if self.agent_left_conference() {
                        return;
                    }
                    info!(?reason, "the agent ended the call");
                    let by = match reason {
                        TerminatedReason::UasBye => ReleasedBy::Agent,
                        _ => ReleasedBy::System,
                    };
                    if by == ReleasedBy::Agent && self.agent_left_for_survey() {
                        return;
                    }
                    end_dialog(&self.ctx, self.caller_dialog.clone());
                    self.acd.released = Some(by);
                }
            }
            DialogState::Updated(_, req, handle)
                if ours && super::glare::crosses(&req, &self.acd.reinvites, Side::Agent) =>
            {
                super::glare::refuse(&handle).await;
            }
            DialogState::Updated(_, req, handle) if ours => {
                let Some(refresh) = self.peer_refresh(Side::Agent, &req, &handle).await else {
                    return;
                };
                let extra = refresh.as_ref().map(|r| r.0.clone()).unwrap_or_default();
                let Some(connected) = self.acd.connected.as_mut() else {
                    return;
                };
                if !super::answer_update_with(&mut connected.leg.media, &req, &handle, extra).await
                {
                    return;
                }
                self.peer_refreshed(Side::Agent, refresh);
                let Some(connected) = self.acd.connected.as_mut() else {
                    return;
                };
                if let (Some(c), Some(a)) = (
                    self.media.negotiated().map(LegFormat::from),
                    connected.leg.media.negotiated().map(LegFormat::from),
                ) {
                    connected.formats = Some((c, a));
                }
                self.hold_changed();
            }
            DialogState::Info(_, _, handle) | DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            DialogState::Refer(id, req, handle) if ours => self.on_refer(id, req, handle).await,
            DialogState::Message(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Refer(_, _, handle)
            | DialogState::Publish(_, _, handle)
            | DialogState::Updated(_, _, handle) => {
                let _ = handle.reply(StatusCode::MethodNotAllowed).await;
            }
            _ => {}
        }
    }

    /// Ring limits, queue timers and the hold clock.
    pub(super) async fn on_acd_timers(&mut self, now: Instant) {
        let effects = self.core.handle(CoreInput::Tick, now.into_std());
        if let Some(reason) = self.apply(effects) {
            self.overflow(reason).await;
        }
        self.acd.recording.tick(now, self.core.is_held());
    }

    /// The caller leaves its queue for the queue's overflow target (max_wait,
    /// max_len or no agents logged in).
    pub(super) async fn overflow(&mut self, reason: &'static str) {
        let Some(queue) = self.core.place().map(|p| p.queue.clone()) else {
            return;
        };
        if self.core.in_router() {
            // The router settles a pending offer; an answer that won the race stays.
            if !matches!(
                self.ctx.router.request(Command::Dequeue(self.call())).await,
                Ok(Ok(()))
            ) || self.acd.connected.is_some()
            {
                return;
            }
            self.core.left_router();
        }
        let config = self.ctx.settings.queues.get(&queue);
        let target = config.map(|q| q.overflow.clone()).unwrap_or_default();
        let prompt = config.and_then(|q| q.overflow_prompt.clone());
        info!(%queue, reason, %target, "caller overflows");
        self.core_do(CoreInput::Overflowed {
            reason,
            target: target.to_string(),
        });
        match target {
            Overflow::Hangup => {
                self.playing = None;
                self.media.stream.stop();
                if let Some(prompt) = prompt {
                    self.play(&[prompt], false);
                }
                self.core_do(CoreInput::Close);
            }
            Overflow::Queue(next) => match prompt {
                Some(prompt) if reason != "max_wait" => {
                    self.core_do(CoreInput::Greet { queue: next });
                    self.play(&[prompt], false);
                }
                _ => self.enter_queue(&next),
            },
            Overflow::Ivr { flow, node } => {
                let mut vars = std::collections::BTreeMap::new();
                vars.insert("caller".to_string(), self.acd.caller.clone());
                vars.insert("number".to_string(), self.acd.number.clone());
                self.start_flow(&flow, node.as_deref(), vars);
            }
        }
    }

    /// The caller hears "thank you for waiting", the agent's phone a MESSAGE.
    fn hold_alert(&mut self, held: std::time::Duration, limit: std::time::Duration) {
        if let Some(dialog) = self
            .acd
            .connected
            .as_ref()
            .and_then(|c| c.leg.answered())
            .cloned()
        {
            let text = format!(
                "hotline: the caller has been on hold for {} s (limit {} s)",
                held.as_secs(),
                limit.as_secs()
            );
            tokio::spawn(async move {
                let headers = vec![Header::ContentType("text/plain".into())];
                if let Err(e) = dialog.message(Some(headers), Some(text.into_bytes())).await {
                    debug!(error = %e, "MESSAGE to the agent failed");
                }
            });
        }
    }

    /// Takes the call off hold: a sendrecv re-INVITE to each side holding.
    /// The answers come back as [`CallCommand::Resumed`], so a phone slow to
    /// answer does not stall the call.
    fn hold_resume(&mut self) {
        let agent_holds = self
            .acd
            .connected
            .as_ref()
            .is_some_and(|c| c.leg.media.on_hold());
        if agent_holds {
            self.resume_side(Side::Agent, 1);
        }
        if self.media.on_hold() {
            self.resume_side(Side::Caller, 1);
        }
    }

    /// Sends `side` the re-INVITE taking it off hold (`attempt` counts the
    /// sends that met glare), unless one is in flight there already.
    fn resume_side(&mut self, side: Side, attempt: u32) {
        let (dialog, offer) = match side {
            Side::Agent => {
                let Some(connected) = self.acd.connected.as_mut() else {
                    return;
                };
                let Some(dialog) = connected.leg.answered().cloned() else {
                    return;
                };
                (dialog, connected.leg.media.offer())
            }
            Side::Caller => (self.caller_dialog.clone(), self.media.offer()),
        };
        if !self.acd.reinvites.start(side) {
            return;
        }
        let mailbox = self.acd.mailbox.clone();
        tokio::spawn(async move {
            let answer = match dialog
                .reinvite(Some(vec![sdp_header()]), Some(offer.into_bytes()))
                .await
            {
                Ok(Some(resp)) if agent_leg::code(&resp) == super::glare::REQUEST_PENDING => {
                    let _ = mailbox.send(Box::new(CallCommand::ResumeCrossed { side, attempt }));
                    return;
                }
                Ok(Some(resp)) if agent_leg::is_success(&resp) => Ok(resp.body),
                Ok(Some(resp)) => Err(format!("answered {}", agent_leg::code(&resp))),
                Ok(None) => Err("no answer".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = mailbox.send(Box::new(CallCommand::Resumed { side, answer }));
        });
    }

    /// The phone on `side` refused the re-INVITE taking it off hold with 491
    /// (its own crossed ours): wait as RFC 3261 §14.1 says for the dialog's
    /// Call-ID owner or the other side, then send it again.
    pub(super) fn resume_crossed(&mut self, side: Side, attempt: u32) {
        self.acd.reinvites.finish(side);
        if attempt >= super::glare::MAX_ATTEMPTS {
            self.on_resumed(side, Err(format!("answered 491 {attempt} times (glare)")));
            return;
        }
        let owns_call_id = match side {
            Side::Caller => self.caller_dialog.role(),
            Side::Agent => match self.acd.connected.as_ref().and_then(|c| c.leg.answered()) {
                Some(dialog) => dialog.role(),
                None => return,
            },
        } == rsipstack::transaction::key::TransactionRole::Client;
        let wait = super::glare::retry_after(owns_call_id, rand::random::<f64>());
        info!(
            ?side,
            wait_ms = super::core::ms(wait),
            "re-INVITE glare (491): trying again"
        );
        let mailbox = self.acd.mailbox.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = mailbox.send(Box::new(CallCommand::ResumeAgain {
                side,
                attempt: attempt + 1,
            }));
        });
    }

    /// The wait after glare is over: `side` is taken off hold again if it is
    /// still held (the phone may have come off hold by itself meanwhile).
    pub(super) fn resume_again(&mut self, side: Side, attempt: u32) {
        let still_held = match side {
            Side::Caller => self.media.on_hold(),
            Side::Agent => self
                .acd
                .connected
                .as_ref()
                .is_some_and(|c| c.leg.media.on_hold()),
        };
        if still_held && self.core.is_held() {
            self.resume_side(side, attempt);
        }
    }

    /// A phone answered hotline's re-INVITE taking the call off hold.
    pub(super) fn on_resumed(&mut self, side: Side, answer: Result<Vec<u8>, String>) {
        let applied = answer.and_then(|body| {
            let answer = sdp::parse(&body).map_err(|e| e.to_string())?;
            match side {
                Side::Caller => self.media.accept_answer(&answer),
                Side::Agent => match self.acd.connected.as_mut() {
                    Some(connected) => connected.leg.media.accept_answer(&answer),
                    None => return Ok(()),
                },
            }
            .map_err(|e| e.to_string())
        });
        if let Err(e) = applied {
            warn!(?side, error = %e, "the phone did not come off hold");
        }
        if let (Some(connected), Some(caller)) = (
            self.acd.connected.as_mut(),
            self.media.negotiated().map(LegFormat::from),
        ) && let Some(agent) = connected.leg.media.negotiated().map(LegFormat::from)
        {
            connected.formats = Some((caller, agent));
        }
        self.hold_changed();
        // Still on hold: the limit counts again from now.
        self.core_do(CoreInput::ResumeAnswered);
    }

    /// Blind transfer of the bridged call to a queue or a named agent: the
    /// agent is released (wrap-up), the caller joins the queue (its own, for
    /// an agent) keeping its waited time, offered first to the named agent.
    /// A transfer to the survey or to an IVR flow: see [`Self::transfer_from`].
    pub(super) fn transfer(&mut self, target: super::TransferTarget) -> Result<(), ControlError> {
        self.transfer_from(target, true)
    }

    /// Why the call cannot be passed on now, if it cannot: no agent on it,
    /// or `acd.max_transfers` reached (rulebook L6).
    pub(super) fn transfer_refused(&self) -> Option<ControlError> {
        if !self.core.bridged() || self.acd.connected.is_none() {
            return Some(ControlError::NotBridged {
                action: "be transferred",
            });
        }
        self.core.transfer_limit().map(ControlError::from)
    }

    /// [`Self::transfer`]; `end_agent` false leaves the agent's dialog to the
    /// agent's phone (a REFER's transferor hangs up by itself). The survey
    /// is no transfer: it is not counted against `acd.max_transfers`.
    pub(super) fn transfer_from(
        &mut self,
        target: super::TransferTarget,
        end_agent: bool,
    ) -> Result<(), ControlError> {
        // The queue (with the agent offered first), or the IVR flow.
        let (queue, direct, flow) = match target {
            super::TransferTarget::Queue(queue) => (queue, None, None),
            super::TransferTarget::Agent(agent) => {
                let queue = self
                    .acd
                    .connected
                    .as_ref()
                    .map(|c| c.leg.queue.clone())
                    .unwrap_or_default();
                (queue, Some(AgentId::from(agent.as_str())), None)
            }
            super::TransferTarget::Survey => return self.transfer_to_survey(end_agent),
            super::TransferTarget::Ivr(flow) => {
                if self
                    .survey_flow()
                    .is_some_and(|(survey, ..)| survey == flow)
                {
                    return self.transfer_to_survey(end_agent);
                }
                if !self.ctx.settings.ivr.contains_key(&flow) {
                    return Err(ControlError::UnknownFlow(flow));
                }
                (format!("ivr:{flow}"), None, Some(flow))
            }
        };
        if flow.is_none() && !self.ctx.settings.queues.contains_key(queue.as_str()) {
            return Err(ControlError::UnknownQueue(queue));
        }
        if let Some(refusal) = self.transfer_refused() {
            return Err(refusal);
        }
        if end_agent
            && let Some(dialog) = self.acd.connected.as_ref().and_then(|c| c.leg.answered())
        {
            end_dialog(&self.ctx, dialog.clone());
        }
        let Some(connected) = self.release_agent(ReleasedBy::System) else {
            return Err(ControlError::NoAgent);
        };
        self.end_consult("cancelled");
        self.end_monitor("transferred", true);
        self.core_do(CoreInput::PassedOn(match flow {
            Some(_) => PassedOn::Flow,
            None => PassedOn::Queue {
                first: direct.clone(),
            },
        }));
        info!(from = %connected.leg.queue, to = %queue, "call transferred");
        self.ctx.bus.publish(Event::CallTransferred {
            call_id: self.call_id.clone(),
            agent: connected.leg.agent.0.clone(),
            from_queue: connected.leg.queue.clone(),
            // An IVR flow is named as an overflow names it: "ivr:FLOW".
            to_queue: queue.clone(),
            to_agent: direct.as_ref().map(|a| a.0.clone()),
            count: self.core.transfers(),
        });
        self.playing = None;
        match flow {
            Some(flow) => {
                let mut vars = std::collections::BTreeMap::new();
                vars.insert("caller".to_string(), self.acd.caller.clone());
                vars.insert("number".to_string(), self.acd.number.clone());
                self.start_flow(&flow, None, vars);
            }
            None => self.enter_queue(&queue),
        }
        Ok(())
    }

    /// Lets the connected agent go to wrap-up while the caller stays on the
    /// line: the release is published (its running hold included) and the
    /// router told. The agent's dialog is the caller's to end.
    pub(super) fn release_agent(&mut self, by: ReleasedBy) -> Option<Connected> {
        let connected = self.acd.connected.take()?;
        self.lifetime.disconnected();
        self.core_do(CoreInput::ReleaseAgent(by));
        self.forget_leg(&connected.leg);
        connected.leg.media.stream.stop();
        Some(connected)
    }

    /// The hold limit took the agent off the call (the caller goes back to
    /// its queue): consultation and monitoring end, the agent's dialog too.
    fn detach_agent(&mut self) {
        let Some(connected) = self.acd.connected.take() else {
            return;
        };
        self.lifetime.disconnected();
        self.end_consult("cancelled");
        self.end_monitor("requeued", true);
        if let Some(dialog) = connected.leg.answered().cloned() {
            end_dialog(&self.ctx, dialog);
        }
        self.forget_leg(&connected.leg);
        self.playing = None;
    }

    /// The call is over: every agent leg ends, the router learns it.
    pub(super) fn leave(&mut self, released_by: ReleasedBy) {
        self.end_consult("call_ended");
        self.end_monitor("call_ended", true);
        self.core_do(CoreInput::Ended(released_by));
        for mut leg in std::mem::take(&mut self.acd.legs) {
            leg.cancel_ringing(None);
            self.forget_leg(&leg);
        }
        if let Some(connected) = self.acd.connected.take() {
            self.forget_leg(&connected.leg);
        }
    }
}
