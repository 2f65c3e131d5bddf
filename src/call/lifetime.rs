//! The bounds on a call's life that end it when its end never comes (a lost
//! BYE, a crashed phone, a cut network): RTP silence on a leg
//! (`media.rtp_timeout`), RFC 4028 session timers on both dialogs (see
//! [`super::session_timer`]), and the longest call of its number or its
//! queue (`max_duration`).
//!
//! Everything runs on the call actor's one timer: this module keeps the
//! deadlines, the actor sleeps until the earliest of them and its own.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::acd::{Side, end_dialog};
use super::session_timer::{self, Due, RefreshOutcome, SessionTimer, Totals};
use super::{Actor, CallCommand, sdp_header};
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
    /// The caller's dialog's session timer, once it runs.
    pub caller_session: Option<LegSession>,
    /// The caller's session timer as negotiated (interval, hotline
    /// refreshes, the caller takes UPDATE), started at the answer.
    pub caller_agreed: Option<(Duration, bool, bool)>,
    /// The connected agent's dialog's session timer.
    pub agent_session: Option<LegSession>,
}

/// What hotline's 200 to a peer's refresh carries, and the timer it
/// restarts: (headers, interval, hotline refreshes).
pub type PeerRefresh = (Vec<rsipstack::sip::Header>, Duration, bool);

