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
use crate::events::{Event, ReleasedBy};
use crate::media::sdp;
use crate::sip::dialplan::{DialRefusal, OutboundPermit};

/// The most characters of a refused number an event carries.
const MAX_SHOWN_NUMBER: usize = 32;

/// The call to the customer of a callback (the number and its ring limit
/// are the core's: [`super::core::CallbackRequest`]).
pub struct CustomerCall {
    /// The INVITE to the customer.
    pub fork: agent_leg::Fork,
    /// The outbound call counted against the trunk's ceilings while it lasts.
    _permit: OutboundPermit,
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
        self.core_do(CoreInput::NumberEntryStarted);
        let caller = self.acd.caller.clone();
        self.propose_number(&caller);
    }

    /// Checks a number against the trunk's dial plan: the core reads an
    /// allowed one back for confirmation; a refused one is an event and the
    /// caller is asked for another.
    pub(super) fn propose_number(&mut self, number: &str) {
        if self.core.number_entry().is_none() {
            return;
        }
        let checked = self.acd.trunk.dialplan.check(number);
        if let Err(reason) = checked {
            self.outbound_refused(number, reason);
        }
        self.core_do(CoreInput::NumberProposed {
            number: number.to_string(),
            e164: checked.ok(),
        });
    }

    /// No number given (nothing keyed in time, or every number refused):
    /// the caller goes on waiting, and may press the callback key again.
    pub(super) fn number_entry_ended(&mut self) {
        debug!("no callback number given");
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
            .customer
            .as_ref()
            .is_some_and(|c| c.fork.call_id == fork)
    }

    /// The agent answered the callback: call the customer through the trunk.
    pub(super) fn dial_customer(&mut self) {
        let (Some(outbound), Some(callback)) = (self.acd.trunk.outbound, self.core.callback())
        else {
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
                self.acd.customer = Some(CustomerCall {
                    fork,
                    _permit: permit,
                });
                self.core_do(CoreInput::CustomerDialled);
            }
            Err(e) => {
                warn!(error = %e, "cannot call the customer back");
                self.callback_failed(None);
            }
        }
    }

    /// The customer's phone answered, or did not.
    pub(super) fn on_customer_final(&mut self, fin: ForkFinal) {
        if self.core.callback().is_none() {
            return;
        }
        self.core_do(CoreInput::CustomerFinal);
        let Some(fork) = self.acd.customer.as_mut().map(|c| &mut c.fork) else {
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
                    number: self.callback_number(),
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
        if let Some(fork) = self.acd.customer.as_mut().map(|c| &mut c.fork)
            && fork.status == ForkStatus::Ringing
        {
            fork.status = ForkStatus::Cancelled;
            let dialog = fork.dialog.clone();
            tokio::spawn(async move {
                let _ = dialog.cancel().await;
            });
        }
        self.callback_failed(Some(408));
    }

    /// The customer could not be reached: the agent is released.
    fn callback_failed(&mut self, status: Option<u16>) {
        warn!(?status, "the callback did not reach the customer");
        self.ctx.bus.publish(Event::CallbackFailed {
            call_id: self.call_id.clone(),
            number: self.callback_number(),
            status,
        });
        self.acd.released = Some(ReleasedBy::System);
    }
}

impl Actor {
    fn callback_number(&self) -> String {
        self.core
            .callback()
            .map(|c| c.number.clone())
            .unwrap_or_default()
    }
}
