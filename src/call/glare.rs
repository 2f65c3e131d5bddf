//! Re-INVITE glare (RFC 3261 §14.1) on a call's two legs: which leg has a
//! re-INVITE of hotline's waiting for its final answer, so that a phone's
//! re-INVITE crossing it is refused with 491 Request Pending, and how long
//! hotline waits before it sends its own again when the phone refused it
//! with 491. The bookkeeping and the wait are pure; the call actor sends,
//! waits and refuses (with [`refuse`]).

use std::time::Duration;

use rsipstack::dialog::dialog::TransactionHandle;
use rsipstack::sip::{Method, Request, StatusCode};

use super::acd::Side;

/// How many times hotline sends a re-INVITE that keeps meeting 491 before
/// it gives up on it.
pub const MAX_ATTEMPTS: u32 = 3;

/// The status code of a request refused because one of the receiver's own
/// is in flight.
pub const REQUEST_PENDING: u16 = 491;

/// The legs on which a re-INVITE of hotline's is in flight.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PendingReinvites {
    caller: bool,
    agent: bool,
}

impl PendingReinvites {
    fn slot(&mut self, side: Side) -> &mut bool {
        match side {
            Side::Caller => &mut self.caller,
            Side::Agent => &mut self.agent,
        }
    }

    /// Marks a re-INVITE sent on `side`; false when one is in flight there
    /// already (a dialog carries one INVITE transaction at a time).
    pub fn start(&mut self, side: Side) -> bool {
        !std::mem::replace(self.slot(side), true)
    }

    /// The re-INVITE on `side` got its final answer (or none will come).
    pub fn finish(&mut self, side: Side) {
        *self.slot(side) = false;
    }

    /// A phone's re-INVITE on `side` now crosses one of hotline's.
    pub fn is_pending(&self, side: Side) -> bool {
        match side {
            Side::Caller => self.caller,
            Side::Agent => self.agent,
        }
    }
}

/// How long to wait before sending a re-INVITE again after a 491: 2.1 to
/// 4 s for the dialog's Call-ID owner (the side that sent the first INVITE),
/// 0 to 2 s for the other, so the two sides do not collide again.
/// `unit` is a random number in 0..1 choosing within the range.
pub fn retry_after(owns_call_id: bool, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (low_ms, high_ms) = if owns_call_id {
        (2_100.0, 4_000.0)
    } else {
        (0.0, 2_000.0)
    };
    Duration::from_millis((low_ms + (high_ms - low_ms) * unit).round() as u64)
}

/// A phone's request on `side` that crosses a re-INVITE of hotline's there:
/// an INVITE while hotline's own waits for its answer (an UPDATE is not
/// refused: it carries no INVITE transaction).
pub fn crosses(request: &Request, pending: &PendingReinvites, side: Side) -> bool {
    request.method == Method::Invite && pending.is_pending(side)
}

/// Refuses a crossing re-INVITE with 491 Request Pending; the phone tries
/// again after its own wait.
pub async fn refuse(handle: &TransactionHandle) {
    tracing::info!("a phone's re-INVITE crossed hotline's: 491 Request Pending");
    if let Err(e) = handle.reply(StatusCode::RequestPending).await {
        tracing::debug!(error = %e, "491 to a crossing re-INVITE not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_reinvite_on_a_leg_waits_for_the_first_and_legs_are_apart() {
        let mut pending = PendingReinvites::default();
        assert!(!pending.is_pending(Side::Caller));
        assert!(pending.start(Side::Caller));
        assert!(!pending.start(Side::Caller), "one INVITE at a time");
        assert!(pending.is_pending(Side::Caller));
        assert!(!pending.is_pending(Side::Agent));
        assert!(pending.start(Side::Agent));
        pending.finish(Side::Caller);
        assert!(!pending.is_pending(Side::Caller));
        assert!(pending.is_pending(Side::Agent));
        assert!(pending.start(Side::Caller));
    }

    #[test]
    fn the_call_id_owner_waits_2_1_to_4_s_and_the_other_side_0_to_2_s() {
        let ms = |owner, unit| retry_after(owner, unit).as_millis();
        assert_eq!(ms(true, 0.0), 2_100);
        assert_eq!(ms(true, 1.0), 4_000);
        assert_eq!(ms(false, 0.0), 0);
        assert_eq!(ms(false, 1.0), 2_000);
        for i in 0..=100 {
            let unit = f64::from(i) / 100.0;
            assert!((2_100..=4_000).contains(&ms(true, unit)));
            assert!((0..=2_000).contains(&ms(false, unit)));
        }
        // Out of range randomness stays within the rule.
        assert_eq!(ms(true, 7.0), 4_000);
        assert_eq!(ms(false, -1.0), 0);
        assert_eq!(ms(true, f64::NAN), 2_100);
    }
}