/// One dialog's session timer and how to refresh it.
#[derive(Debug)]
pub struct LegSession {
    pub timer: SessionTimer,
    /// The peer takes UPDATE (else a re-INVITE refreshes).
    pub allows_update: bool,
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
        let sessions = [&self.caller_session, &self.agent_session]
            .into_iter()
            .flatten()
            .map(|s| s.timer.deadline());
        [self.rtp_look_at, self.number_ends_at, self.queue_ends_at]
            .into_iter()
            .flatten()
            .chain(sessions)
            .min()
    }

    /// Hotline answered the caller at `now`: the silence clock starts, and
    /// the number's longest call is counted.
    pub fn answered(&mut self, now: Instant) {
        self.rtp_look_at = self.rtp_timeout.map(|t| now + look_every(t));
        self.number_ends_at = self.number_max.map(|d| now + d);
        self.caller_session = self
            .caller_agreed
            .map(|(interval, we_refresh, allows_update)| LegSession {
                timer: SessionTimer::start(interval, we_refresh, now),
                allows_update,
            });
    }

    /// An agent of a queue with `max` answered at `answered_at` (a new
    /// connection replaces an earlier one's limit).
    pub fn connected(&mut self, answered_at: Instant, max: Option<Duration>) {
        self.queue_ends_at = max.map(|d| answered_at + d);
    }

    /// The agent left the call; the caller stays.
    pub fn disconnected(&mut self) {
        self.queue_ends_at = None;
        self.agent_session = None;
    }

    fn session_mut(&mut self, side: Side) -> &mut Option<LegSession> {
        match side {
            Side::Caller => &mut self.caller_session,
            Side::Agent => &mut self.agent_session,
        }
    }

    /// A refresh of `side`'s session succeeded (or the peer's was
    /// answered) at `now`: its timer starts again.
    pub fn refreshed(&mut self, side: Side, interval: Duration, we_refresh: bool, now: Instant) {
        if let Some(session) = self.session_mut(side) {
            session.timer = SessionTimer::start(interval, we_refresh, now);
        }
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
        if self.core.callback().is_some() {
            // The caller left a number and hung up: its dialog is over, and
            // the called-back customer's is hotline's own, without a timer.
            self.lifetime.caller_session = None;
        }
        for side in [Side::Caller, Side::Agent] {
            let (due, ours) = self
                .lifetime
                .session_mut(side)
                .as_mut()
                .map_or((Due::Nothing, false), |s| {
                    (s.timer.due(now), s.timer.we_refresh)
                });
            match due {
                Due::Expired => {
                    warn!(?side, "session timer ran out unrefreshed");
                    if ours {
                        // hotline's refresh got no answer in time.
                        Totals::count(&self.ctx.calls.session_timers.refreshes_failed);
                    }
                    self.expire("session_expired");
                    return;
                }
                Due::Refresh => self.send_refresh(side),
                Due::Nothing => {}
            }
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
        let excused = self.core.is_held() || self.core.callback().is_some();
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

    /// Sends `side`'s session refresh (UPDATE when the peer takes it, else a
    /// re-INVITE repeating the current offer); its outcome comes back as
    /// [`CallCommand::Refreshed`].
    fn send_refresh(&mut self, side: Side) {
        let Some(session) = self.lifetime.session_mut(side).as_ref() else {
            return;
        };
        let (interval, allows_update) = (session.timer.interval, session.allows_update);
        let min_se = self.ctx.settings.sip.min_se;
        let (dialog, media) = match side {
            Side::Caller => (Some(self.caller_dialog.clone()), Some(&mut self.media)),
            Side::Agent => match self.acd.connected.as_mut() {
                Some(c) => (c.leg.answered().cloned(), Some(&mut c.leg.media)),
                None => (None, None),
            },
        };
        let (Some(dialog), Some(media)) = (dialog, media) else {
            return;
        };
        let offer = (!allows_update).then(|| media.refresh_offer());
        let mailbox = self.acd.mailbox.clone();
        tracing::debug!(?side, update = allows_update, "session refresh");
        tokio::spawn(async move {
            let mut headers = session_timer::uac_headers(interval, min_se, true);
            let offer_sent = offer.clone();
            let answer = match offer {
                None => dialog.update(Some(headers), None).await,
                Some(offer) => {
                    headers.push(sdp_header());
                    dialog
                        .reinvite(Some(headers), Some(offer.into_bytes()))
                        .await
                }
            };
            let update = offer_sent.is_none();
            let result = match answer {
                Ok(response) => RefreshOutcome::of(response.as_ref(), update, interval),
                Err(e) => RefreshOutcome::Lost(e.to_string()),
            };
            let _ = mailbox.send(Box::new(CallCommand::Refreshed { side, result }));
        });
    }

    /// The outcome of a session refresh hotline sent: a refused one is
    /// tried again before the session expires, a lost one ends the call.
    pub(super) fn on_refreshed(&mut self, side: Side, result: RefreshOutcome) {
        let totals = &self.ctx.calls.session_timers;
        match result {
            RefreshOutcome::Refreshed {
                body,
                interval,
                we_refresh,
            } => {
                Totals::count(&totals.refreshes_ok);
                if !body.iter().all(|b| b.is_ascii_whitespace()) {
                    self.on_refresh_answer(side, &body);
                }
                self.lifetime
                    .refreshed(side, interval, we_refresh, Instant::now());
            }
            RefreshOutcome::Refused {
                code,
                update_refused,
            } => {
                Totals::count(&totals.refreshes_failed);
                info!(?side, code, "session refresh refused: trying again");
                if let Some(session) = self.lifetime.session_mut(side).as_mut() {
                    session.allows_update &= !update_refused;
                    session.timer.retry(Instant::now());
                }
            }
            RefreshOutcome::Lost(e) => {
                Totals::count(&totals.refreshes_failed);
                warn!(?side, error = %e, "session refresh failed");
                let caller_left = side == Side::Caller && self.core.callback().is_some();
                if self.lifetime.session_mut(side).is_some() && !caller_left {
                    self.expire("session_expired");
                }
            }
        }
    }

    /// A peer's re-INVITE or UPDATE on `side`'s dialog, seen as a session
    /// refresh: the headers hotline's 200 carries and the timer it
    /// restarts (`Some(None)`: the leg runs no timer). `None` when it was
    /// refused 422 (an interval below `sip.min_se`).
    pub(super) async fn peer_refresh(
        &self,
        side: Side,
        req: &rsipstack::sip::Request,
        handle: &rsipstack::dialog::dialog::TransactionHandle,
    ) -> Option<Option<PeerRefresh>> {
        let running = match side {
            Side::Caller => self.lifetime.caller_session.is_some(),
            Side::Agent => self.lifetime.agent_session.is_some(),
        };
        let Some(settings) = super::timer_settings(&self.ctx).filter(|_| running) else {
            return Some(None);
        };
        match session_timer::negotiate_uas(req, &settings) {
            session_timer::UasDecision::Run {
                interval,
                we_refresh,
                headers,
            } => Some(Some((headers, interval, we_refresh))),
            session_timer::UasDecision::TooSmall { min_se } => {
                Totals::count(&self.ctx.calls.session_timers.too_small);
                let headers = vec![rsipstack::sip::Header::Other(
                    "Min-SE".into(),
                    min_se.to_string(),
                )];
                let _ = handle
                    .respond(
                        rsipstack::sip::StatusCode::SessionIntervalTooSmall,
                        Some(headers),
                        None,
                    )
                    .await;
                None
            }
        }
    }

    /// The peer's refresh was answered 200: its timer starts again.
    pub(super) fn peer_refreshed(&mut self, side: Side, refresh: Option<PeerRefresh>) {
        if let Some((_, interval, we_refresh)) = refresh {
            Totals::count(&self.ctx.calls.session_timers.refreshes_received);
            self.lifetime
                .refreshed(side, interval, we_refresh, Instant::now());
        }
    }

    /// A re-INVITE refresh's SDP answer: the leg's media follows it.
    fn on_refresh_answer(&mut self, side: Side, body: &[u8]) {
        let applied = crate::media::sdp::parse(body).and_then(|answer| match side {
            Side::Caller => self.media.accept_answer(&answer),
            Side::Agent => match self.acd.connected.as_mut() {
                Some(c) => c.leg.media.accept_answer(&answer),
                None => Ok(()),
            },
        });
        if let Err(e) = applied {
            warn!(?side, error = %e, "a refresh's SDP answer is unusable");
        }
        self.update_formats();
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
