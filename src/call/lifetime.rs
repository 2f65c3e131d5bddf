//! The bounds on a call's life that end it when its end never comes (a lost
//! BYE, a crashed phone, a cut network): RTP silence on a leg
//! (`media.rtp_timeout`), and the longest call of its number or its queue
//! (`max_duration`).
//!
//! Everything runs on the call actor's one timer: this module keeps the
//! deadlines, the actor sleeps until the earliest of them and its own.

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::Actor;
use super::acd::end_dialog;
use crate::events::{Event, ReleasedBy};

/// The reasons a call expires, as events and metrics name them.
pub const EXPIRY_REASONS: [&str; 3] = ["rtp_timeout", "session_expired", "max_duration"];

/// How often the silence clock looks at the packet counters: a quarter of
/// the timeout (a call ends at most a quarter late), at least every 250 ms.
fn look_every(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(250))
}

/// A call's deadlines.
#[derive(Debug, Default)]
pub struct Lifetime {
    /// `media.rtp_timeout`.
    rtp_timeout: Option<Duration>,
    /// The number's `max_duration`.
    number_max: Option<Duration>,
    /// When the silence clock looks next; none before hotline answered.
    rtp_look_at: Option<Instant>,
    /// The number's `max_duration`, from hotline's answer.
    number_ends_at: Option<Instant>,
    /// The queue's `max_duration`, from the agent's answer.
    queue_ends_at: Option<Instant>,
}

impl Lifetime {
    pub fn new(rtp_timeout: Option<Duration>, number_max: Option<Duration>) -> Lifetime {
        Lifetime {
            rtp_timeout,
            number_max,
            ..Lifetime::default()
        }
    }

    /// The earliest deadline.
    pub fn deadline(&self) -> Option<Instant> {
        [self.rtp_look_at, self.number_ends_at, self.queue_ends_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Hotline answered the caller at `now`: the silence clock starts, and
    /// the number's longest call is counted.
    pub fn answered(&mut self, now: Instant) {
        self.rtp_look_at = self.rtp_timeout.map(|t| now + look_every(t));
        self.number_ends_at = self.number_max.map(|d| now + d);
    }

    /// An agent of a queue with `max` answered at `answered_at` (a new
    /// connection replaces an earlier one's limit).
    pub fn connected(&mut self, answered_at: Instant, max: Option<Duration>) {
        self.queue_ends_at = max.map(|d| answered_at + d);
    }

    /// The agent left the call; the caller stays.
    pub fn disconnected(&mut self) {
        self.queue_ends_at = None;
    }

    /// Whether a longest-call limit passed at `now`.
    fn too_long(&self, now: Instant) -> bool {
        [self.number_ends_at, self.queue_ends_at]
            .into_iter()
            .flatten()
            .any(|t| t <= now)
    }
}

impl Actor {
    /// Looks at the call's bounds; ends the call when one passed.
    pub(super) fn on_lifetime_timers(&mut self, now: Instant) {
        if self.acd.released.is_some() {
            return;
        }
        if self.lifetime.too_long(now) {
            self.expire("max_duration");
            return;
        }
        let (Some(look_at), Some(timeout)) = (self.lifetime.rtp_look_at, self.lifetime.rtp_timeout)
        else {
            return;
        };
        if look_at > now {
            return;
        }
        self.lifetime.rtp_look_at = Some(now + look_every(timeout));
        let std_now = now.into_std();
        // On hold, neither side owes media; a caller who left a number is
        // gone (its dialog carries none).
        let excused = self.acd.hold.is_some() || self.acd.callback.is_some();
        let legs = std::iter::once(&mut self.media)
            .chain(self.acd.connected.as_mut().map(|c| &mut c.leg.media));
        let mut silent = [Duration::ZERO; 2];
        for (media, silent) in legs.zip(silent.iter_mut()) {
            if excused {
                media.excuse_silence(std_now);
            } else {
                *silent = media.silent_for(std_now);
            }
        }
        let [caller_silent, agent_silent] = silent;
        if caller_silent >= timeout || agent_silent >= timeout {
            warn!(
                caller_silent_ms = caller_silent.as_millis() as u64,
                agent_silent_ms = agent_silent.as_millis() as u64,
                "no RTP on a leg"
            );
            self.expire("rtp_timeout");
        }
    }

    /// Ends the call for `reason`: BYE to the caller here, to the agent as
    /// the call leaves (the agent goes to wrap-up), the reason published.
    pub(super) fn expire(&mut self, reason: &'static str) {
        warn!(reason, "the call's end never came: ending it");
        self.ctx.bus.publish(Event::CallExpired {
            call_id: self.call_id.clone(),
            reason,
        });
        end_dialog(&self.ctx, self.caller_dialog.clone());
        self.acd.released = Some(ReleasedBy::System);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_bound_is_the_deadline_and_limits_count_from_their_start() {
        let t0 = Instant::now();
        let mut life = Lifetime::new(
            Some(Duration::from_secs(60)),
            Some(Duration::from_secs(3600)),
        );
        assert_eq!(life.deadline(), None, "nothing runs before the answer");
        life.answered(t0);
        assert_eq!(life.deadline(), Some(t0 + Duration::from_secs(15)));
        life.rtp_look_at = None;
        assert_eq!(life.deadline(), Some(t0 + Duration::from_secs(3600)));
        life.connected(t0 + Duration::from_secs(10), Some(Duration::from_secs(60)));
        assert_eq!(life.deadline(), Some(t0 + Duration::from_secs(70)));
        assert!(!life.too_long(t0 + Duration::from_secs(69)));
        assert!(life.too_long(t0 + Duration::from_secs(70)));
        life.disconnected();
        assert!(!life.too_long(t0 + Duration::from_secs(70)));
        assert!(life.too_long(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn the_silence_clock_looks_four_times_per_timeout_but_not_too_often() {
        assert_eq!(look_every(Duration::from_secs(60)), Duration::from_secs(15));
        assert_eq!(
            look_every(Duration::from_millis(400)),
            Duration::from_millis(250)
        );
    }
}
