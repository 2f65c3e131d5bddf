//! The call actor's queue, agent legs and bridge: it queues the caller with the
//! router, rings the agents the router offers, takes the first answer the router
//! accepts, announces the agent's number, relays audio both ways, watches holds
//! against the hold limit, and tells the router how the call ended.

use std::sync::Arc;

use rsipstack::dialog::dialog::{DialogState, DialogStateSender, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Request, StatusCode};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::agent_leg::{self, AgentLeg, ForkFinal, ForkStatus};
use super::policy::{CallPolicy, HoldClock, HoldStep};
use super::relay::{LegFormat, relay};
use super::{Actor, CallCommand, Phase, sdp_header};
use crate::acd::{AgentId, CallId, Caller, Command, Outcome, QueueId, QueuePosition, RouterError};
use crate::config::{HoldAction, Overflow};
use crate::events::{Event, ReleasedBy};
use crate::media::sdp;
use crate::sip::EdgeContext;

/// One of the two parties of a bridged call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Agent,
}

/// The caller's place in a queue.
pub struct QueueWait {
    pub queue: String,
    /// When the caller first joined a queue: its waited time survives overflow
    /// and failed offers.
    pub first: Instant,
}

/// The agent who answered, and the bridge to it.
pub struct Connected {
    pub leg: AgentLeg,
    pub answered_at: Instant,
    /// The call as the router knows this agent's part of it: the call's own
    /// id, or its consultation's when a consulted agent took the call over.
    pub router_call: CallId,
    /// Caller's and agent's formats once both are known.
    formats: Option<(LegFormat, LegFormat)>,
    buf: Vec<u8>,
    holds: u32,
    hold_total: std::time::Duration,
}

impl Connected {
    pub fn new(leg: AgentLeg, answered_at: Instant, router_call: CallId) -> Connected {
        Connected {
            leg,
            answered_at,
            router_call,
            formats: None,
            buf: vec![0; 2048],
            holds: 0,
            hold_total: std::time::Duration::ZERO,
        }
    }
}

