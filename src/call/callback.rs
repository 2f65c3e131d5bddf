//! Leave-a-number callback (rulebook C3): after `callback_after` in queue the
//! caller hears how to leave its number; on the key, the number it called
//! from is checked against the trunk's dial plan, read back, and recorded
//! only once the caller confirms it (a refused number, or one the caller
//! does not want, is replaced by one keyed in). The caller hangs up, and the
//! call keeps its place in the queue. When an agent answers it, hotline
//! calls the customer through the trunk the call came in on (its `outbound`
//! address), within the trunk's outbound ceilings, and bridges the two.

use rsipstack::dialog::dialog::TerminatedReason;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Actor;
use super::agent_leg::{self, Dial, ForkFinal, ForkStatus, Target};
use super::core::Input as CoreInput;
use super::core::callback::{CustomerRinging, EntryStep, NumberEntry, Proposal};
use crate::events::{Event, ReleasedBy};
use crate::media::sdp;
use crate::sip::dialplan::{DialRefusal, OutboundPermit};

/// The most characters of a refused number an event carries.
const MAX_SHOWN_NUMBER: usize = 32;

/// A callback in progress.
pub struct Callback {
    /// The number to call back, in E.164 ("+" and digits).
    pub number: String,
    /// The INVITE to the customer, once an agent answered.
    pub customer: Option<agent_leg::Fork>,
    /// The customer's phone rings (its ring limit counts from the dial).
    pub ringing: Option<CustomerRinging>,
    /// The outbound call counted against the trunk's ceilings while it lasts.
    pub permit: Option<OutboundPermit>,
}

impl Actor {
    /// Whether `digit` asks for a callback now.
    pub(super) fn is_callback_key(&self, digit: char) -> bool {
        self.core.queued()
            && self.core.callback_offered()
            && self.acd.legs.is_empty()
            && self
                .core
                .place()
                .and_then(|p| self.ctx.settings.queues.get(&p.queue))
                .is_some_and(|q| q.callback_key == digit)
    }

    /// The caller pressed the key: the number it calls from is proposed.
    pub(super) fn request_callback(&mut self) {
        self.acd.number_entry = Some(NumberEntry::start(Instant::now().into_std()));
        self.core_do(CoreInput::NumberEntryStarted);
        let caller = self.acd.caller.clone();
        self.propose_number(&caller);
    }

    /// Checks a number against the trunk's dial plan: an allowed one is read
    /// back for confirmation, a refused one is an event and the caller is
    /// asked for another.
    fn propose_number(&mut self, number: &str) {
        let checked = self.acd.trunk.dialplan.check(number);
        let Some(entry) = self.acd.number_entry.as_mut() else {
            return;
        };
        let refusal = checked.as_ref().err().copied();
        match entry.propose(number, checked, Instant::now().into_std()) {
            Proposal::ReadBack(prompts) => self.play(&prompts, false),
            Proposal::Refused { give_up } => {
                if let Some(reason) = refusal {
                    self.outbound_refused(number, reason);
                }
                if give_up {
                    self.number_entry_given_up();
                } else {
                    self.play(&["callback_number_refused".to_string()], false);
                }
            }
        }
    }

    /// A key while the caller gives its number: the confirmation key takes
    /// the number read back, or ends a keyed-in number; `*` starts over.
    pub(super) fn on_number_entry_digit(&mut self, digit: char) {
        let Some(entry) = self.acd.number_entry.as_mut() else {
            return;
        };
        match entry.key(digit, Instant::now().into_std()) {
            EntryStep::Confirmed(number) => {
                self.acd.number_entry = None;
                self.record_callback(number);
            }
            EntryStep::Propose(keyed) => self.propose_number(&keyed),
            EntryStep::StopReadBack => {
                self.playing = None;
                self.media.stream.stop();
            }
            EntryStep::Nothing => {}
        }
    }

    /// Nothing keyed for too long: the caller goes on waiting, and may
    /// press the callback key again.
    pub(super) fn number_entry_timed_out(&mut self) {
        debug!("no callback number given in time");
        self.number_entry_given_up();
    }

    fn number_entry_given_up(&mut self) {
        self.acd.number_entry = None;
        if self.core.queued() {
            self.playing = None;
            self.after_prompt();
        }
    }

    /// A number hotline will not dial: an event (counted by trunk and reason).
    fn outbound_refused(&self, number: &str, reason: DialRefusal) {
        info!(trunk = %self.acd.trunk.name, reason = reason.as_str(), "outbound number refused");
        self.ctx.bus.publish(Event::OutboundRefused {
            call_id: self.call_id.clone(),
            trunk: self.acd.trunk.name.clone(),
            // A caller's From can be any text: the event keeps a bounded part.
            number: number.chars().take(MAX_SHOWN_NUMBER).collect(),
            reason: reason.as_str().to_string(),
        });
    }

    /// The caller confirmed `number`: it is recorded, the caller hears so
    /// and is hung up; the call stays in the router with its place.
    fn record_callback(&mut self, number: String) {
        let queue = self
            .core
            .place()
            .map(|p| p.queue.clone())
            .unwrap_or_default();
        info!(%queue, "callback requested");
        self.ctx.bus.publish(Event::CallbackRequested {
            call_id: self.call_id.clone(),
            queue,
            number: number.clone(),
        });
        self.acd.callback = Some(Callback {
            number,
            customer: None,
            ringing: None,
            permit: None,
        });
        self.core_do(CoreInput::CallbackRecorded);
        self.play(&["callback_recorded".to_string()], false);
    }

