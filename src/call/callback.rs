//! Leave-a-number callback (rulebook C3): after `callback_after` in queue the
//! caller hears how to leave its number; on the key the number is recorded,
//! the caller hangs up, and the call keeps its place in the queue. When an
//! agent answers it, hotline calls the customer through the trunk the call
//! came in on (its `outbound` address) and bridges the two.

use std::time::Duration;

use rsipstack::dialog::dialog::TerminatedReason;
use tokio::time::Instant;
use tracing::{info, warn};

use super::agent_leg::{self, Dial, ForkFinal, ForkStatus, Target};
use super::{Actor, Phase};
use crate::events::{Event, ReleasedBy};
use crate::media::sdp;

/// How long the called-back customer's phone may ring.
const CUSTOMER_RING_LIMIT: Duration = Duration::from_secs(30);

/// A callback in progress.
pub struct Callback {
    /// The number to call back (the caller's own number).
    pub number: String,
    /// The INVITE to the customer, once an agent answered.
    pub customer: Option<agent_leg::Fork>,
    /// When the customer's phone has rung long enough.
    pub deadline: Option<Instant>,
}

impl Actor {
    /// Whether `digit` asks for a callback now.
    pub(super) fn is_callback_key(&self, digit: char) -> bool {
        matches!(self.phase, Phase::Queued)
            && self.acd.callback_offered
            && self.acd.legs.is_empty()
            && self
                .acd
                .wait
                .as_ref()
                .and_then(|w| self.ctx.settings.queues.get(&w.queue))
                .is_some_and(|q| q.callback_key == digit)
    }

    /// "To leave your number and be called back, press 1."
    pub(super) fn offer_callback(&mut self) {
        if !matches!(self.phase, Phase::Queued) || !self.acd.legs.is_empty() {
            return;
        }
        self.acd.callback_offered = true;
        self.play(&["leave_number".to_string()], false);
    }

    /// The caller pressed the key: its number is recorded, it hears so and
    /// is hung up; the call stays in the router with its place.
    pub(super) fn request_callback(&mut self) {
        let queue = self
            .acd
            .wait
            .as_ref()
            .map(|w| w.queue.clone())
            .unwrap_or_default();
        info!(%queue, number = %self.acd.caller, "callback requested");
        self.ctx.bus.publish(Event::CallbackRequested {
            call_id: self.call_id.clone(),
            queue,
            number: self.acd.caller.clone(),
        });
        self.acd.callback = Some(Callback {
            number: self.acd.caller.clone(),
            customer: None,
            deadline: None,
        });
        self.acd.max_wait_at = None;
        self.acd.announce_at = None;
        self.acd.callback_offer_at = None;
        self.phase = Phase::CallbackRecorded;
        self.play(&["callback_recorded".to_string()], false);
    }

    /// The confirmation was heard: the caller is hung up, the place kept.
    pub(super) fn callback_recorded(&mut self) {
        self.phase = Phase::Callback;
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
        match self.phase {
            Phase::CallbackRecorded | Phase::Callback => None,
            _ => Some(match reason {
                TerminatedReason::UasBye | TerminatedReason::UacBye => ReleasedBy::Caller,
                _ => ReleasedBy::System,
            }),
        }
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
                    callback.deadline = Some(Instant::now() + CUSTOMER_RING_LIMIT);
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
        callback.deadline = None;
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
            callback.deadline = None;
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