/// A hold in progress.
pub(super) struct Hold {
    clock: HoldClock,
    by: &'static str,
    /// The caller hears music again when the alert prompt ends.
    alerting: bool,
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
    pub(super) mailbox: mpsc::UnboundedSender<CallCommand>,
    pub commands: mpsc::UnboundedReceiver<CallCommand>,
    pub(super) states: DialogStateSender,
    pub finals: (
        mpsc::UnboundedSender<ForkFinal>,
        mpsc::UnboundedReceiver<ForkFinal>,
    ),
    pub wait: Option<QueueWait>,
    /// The router knows the call (waiting, offered or connected).
    pub(super) in_router: bool,
    /// Agents being rung.
    pub(super) legs: Vec<AgentLeg>,
    pub connected: Option<Connected>,
    pub(super) hold: Option<Hold>,
    /// Held over the CTI API (counts as the agent's hold).
    pub(super) api_hold: bool,
    /// The caller waits on hold while the agent consults someone.
    pub(super) consult_hold: bool,
    /// Legs with a re-INVITE of hotline's in flight (glare).
    pub(super) reinvites: super::glare::PendingReinvites,
    /// Transfers so far (rulebook L6).
    pub(super) transfers: u32,
    /// The agent the next queueing offers the call to first (a transfer).
    pub(super) direct_to: Option<AgentId>,
    /// Set when the agent ended the call: the actor's loop returns it.
    pub released: Option<ReleasedBy>,
    /// Forks of legs given up (ring limit, withdrawn, lost the race), by
    /// Call-ID: a 2xx that beat our CANCEL is ended with BYE.
    pub(super) given_up: std::collections::HashMap<String, InviteDialog>,
    /// The queue's `max_wait`, counted from joining this queue.
    pub(super) max_wait_at: Option<Instant>,
    /// The next announcement of position and estimated wait.
    pub(super) announce_at: Option<Instant>,
    /// Where the trunk the call came in on takes hotline's own calls.
    pub(super) trunk_outbound: Option<std::net::SocketAddr>,
    /// The trunk the call came in on: its dial plan and outbound ceilings.
    pub(super) trunk: crate::config::Trunk,
    /// The caller is giving or confirming the number to be called back on.
    pub(super) number_entry: Option<super::callback::NumberEntry>,
    /// When the caller is offered to leave a number (C3).
    pub(super) callback_offer_at: Option<Instant>,
    /// The caller heard the offer and may press the key.
    pub(super) callback_offered: bool,
    /// The caller left its number: the call keeps its place without them.
    pub(super) callback: Option<super::callback::Callback>,
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
        trunk: &crate::config::Trunk,
        caller: String,
        number: String,
        mailbox: mpsc::UnboundedSender<CallCommand>,
        commands: mpsc::UnboundedReceiver<CallCommand>,
        states: DialogStateSender,
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
            wait: None,
            in_router: false,
            legs: Vec::new(),
            connected: None,
            hold: None,
            api_hold: false,
            consult_hold: false,
            reinvites: Default::default(),
            transfers: 0,
            direct_to: None,
            released: None,
            given_up: std::collections::HashMap::new(),
            max_wait_at: None,
            announce_at: None,
            trunk_outbound: trunk.outbound,
            trunk: trunk.clone(),
            number_entry: None,
            callback_offer_at: None,
            callback_offered: false,
            callback: None,
            caller_sip_call_id: call_id,
            recording: crate::recording::CallRecording::new(),
        }
    }

    /// The socket the answered agent's RTP arrives on.
    pub fn agent_rtp(&self) -> Option<Arc<UdpSocket>> {
        self.connected.as_ref().map(|c| c.leg.media.rtp.clone())
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let ring = self.legs.iter().map(|l| l.ring_deadline).min();
        let hold = self.hold.as_ref().map(|h| h.clock.deadline());
        let customer = self.callback.as_ref().and_then(|c| c.deadline);
        let entry = self.number_entry.as_ref().map(|e| e.deadline);
        [
            entry,
            ring,
            hold,
            self.max_wait_at,
            self.announce_at,
            self.callback_offer_at,
            customer,
            self.recording.flush_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::NoAnswer => "no_answer",
        Outcome::Busy => "busy",
        Outcome::Declined => "declined",
        Outcome::Unreachable => "unreachable",
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

    /// Puts the caller in `queue` with music on hold and hands it to the router.
    pub(super) fn enter_queue(&mut self, queue: &str) {
        info!(%queue, "caller waits in queue (music on hold)");
        let moh = self
            .ctx
            .media
            .music_on_hold(self.ctx.settings.queues.get(queue));
        self.playing = None;
        self.media.stream.play(moh, true);
        self.phase = Phase::Queued;
        let now = Instant::now();
        let first = self.acd.wait.as_ref().map_or(now, |w| w.first);
        self.acd.wait = Some(QueueWait {
            queue: queue.to_string(),
            first,
        });
        let config = self.ctx.settings.queues.get(queue);
        self.acd.max_wait_at = config.and_then(|q| q.max_wait).map(|d| now + d);
        self.acd.announce_at = config
            .and_then(|q| q.announce_position_every)
            .map(|d| now + d);
        self.acd.callback_offer_at = config
            .and_then(|q| q.callback_after)
            .filter(|_| self.acd.trunk_outbound.is_some() && self.acd.callback.is_none())
            .map(|d| now + d);
        self.ctx.bus.publish(Event::CallQueued {
            call_id: self.call_id.clone(),
            queue: queue.to_string(),
            waited_ms: ms(now - first),
        });
        if self.ctx.calls.is_paused(queue) {
            let _ = self.acd.mailbox.send(CallCommand::Paused);
            return;
        }
        let caller = Caller {
            call: self.call(),
            queue: QueueId::from(queue),
            priority: self.acd.priority,
            enqueued_at: first.into_std(),
            skills: self.acd.skills.clone(),
        };
        self.acd.in_router = true;
        let router = self.ctx.router.clone();
        let mailbox = self.acd.mailbox.clone();
        let direct = self.acd.direct_to.take();
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
                let _ = mailbox.send(CallCommand::Refused(refused));
            }
        });
    }

    pub(super) async fn on_command(&mut self, command: CallCommand) {
        match command {
            CallCommand::Offer { agents, queue } => {
                for agent in agents {
                    self.offer(agent, &queue).await;
                }
            }
            CallCommand::Cancel { agent } => {
                if let Some(i) = self.acd.legs.iter().position(|l| l.agent == agent) {
                    let mut leg = self.acd.legs.swap_remove(i);
                    info!(agent = %agent, "offer withdrawn");
                    leg.cancel_ringing(None);
                    self.forget_leg(&leg);
                }
            }
            CallCommand::Refused(error) => {
                info!(error = %error, "the router refused the caller");
                self.acd.in_router = false;
                let reason = match error {
                    RouterError::QueueFull { .. } => "max_len",
                    RouterError::NoAgents { .. } => "no_agents",
                    _ => "refused",
                };
                self.overflow(reason).await;
            }
            CallCommand::Position(position) => self.announce_position(position),
            CallCommand::Paused => self.overflow("paused").await,
            CallCommand::Hangup => {
                info!("hung up over the CTI API");
                end_dialog(&self.ctx, self.caller_dialog.clone());
                self.acd.released = Some(ReleasedBy::System);
            }
            CallCommand::Hold(hold) => {
                self.acd.api_hold = hold;
                self.hold_changed();
            }
            CallCommand::Transfer { target, reply } => {
                let _ = reply.send(self.transfer(target));
            }
            CallCommand::Resumed { side, answer } => {
                self.acd.reinvites.finish(side);
                self.on_resumed(side, answer);
            }
            CallCommand::ResumeCrossed { side, attempt } => self.resume_crossed(side, attempt),
            CallCommand::ResumeAgain { side, attempt } => self.resume_again(side, attempt),
            CallCommand::Refreshed { side, result } => self.on_refreshed(side, result),
            CallCommand::Monitor(command) => self.on_monitor_command(command).await,
            CallCommand::Consult(command) => self.on_consult_command(command).await,
            CallCommand::ConsultLeg(pending) => self.consult_leg_ready(*pending),
        }
    }

    /// Rings every registered phone of `agent`.
    async fn offer(&mut self, agent: AgentId, queue: &QueueId) {
        let now = Instant::now();
        let bindings = self.ctx.registrar.contacts(&agent.0);
        let mut leg = None;
        if !bindings.is_empty() && self.acd.connected.is_none() {
            leg = self.ring_agent(&agent, &queue.0, &bindings, now).await;
        }
        let contacts = leg.as_ref().map_or(0, |l: &AgentLeg| l.forks.len());
        info!(agent = %agent, %queue, contacts, "offering the call");
        self.ctx.bus.publish(Event::CallOffered {
            call_id: self.call_id.clone(),
            agent: agent.0.clone(),
            queue: queue.0.clone(),
            caller: self.acd.caller.clone(),
            number: self.acd.number.clone(),
            contacts,
            vars: self.acd.ivr_vars.clone(),
        });
        match leg {
            Some(leg) => self.acd.legs.push(leg),
            None => self.offer_failed(&agent, &queue.0, Outcome::Unreachable, now, now),
        }
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

    fn offer_failed(
        &mut self,
        agent: &AgentId,
        queue: &str,
        outcome: Outcome,
        offered_at: Instant,
        now: Instant,
    ) {
        info!(agent = %agent, outcome = outcome_name(outcome), "offer failed");
        self.ctx.bus.publish(Event::OfferFailed {
            call_id: self.call_id.clone(),
            agent: agent.0.clone(),
            queue: queue.to_string(),
            outcome: outcome_name(outcome),
            ring_ms: ms(now - offered_at),
        });
        self.tell_router(Command::OfferFailed(self.call(), agent.clone(), outcome));
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

    pub(super) async fn on_fork_final(&mut self, fin: ForkFinal) {
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
                self.settle_leg(i, now);
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
            self.settle_leg(i, now);
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
        let leg = &mut self.acd.legs[i];
        if !accepted || self.acd.connected.is_some() {
            info!(agent = %agent, "answer refused: the call went elsewhere");
            if let Some(fork) = leg.fork_mut(&fin.fork) {
                fork.status = ForkStatus::Failed(None);
            }
            end_dialog(&self.ctx, dialog);
            if !leg.ringing() {
                // The router already settled this agent (released or failed).
                let leg = self.acd.legs.swap_remove(i);
                self.forget_leg(&leg);
            }
            return;
        }
        if let Some(fork) = leg.fork_mut(&fin.fork) {
            fork.status = ForkStatus::Answered;
        }
        self.acd.max_wait_at = None;
        self.acd.announce_at = None;
        leg.cancel_ringing(Some(&fin.fork));
        let leg = self.acd.legs.swap_remove(i);
        // Any other agent still ringing lost the race.
        for mut other in std::mem::take(&mut self.acd.legs) {
            other.cancel_ringing(None);
            self.forget_leg(&other);
        }
        let waited = self
            .acd
            .wait
            .as_ref()
            .map_or(std::time::Duration::ZERO, |w| now - w.first);
        let late = now > leg.ring_deadline;
        info!(agent = %agent, waited_ms = ms(waited), late, "agent answered");
        self.ctx.bus.publish(Event::CallConnected {
            call_id: self.call_id.clone(),
            agent: agent.0.clone(),
            queue: leg.queue.clone(),
            waited_ms: ms(waited),
            ring_ms: ms(now - leg.offered_at),
            late,
        });
        let announce = self
            .ctx
            .settings
            .queues
            .get(&leg.queue)
            .is_none_or(|q| q.announce_agent);
        self.acd.connected = Some(Connected::new(leg, now, self.call()));
        self.lifetime.agent_session = super::timer_settings(&self.ctx).map(|timers| {
            let (interval, we_refresh) =
                super::session_timer::from_answer(&response, timers.session_expires);
            super::lifetime::LegSession {
                timer: super::session_timer::SessionTimer::start(interval, we_refresh, now),
                allows_update: super::session_timer::allows_update(&response.headers),
            }
        });
        let digits: Vec<String> = agent
            .0
            .chars()
            .filter(char::is_ascii_digit)
            .map(|d| format!("digit_{d}"))
            .collect();
        self.acd.number_entry = None;
        if self.acd.callback.is_some() {
            // A callback: the agent is on the line, now the customer is called.
            self.dial_customer();
        } else if announce && !digits.is_empty() {
            let mut prompts = vec!["agent_number".to_string()];
            prompts.extend(digits);
            prompts.push("will_serve_you".to_string());
            self.phase = Phase::Announcing;
            self.play(&prompts, false);
        } else {
            self.bridge();
        }
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
    fn settle_leg(&mut self, i: usize, now: Instant) {
        if self.acd.legs[i].ringing() {
            return;
        }
        let leg = self.acd.legs.swap_remove(i);
        let outcome = leg.failure();
        self.offer_failed(&leg.agent, &leg.queue, outcome, leg.offered_at, now);
        self.forget_leg(&leg);
    }

    /// Connects caller and agent: the caller's music stops, audio is relayed.
    pub(super) fn bridge(&mut self) {
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        self.playing = None;
        self.media.stream.stop();
        connected.leg.media.stream.stop();
        self.phase = Phase::Bridged;
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
        self.lifetime.connected(connected.answered_at, queue_max);
        self.start_recording();
        self.hold_changed();
    }

    /// After a prompt over the bridge or the queue (hold alert, queue
    /// announcements), the music comes back when the caller still waits.
    pub(super) fn after_prompt(&mut self) {
        let alerting = self.acd.hold.as_ref().is_some_and(|h| h.alerting);
        if matches!(self.phase, Phase::Queued) || alerting {
            if let Some(hold) = self.acd.hold.as_mut() {
                hold.alerting = false;
            }
            let queue = self.acd.wait.as_ref().map(|w| w.queue.clone());
            let moh = self
                .ctx
                .media
                .music_on_hold(queue.and_then(|q| self.ctx.settings.queues.get(&q)));
            self.media.stream.play(moh, true);
        }
    }

    fn queue_moh(&self) -> Vec<Arc<crate::media::prompt::Prompt>> {
        let queue = self.acd.wait.as_ref().map(|w| w.queue.as_str());
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
                let _ = mailbox.send(CallCommand::Position(position));
            }
        });
    }

    /// "Your position in the queue is N. The estimated waiting time is M
    /// minutes." over the music, which resumes after it.
    fn announce_position(&mut self, position: Option<QueuePosition>) {
        let every = self
            .acd
            .wait
            .as_ref()
            .and_then(|w| self.ctx.settings.queues.get(&w.queue))
            .and_then(|q| q.announce_position_every);
        if !matches!(self.phase, Phase::Queued) {
            return;
        }
        self.acd.announce_at = every.map(|d| Instant::now() + d);
        if self.acd.number_entry.is_some() {
            return;
        }
        // Not while an agent's phone rings: the caller may be connected any moment.
        let Some(position) = position.filter(|_| self.acd.legs.is_empty()) else {
            return;
        };
        let digits = |n: u64| {
            n.to_string()
                .chars()
                .map(|d| format!("digit_{d}"))
                .collect::<Vec<_>>()
        };
        let mut prompts = vec!["position".to_string()];
        prompts.extend(digits(position.position as u64));
        if let Some(wait) = position.estimated_wait {
            let minutes = wait.as_secs().div_ceil(60).max(1);
            prompts.push("estimated_wait".to_string());
            prompts.extend(digits(minutes));
            prompts.push("minutes".to_string());
        }
        self.ctx.bus.publish(Event::PositionAnnounced {
            call_id: self.call_id.clone(),
            queue: position.queue.0.clone(),
            position: position.position,
            estimated_wait_secs: position.estimated_wait.map(|d| d.as_secs()),
        });
        self.play(&prompts, false);
    }

    /// Starts or ends a hold after either side's new offer.
    pub(super) fn hold_changed(&mut self) {
        if !matches!(self.phase, Phase::Bridged) {
            return;
        }
        let moh = self.queue_moh();
        let caller_holds = self.media.on_hold();
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        let agent_holds =
            connected.leg.media.on_hold() || self.acd.api_hold || self.acd.consult_hold;
        let now = Instant::now();
        let agent = connected.leg.agent.clone();
        let router_call = connected.router_call.clone();
        match (self.acd.hold.is_some(), agent_holds || caller_holds) {
            (false, true) => {
                let by = if self.acd.consult_hold {
                    "consult"
                } else if self.acd.api_hold {
                    "api"
                } else if agent_holds {
                    "agent"
                } else {
                    "caller"
                };
                info!(by, "call on hold");
                connected.holds += 1;
                // The held side hears music, never silence.
                if agent_holds {
                    self.media.stream.play(moh, true);
                } else {
                    connected.leg.media.stream.play(moh, true);
                }
                self.acd.hold = Some(Hold {
                    clock: HoldClock::new(
                        now,
                        self.acd.policy.hold_limit,
                        self.acd.policy.hold_warning_before,
                    ),
                    by,
                    alerting: false,
                });
                self.ctx.bus.publish(Event::HoldStarted {
                    call_id: self.call_id.clone(),
                    agent: agent.0.clone(),
                    by,
                });
                self.tell_router(Command::HoldStarted(router_call, agent));
            }
            (true, false) => self.end_hold(),
            _ => {}
        }
    }

    /// Ends the hold in progress, whatever the phones' media say (off hold,
    /// or the agent who held hands the call over).
    pub(super) fn end_hold(&mut self) {
        let Some(connected) = self.acd.connected.as_mut() else {
            self.acd.hold = None;
            return;
        };
        let Some(hold) = self.acd.hold.take() else {
            return;
        };
        let held = hold.clock.held(Instant::now());
        connected.hold_total += held;
        connected.leg.media.stream.stop();
        self.playing = None;
        self.media.stream.stop();
        info!(held_ms = ms(held), "call off hold");
        let agent = connected.leg.agent.clone();
        let router_call = connected.router_call.clone();
        self.ctx.bus.publish(Event::HoldEnded {
            call_id: self.call_id.clone(),
            agent: agent.0.clone(),
            held_ms: ms(held),
        });
        self.tell_router(Command::HoldEnded(router_call, agent));
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

    pub(super) fn relay_from_caller(&mut self, packet: &[u8]) {
        let format = self.media.negotiated().map(|n| (n.codec, n.payload_type));
        (self.acd.recording).caller(packet, format, self.acd.hold.is_some());
        if !matches!(self.phase, Phase::Bridged) || self.acd.hold.is_some() {
            return;
        }
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        let (Some((from, to)), Some(dst)) = (connected.formats, connected.leg.media.remote())
        else {
            return;
        };
        let relayed = match self.monitor.as_mut() {
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
            (self.acd.recording).agent(packet, format, self.acd.hold.is_some());
        }
        if accepted && self.consult.as_ref().is_some_and(|c| c.over_call_leg()) {
            self.relay_to_consultant(packet);
            return;
        }
        let Some(connected) = self.acd.connected.as_mut() else {
            return;
        };
        if !accepted || !matches!(self.phase, Phase::Bridged) || self.acd.hold.is_some() {
            return;
        }
        let (Some((caller, agent)), Some(dst)) = (connected.formats, self.media.remote()) else {
            return;
        };
        let relayed = match self.monitor.as_mut() {
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

    /// A state change or request in an agent's dialog.
    pub(super) async fn on_agent_dialog(&mut self, state: DialogState) {
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

    /// Ring limits and the hold clock.
    pub(super) async fn on_acd_timers(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut i = 0;
        while i < self.acd.legs.len() {
            if self.acd.legs[i].ring_deadline <= now {
                expired.push(self.acd.legs.swap_remove(i));
            } else {
                i += 1;
            }
        }
        for mut leg in expired {
            info!(agent = %leg.agent, "ring limit reached: CANCEL");
            leg.cancel_ringing(None);
            self.offer_failed(
                &leg.agent,
                &leg.queue,
                Outcome::NoAnswer,
                leg.offered_at,
                now,
            );
            self.forget_leg(&leg);
        }
        if self.acd.max_wait_at.is_some_and(|t| t <= now) {
            self.acd.max_wait_at = None;
            self.overflow("max_wait").await;
        }
        if self.acd.announce_at.is_some_and(|t| t <= now) {
            self.acd.announce_at = None;
            self.ask_position();
        }
        if self.acd.callback_offer_at.is_some_and(|t| t <= now) {
            self.acd.callback_offer_at = None;
            self.offer_callback();
        }
        if self
            .acd
            .number_entry
            .as_ref()
            .is_some_and(|e| e.deadline <= now)
        {
            self.number_entry_timed_out();
        }
        if self
            .acd
            .callback
            .as_ref()
            .and_then(|c| c.deadline)
            .is_some_and(|t| t <= now)
        {
            self.customer_unanswered();
        }
        self.acd.recording.tick(now, self.acd.hold.is_some());
        while let Some(step) = self.acd.hold.as_mut().and_then(|h| h.clock.step(now)) {
            self.on_hold_step(step).await;
        }
    }

    async fn on_hold_step(&mut self, step: HoldStep) {
        let Some(connected) = self.acd.connected.as_ref() else {
            return;
        };
        let agent = connected.leg.agent.0.clone();
        match step {
            HoldStep::Warning { held } => {
                info!(held_ms = ms(held), "hold limit comes soon");
                self.ctx.bus.publish(Event::HoldWarning {
                    call_id: self.call_id.clone(),
                    agent,
                    held_ms: ms(held),
                });
            }
            HoldStep::Limit { held, count } => {
                let action = self.acd.policy.hold_action;
                warn!(held_ms = ms(held), count, ?action, "hold limit reached");
                self.ctx.bus.publish(Event::HoldLimitReached {
                    call_id: self.call_id.clone(),
                    agent,
                    held_ms: ms(held),
                    action: action.as_str(),
                    count,
                });
                match action {
                    HoldAction::Alert => self.hold_alert(held),
                    HoldAction::Resume => self.hold_resume(),
                    HoldAction::Requeue => self.hold_requeue(),
                }
            }
        }
    }

    /// The caller leaves its queue for the queue's overflow target (max_wait,
    /// max_len or no agents logged in).
    pub(super) async fn overflow(&mut self, reason: &'static str) {
        let Some(wait) = self.acd.wait.as_ref() else {
            return;
        };
        let queue = wait.queue.clone();
        let waited = Instant::now() - wait.first;
        if self.acd.in_router {
            // The router settles a pending offer; an answer that won the race stays.
            if !matches!(
                self.ctx.router.request(Command::Dequeue(self.call())).await,
                Ok(Ok(()))
            ) || self.acd.connected.is_some()
            {
                return;
            }
            self.acd.in_router = false;
        }
        for mut leg in std::mem::take(&mut self.acd.legs) {
            leg.cancel_ringing(None);
            self.forget_leg(&leg);
        }
        self.acd.max_wait_at = None;
        self.acd.announce_at = None;
        self.acd.callback_offer_at = None;
        self.acd.number_entry = None;
        let config = self.ctx.settings.queues.get(&queue);
        let target = config.map(|q| q.overflow.clone()).unwrap_or_default();
        let prompt = config.and_then(|q| q.overflow_prompt.clone());
        info!(%queue, reason, %target, "caller overflows");
        self.ctx.bus.publish(Event::CallOverflowed {
            call_id: self.call_id.clone(),
            queue,
            reason,
            target: target.to_string(),
            waited_ms: ms(waited),
        });
        match target {
            Overflow::Hangup => {
                self.playing = None;
                self.media.stream.stop();
                if let Some(prompt) = prompt {
                    self.play(&[prompt], false);
                }
                self.phase = Phase::Ended;
            }
            Overflow::Queue(next) => match prompt {
                Some(prompt) if reason != "max_wait" => {
                    self.phase = Phase::Greeting(next);
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
    fn hold_alert(&mut self, held: std::time::Duration) {
        let by_agent = self.acd.hold.as_ref().is_some_and(|h| h.by == "agent");
        if by_agent {
            self.play(&["thank_you_for_waiting".to_string()], false);
            if let Some(hold) = self.acd.hold.as_mut() {
                hold.alerting = true;
            }
        }
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
                self.acd.policy.hold_limit.as_secs()
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
                    let _ = mailbox.send(CallCommand::ResumeCrossed { side, attempt });
                    return;
                }
                Ok(Some(resp)) if agent_leg::is_success(&resp) => Ok(resp.body),
                Ok(Some(resp)) => Err(format!("answered {}", agent_leg::code(&resp))),
                Ok(None) => Err("no answer".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = mailbox.send(CallCommand::Resumed { side, answer });
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
            wait_ms = ms(wait),
            "re-INVITE glare (491): trying again"
        );
        let mailbox = self.acd.mailbox.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = mailbox.send(CallCommand::ResumeAgain {
                side,
                attempt: attempt + 1,
            });
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
        if still_held && self.acd.hold.is_some() {
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
        if let Some(hold) = self.acd.hold.as_mut() {
            // Still on hold: the limit counts again from now.
            hold.clock = HoldClock::new(
                Instant::now(),
                self.acd.policy.hold_limit,
                self.acd.policy.hold_warning_before,
            );
        }
    }

    /// Blind transfer of the bridged call to a queue or a named agent: the
    /// agent is released (wrap-up), the caller joins the queue (its own, for
    /// an agent) keeping its waited time, offered first to the named agent.
    /// A transfer to the survey or to an IVR flow: see [`Self::transfer_from`].
    pub(super) fn transfer(&mut self, target: super::TransferTarget) -> Result<(), String> {
        self.transfer_from(target, true)
    }

    /// Why the call cannot be passed on now, if it cannot: no agent on it,
    /// or `acd.max_transfers` reached (rulebook L6).
    pub(super) fn transfer_refused(&self) -> Option<String> {
        if !matches!(self.phase, Phase::Bridged) || self.acd.connected.is_none() {
            return Some("only a call connected to an agent can be transferred".into());
        }
        let max = self.ctx.settings.acd.max_transfers;
        (self.acd.transfers >= max).then(|| {
            format!(
                "this call was transferred {} time(s) already; at most {max} (rulebook L6)",
                self.acd.transfers
            )
        })
    }

    /// [`Self::transfer`]; `end_agent` false leaves the agent's dialog to the
    /// agent's phone (a REFER's transferor hangs up by itself). The survey
    /// is no transfer: it is not counted against `acd.max_transfers`.
    pub(super) fn transfer_from(
        &mut self,
        target: super::TransferTarget,
        end_agent: bool,
    ) -> Result<(), String> {
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
                    return Err(format!("no IVR flow {flow}"));
                }
                (format!("ivr:{flow}"), None, Some(flow))
            }
        };
        if flow.is_none() && !self.ctx.settings.queues.contains_key(queue.as_str()) {
            return Err(format!("no queue {queue}"));
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
            return Err("no agent on the call".into());
        };
        self.end_consult("cancelled");
        self.end_monitor("transferred", true);
        self.acd.transfers += 1;
        info!(from = %connected.leg.queue, to = %queue, "call transferred");
        self.ctx.bus.publish(Event::CallTransferred {
            call_id: self.call_id.clone(),
            agent: connected.leg.agent.0.clone(),
            from_queue: connected.leg.queue.clone(),
            // An IVR flow is named as an overflow names it: "ivr:FLOW".
            to_queue: queue.clone(),
            to_agent: direct.as_ref().map(|a| a.0.clone()),
            count: self.acd.transfers,
        });
        self.playing = None;
        match flow {
            Some(flow) => {
                let mut vars = std::collections::BTreeMap::new();
                vars.insert("caller".to_string(), self.acd.caller.clone());
                vars.insert("number".to_string(), self.acd.number.clone());
                self.start_flow(&flow, None, vars);
            }
            None => {
                self.acd.direct_to = direct;
                self.enter_queue(&queue);
            }
        }
        Ok(())
    }

    /// Lets the connected agent go to wrap-up while the caller stays on the
    /// line: the release is published (its running hold included) and the
    /// router told. The agent's dialog is the caller's to end.
    pub(super) fn release_agent(&mut self, by: ReleasedBy) -> Option<Connected> {
        let connected = self.acd.connected.take()?;
        self.lifetime.disconnected();
        self.release_event(&connected, by);
        self.acd.hold = None;
        self.acd.api_hold = false;
        self.forget_leg(&connected.leg);
        self.tell_router(Command::CallEnded(
            connected.router_call.clone(),
            connected.leg.agent.clone(),
        ));
        self.acd.in_router = false;
        connected.leg.media.stream.stop();
        Some(connected)
    }

    /// The caller goes back to the head of its queue; the agent is released.
    fn hold_requeue(&mut self) {
        let Some(connected) = self.acd.connected.take() else {
            return;
        };
        self.lifetime.disconnected();
        self.end_consult("cancelled");
        self.end_monitor("requeued", true);
        self.acd.hold = None;
        if let Some(dialog) = connected.leg.answered().cloned() {
            end_dialog(&self.ctx, dialog);
        }
        self.release_event(&connected, ReleasedBy::System);
        self.forget_leg(&connected.leg);
        let agent = connected.leg.agent.clone();
        let queue = connected.leg.queue.clone();
        if connected.router_call == self.call() {
            self.tell_router(Command::Requeue(self.call(), agent));
        } else {
            // The agent took the call over from a consultation: the router
            // knows the call itself no more, so it queues afresh (keeping
            // its waited time).
            self.tell_router(Command::CallEnded(connected.router_call.clone(), agent));
            self.enter_queue(&queue);
            return;
        }
        self.phase = Phase::Queued;
        self.playing = None;
        let moh = self.queue_moh();
        self.media.stream.play(moh, true);
        let waited = self
            .acd
            .wait
            .as_ref()
            .map_or(0, |w| ms(Instant::now() - w.first));
        self.ctx.bus.publish(Event::CallQueued {
            call_id: self.call_id.clone(),
            queue,
            waited_ms: waited,
        });
    }

    pub(super) fn release_event(&self, connected: &Connected, by: ReleasedBy) {
        let now = Instant::now();
        let hold_now = self
            .acd
            .hold
            .as_ref()
            .map_or(std::time::Duration::ZERO, |h| h.clock.held(now));
        self.ctx.bus.publish(Event::CallReleased {
            call_id: self.call_id.clone(),
            agent: connected.leg.agent.0.clone(),
            queue: connected.leg.queue.clone(),
            released_by: by,
            talk_ms: ms(now - connected.answered_at),
            holds: connected.holds,
            hold_ms: ms(connected.hold_total + hold_now),
        });
    }

    /// The call is over: every agent leg ends, the router learns it.
    pub(super) fn leave(&mut self, released_by: ReleasedBy) {
        let now = Instant::now();
        self.end_consult("call_ended");
        self.end_monitor("call_ended", true);
        for mut leg in std::mem::take(&mut self.acd.legs) {
            leg.cancel_ringing(None);
            self.forget_leg(&leg);
        }
        if let Some(connected) = self.acd.connected.take() {
            if released_by != ReleasedBy::Agent
                && let Some(dialog) = connected.leg.answered().cloned()
            {
                end_dialog(&self.ctx, dialog);
            }
            self.release_event(&connected, released_by);
            self.forget_leg(&connected.leg);
            self.tell_router(Command::CallEnded(
                connected.router_call.clone(),
                connected.leg.agent.clone(),
            ));
        } else if self.acd.in_router {
            if let Some(wait) = &self.acd.wait {
                self.ctx.bus.publish(Event::CallAbandoned {
                    call_id: self.call_id.clone(),
                    queue: wait.queue.clone(),
                    waited_ms: ms(now - wait.first),
                });
            }
            self.tell_router(Command::Dequeue(self.call()));
        }
        self.acd.in_router = false;
    }
}