    /// The confirmation was heard: the caller is hung up, the place kept.
    pub(super) fn callback_recorded(&mut self) {
        self.media.stream.stop();
        let dialog = self.caller_dialog.clone();
        tokio::spawn(async move {
            let _ = dialog.bye().await;
        });
    }

    /// A dialog on the caller's side ended while a callback is under way:
    /// the caller's own hang-up is expected; the customer's ends the call.
    pub(super) fn callback_dialog_ended(
        &mut self,
        reason: &TerminatedReason,
    ) -> Option<ReleasedBy> {
        if self.core.caller_gone_for_callback() {
            return None;
        }
        Some(match reason {
            TerminatedReason::UasBye | TerminatedReason::UacBye => ReleasedBy::Caller,
            _ => ReleasedBy::System,
        })
    }

    pub(super) fn is_customer_fork(&self, fork: &str) -> bool {
        self.acd
            .callback
            .as_ref()
            .and_then(|c| c.customer.as_ref())
            .is_some_and(|f| f.call_id == fork)
    }

    /// The agent answered the callback: call the customer through the trunk.
    pub(super) fn dial_customer(&mut self) {
        let (Some(outbound), Some(callback)) = (self.acd.trunk_outbound, &self.acd.callback) else {
            return;
        };
        let number = callback.number.clone();
        // Every number dialled out passes the dial plan and the ceilings here.
        let admitted = self.acd.trunk.dialplan.check(&number).and_then(|_| {
            self.ctx.outbound.admit(
                &self.acd.trunk.name,
                self.acd.trunk.outbound_limits,
                Instant::now(),
            )
        });
        let permit = match admitted {
            Ok(permit) => permit,
            Err(reason) => {
                self.outbound_refused(&number, reason);
                self.callback_failed(None);
                return;
            }
        };
        if let Some(connected) = self.acd.connected.as_mut() {
            let hold = self
                .ctx
                .media
                .playlist(&self.language, &["please_hold".to_string()]);
            connected.leg.media.stream.play(hold, false);
        }
        let offer = self.media.offer();
        let uri = format!("sip:{}@{outbound}", agent_leg::caller_user(&number));
        let dial = Dial {
            from_user: &self.acd.number,
            display: None,
            header: None,
            session_timer: Vec::new(),
        };
        let target = Target {
            uri: &uri,
            address: outbound,
            tcp: false,
        };
        info!(%number, %outbound, "calling the customer back");
        match agent_leg::ring(
            &self.ctx,
            target,
            &dial,
            offer,
            self.acd.states.clone(),
            self.acd.finals.0.clone(),
        ) {
            Ok(fork) => {
                if let Some(callback) = self.acd.callback.as_mut() {
                    callback.customer = Some(fork);
                    callback.ringing = Some(CustomerRinging {
                        since: Instant::now().into_std(),
                    });
                    callback.permit = Some(permit);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot call the customer back");
                self.callback_failed(None);
            }
        }
    }

    /// The customer's phone answered, or did not.
    pub(super) fn on_customer_final(&mut self, fin: ForkFinal) {
        let Some(callback) = self.acd.callback.as_mut() else {
            return;
        };
        callback.ringing = None;
        let Some(fork) = callback.customer.as_mut() else {
            return;
        };
        match fin.response {
            Some(response) if agent_leg::is_success(&response) => {
                fork.status = ForkStatus::Answered;
                let dialog = fork.dialog.clone();
                let call_id = fork.call_id.clone();
                if let Err(e) =
                    sdp::parse(&response.body).and_then(|a| self.media.accept_answer(&a))
                {
                    warn!(error = %e, "the customer answered with unusable SDP");
                    super::acd::end_dialog(&self.ctx, dialog);
                    self.callback_failed(None);
                    return;
                }
                self.caller_dialog = dialog.clone();
                self.acd.caller_sip_call_id = call_id;
                self.ctx.calls.register_dialog(&self.call_id, dialog);
                let agent = self
                    .acd
                    .connected
                    .as_ref()
                    .map(|c| c.leg.agent.0.clone())
                    .unwrap_or_default();
                info!(%agent, "callback connected");
                self.ctx.bus.publish(Event::CallbackCompleted {
                    call_id: self.call_id.clone(),
                    agent,
                    number: callback_number(&self.acd.callback),
                });
                self.media_started();
                self.bridge();
            }
            other => {
                if fork.status == ForkStatus::Ringing {
                    fork.status = ForkStatus::Failed(other.as_ref().map(agent_leg::code));
                }
                self.callback_failed(other.as_ref().map(agent_leg::code));
            }
        }
    }

    /// The customer's phone rang too long.
    pub(super) fn customer_unanswered(&mut self) {
        if let Some(callback) = self.acd.callback.as_mut() {
            callback.ringing = None;
            if let Some(fork) = callback.customer.as_mut()
                && fork.status == ForkStatus::Ringing
            {
                fork.status = ForkStatus::Cancelled;
                let dialog = fork.dialog.clone();
                tokio::spawn(async move {
                    let _ = dialog.cancel().await;
                });
            }
        }
        self.callback_failed(Some(408));
    }

    /// The customer could not be reached: the agent is released.
    fn callback_failed(&mut self, status: Option<u16>) {
        warn!(?status, "the callback did not reach the customer");
        self.ctx.bus.publish(Event::CallbackFailed {
            call_id: self.call_id.clone(),
            number: callback_number(&self.acd.callback),
            status,
        });
        self.acd.released = Some(ReleasedBy::System);
    }
}

fn callback_number(callback: &Option<Callback>) -> String {
    callback
        .as_ref()
        .map(|c| c.number.clone())
        .unwrap_or_default()
}
