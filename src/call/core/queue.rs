//! Waiting in a queue: the caller's place (kept across overflow and
//! transfers), the queue's timers (max wait, position announcements, the
//! callback offer), each deadline computed from when the caller joined or
//! was last told its position, and the overflow.

use std::time::{Duration, Instant};

use super::{CallCore, Effect, IvrInput, Link, Stage, digit_prompts, ms};
use crate::acd::QueuePosition;
use crate::events::Event;

/// The caller's place: its queue, and when it first queued anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub queue: String,
    pub first: Instant,
}

/// A queue's timers, as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTimers {
    pub max_wait: Option<Duration>,
    pub announce_every: Option<Duration>,
    pub callback_after: Option<Duration>,
}

/// Where the position announcements stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announce {
    /// The next comes `announce_every` after this.
    From(Instant),
    /// The router was asked where the caller stands.
    Asking,
    Off,
}

/// The leave-a-number offer (rulebook C3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOffer {
    /// Not for this call (no outbound trunk, no `callback_after`, a
    /// callback under way).
    Never,
    /// Comes `callback_after` after joining.
    Due,
    /// The caller heard it and may press the key.
    Offered,
    /// Its time came while an agent's phone rang.
    Missed,
}

/// A caller who left a number: the call keeps its place without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptForCallback {
    /// The caller hears that its number was recorded.
    Confirming,
    /// The caller was hung up; an agent answering is the customer's call.
    CallerGone,
}

/// A caller in a queue.
#[derive(Debug)]
pub struct Waiting {
    pub place: Place,
    /// When the caller joined this queue.
    pub joined: Instant,
    timers: QueueTimers,
    announce: Announce,
    pub callback_offer: CallbackOffer,
    max_wait_passed: bool,
    /// The caller left a number: the call waits without them, with no
    /// queue timers.
    pub kept: Option<KeptForCallback>,
    /// Agents whose phones ring.
    pub offers: Vec<super::Offer>,
    /// The caller is giving or confirming the number to be called back on.
    pub number_entry: Option<super::NumberEntry>,
}

impl Waiting {
    pub(super) fn new(
        place: Place,
        now: Instant,
        timers: QueueTimers,
        callback_possible: bool,
    ) -> Waiting {
        let callback_offer = if callback_possible && timers.callback_after.is_some() {
            CallbackOffer::Due
        } else {
            CallbackOffer::Never
        };
        let announce = match timers.announce_every {
            Some(_) => Announce::From(now),
            None => Announce::Off,
        };
        Waiting {
            place,
            joined: now,
            timers,
            announce,
            callback_offer,
            max_wait_passed: false,
            kept: None,
            offers: Vec::new(),
            number_entry: None,
        }
    }

    fn max_wait_at(&self) -> Option<Instant> {
        if self.max_wait_passed || self.kept.is_some() {
            return None;
        }
        self.timers.max_wait.map(|d| self.joined + d)
    }

    fn announce_at(&self) -> Option<Instant> {
        match self.announce {
            Announce::From(from) => self.timers.announce_every.map(|d| from + d),
            Announce::Asking | Announce::Off => None,
        }
    }

    fn callback_offer_at(&self) -> Option<Instant> {
        (self.callback_offer == CallbackOffer::Due)
            .then_some(self.timers.callback_after)
            .flatten()
            .map(|d| self.joined + d)
    }

    /// The earliest queue timer (ring limits aside).
    pub fn deadline(&self) -> Option<Instant> {
        [
            self.max_wait_at(),
            self.announce_at(),
            self.callback_offer_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn stop_announcing(&mut self) {
        self.announce = Announce::Off;
    }

    pub(super) fn keep_for_callback(&mut self) {
        self.number_entry = None;
        self.kept = Some(KeptForCallback::Confirming);
        self.announce = Announce::Off;
        self.callback_offer = CallbackOffer::Never;
    }
}

impl CallCore {
    /// The caller heard the callback offer and may press the key.
    pub fn callback_offered(&self) -> bool {
        self.waiting()
            .is_some_and(|w| w.callback_offer == CallbackOffer::Offered)
    }

    pub(super) fn enqueue(
        &mut self,
        queue: String,
        timers: QueueTimers,
        callback_possible: bool,
        paused: bool,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let first = self.place().map_or(now, |p| p.first);
        let offers = match &mut self.stage {
            Stage::Waiting(waiting) => std::mem::take(&mut waiting.offers),
            _ => Vec::new(),
        };
        let mut waiting = Waiting::new(
            Place {
                queue: queue.clone(),
                first,
            },
            now,
            timers,
            callback_possible,
        );
        waiting.offers = offers;
        self.stage = Stage::Waiting(waiting);
        out.push(Effect::Publish(Event::CallQueued {
            call_id: self.ident.call_id.clone(),
            queue,
            waited_ms: ms(now - first),
        }));
        if paused {
            out.push(Effect::Paused);
            return;
        }
        self.in_router = true;
        out.push(Effect::JoinRouter {
            first: self.direct_to.take(),
        });
    }

    /// The caller left its queue for `target` (the driver settled it with
    /// the router first).
    pub(super) fn overflowed(
        &mut self,
        reason: &'static str,
        target: String,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let Some(place) = self.place().cloned() else {
            return;
        };
        if let Stage::Waiting(waiting) = &mut self.stage {
            for offer in std::mem::take(&mut waiting.offers) {
                out.push(Effect::CancelRinging(offer.agent));
            }
        }
        if !matches!(self.stage, Stage::Connected { .. }) {
            self.stage = Stage::Outside {
                place: Some(place.clone()),
            };
        }
        out.push(Effect::Publish(Event::CallOverflowed {
            call_id: self.ident.call_id.clone(),
            queue: place.queue,
            reason,
            target,
            waited_ms: ms(now - place.first),
        }));
    }

    /// "Your position in the queue is N. The estimated waiting time is M
    /// minutes." over the music, which resumes after it; not while an
    /// agent's phone rings (the caller may be connected any moment).
    pub(super) fn position(
        &mut self,
        position: Option<QueuePosition>,
        entering_number: bool,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let Stage::Waiting(waiting) = &mut self.stage else {
            return;
        };
        if waiting.kept.is_some() {
            return;
        }
        if waiting.announce == Announce::Asking {
            waiting.announce = Announce::From(now);
        }
        if entering_number {
            return;
        }
        let Some(position) = position.filter(|_| waiting.offers.is_empty()) else {
            return;
        };
        let mut prompts = vec!["position".to_string()];
        prompts.extend(digit_prompts(position.position as u64));
        if let Some(wait) = position.estimated_wait {
            let minutes = wait.as_secs().div_ceil(60).max(1);
            prompts.push("estimated_wait".to_string());
            prompts.extend(digit_prompts(minutes));
            prompts.push("minutes".to_string());
        }
        out.push(Effect::Publish(Event::PositionAnnounced {
            call_id: self.ident.call_id.clone(),
            queue: position.queue.0.clone(),
            position: position.position,
            estimated_wait_secs: position.estimated_wait.map(|d| d.as_secs()),
        }));
        out.push(Effect::Play(prompts));
    }

    /// Max wait, the position announcement, the callback offer.
    pub(super) fn queue_timers(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let Stage::Waiting(waiting) = &mut self.stage else {
            return;
        };
        if waiting.max_wait_at().is_some_and(|t| t <= now) {
            waiting.max_wait_passed = true;
            out.push(Effect::Overflow("max_wait"));
        }
        if waiting.announce_at().is_some_and(|t| t <= now) {
            waiting.announce = Announce::Asking;
            out.push(Effect::AskPosition);
        }
        if waiting.callback_offer_at().is_some_and(|t| t <= now) {
            if waiting.offers.is_empty() {
                waiting.callback_offer = CallbackOffer::Offered;
                out.push(Effect::Play(vec!["leave_number".to_string()]));
            } else {
                waiting.callback_offer = CallbackOffer::Missed;
            }
        }
    }

    /// What the end of the prompt the caller heard means: the IVR flow
    /// goes on, a greeting leads into its queue, the confirmation of a
    /// callback hangs the caller up, the agent's number leads to the bridge;
    /// after a prompt over the queue or a hold alert, the caller hears the
    /// music again.
    pub(super) fn prompt_ended(&mut self, out: &mut Vec<Effect>) {
        match &mut self.stage {
            Stage::Ivr { run, .. } => out.push(Effect::Ivr(run.on(IvrInput::PromptsDone))),
            Stage::Greeting { queue, .. } => out.push(Effect::EnterQueue(queue.clone())),
            Stage::Waiting(waiting) => match waiting.kept {
                None => out.push(Effect::QueueMusic),
                Some(KeptForCallback::Confirming) => {
                    waiting.kept = Some(KeptForCallback::CallerGone);
                    out.push(Effect::HangUpCaller);
                }
                Some(KeptForCallback::CallerGone) => {}
            },
            Stage::Connected { bridge, .. } => match bridge.link {
                Link::Announcing => out.push(Effect::Bridge),
                Link::Talking => {
                    if let Some(hold) = bridge.hold.as_mut().filter(|h| h.alerting) {
                        hold.alerting = false;
                        out.push(Effect::QueueMusic);
                    }
                }
                Link::Answered | Link::CallingCustomer => {}
            },
            Stage::Outside { .. } | Stage::Closing { .. } | Stage::Ended => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Input;
    use super::super::tests::{Script, aid, secs};
    use super::*;
    use crate::acd::QueueId;

    fn timers() -> QueueTimers {
        QueueTimers {
            max_wait: Some(Duration::from_secs(60)),
            announce_every: Some(Duration::from_secs(20)),
            callback_after: Some(Duration::from_secs(30)),
        }
    }

    #[test]
    fn joining_publishes_the_wait_and_hands_the_caller_to_the_router() {
        let mut s = Script::new();
        let out = s.enqueue("sales", timers(), 0);
        assert!(matches!(
            &out[0],
            Effect::Publish(Event::CallQueued { queue, waited_ms: 0, .. }) if queue == "sales"
        ));
        assert_eq!(out[1], Effect::JoinRouter { first: None });
        assert!(s.core.in_router());
        assert_eq!(s.core.deadline(), Some(secs(s.t0, 20)));
    }

    #[test]
    fn a_paused_queue_sends_the_caller_to_its_overflow_without_the_router() {
        let mut s = Script::new();
        let out = s.at(
            0,
            Input::Enqueue {
                queue: "sales".into(),
                timers: timers(),
                callback_possible: true,
                paused: true,
            },
        );
        assert_eq!(out.last(), Some(&Effect::Paused));
        assert!(!s.core.in_router());
    }

    #[test]
    fn a_refused_caller_is_not_in_the_router_and_abandons_without_a_dequeue() {
        let mut s = Script::new();
        s.enqueue("sales", timers(), 0);
        s.at(0, Input::Refused);
        assert!(!s.core.in_router());
        let out = s.at(1, Input::Ended(crate::events::ReleasedBy::Caller));
        assert!(out.is_empty());
    }

    #[test]
    fn the_waited_time_survives_an_overflow_into_the_next_queue() {
        let mut s = Script::new();
        s.enqueue("sales", timers(), 0);
        let out = s.at(60, Input::Tick);
        assert!(out.contains(&Effect::Overflow("max_wait")));
        s.core.left_router();
        let out = s.at(
            60,
            Input::Overflowed {
                reason: "max_wait",
                target: "queue:support".into(),
            },
        );
        assert!(matches!(
            &out[0],
            Effect::Publish(Event::CallOverflowed {
                waited_ms: 60_000,
                reason: "max_wait",
                ..
            })
        ));
        let out = s.enqueue("support", QueueTimers::default(), 61);
        assert!(matches!(
            &out[0],
            Effect::Publish(Event::CallQueued {
                waited_ms: 61_000,
                ..
            })
        ));
        assert_eq!(s.core.place().map(|p| p.first), Some(s.t0));
    }

    #[test]
    fn max_wait_fires_once_even_when_the_router_keeps_the_caller() {
        let mut s = Script::new();
        s.enqueue("sales", timers(), 0);
        let out = s.at(60, Input::Tick);
        assert_eq!(
            out.iter()
                .filter(|e| **e == Effect::Overflow("max_wait"))
                .count(),
            1
        );
        assert!(
            !s.at(61, Input::Tick)
                .contains(&Effect::Overflow("max_wait"))
        );
    }

    #[test]
    fn position_announcements_come_every_interval_after_the_answer() {
        let mut s = Script::new();
        s.enqueue("sales", timers(), 0);
        assert_eq!(s.at(20, Input::Tick), vec![Effect::AskPosition]);
        // No deadline for the announcement while the router is asked.
        assert_eq!(s.core.deadline(), Some(secs(s.t0, 30)));
        let position = QueuePosition {
            queue: QueueId::from("sales"),
            position: 3,
            waiting: 4,
            estimated_wait: Some(Duration::from_secs(90)),
        };
        let out = s.at(
            21,
            Input::Position {
                position: Some(position),
                entering_number: false,
            },
        );
        assert_eq!(
            out.last(),
            Some(&Effect::Play(
                [
                    "position",
                    "digit_3",
                    "estimated_wait",
                    "digit_2",
                    "minutes"
                ]
                .map(String::from)
                .to_vec()
            ))
        );
        assert_eq!(
            s.core.waiting().and_then(Waiting::deadline),
            Some(secs(s.t0, 30))
        );
        s.at(30, Input::Tick);
        assert_eq!(
            s.core.waiting().and_then(Waiting::deadline),
            Some(secs(s.t0, 41))
        );
        assert_eq!(s.at(41, Input::PromptEnded), vec![Effect::QueueMusic]);
    }

    #[test]
    fn no_position_while_an_agent_rings() {
        let mut s = Script::new();
        s.enqueue("sales", timers(), 0);
        s.offer("1001", 19);
        s.at(20, Input::Tick);
        let position = QueuePosition {
            queue: QueueId::from("sales"),
            position: 1,
            waiting: 1,
            estimated_wait: None,
        };
        let out = s.at(
            20,
            Input::Position {
                position: Some(position),
                entering_number: false,
            },
        );
        assert!(out.is_empty());
    }

    #[test]
    fn the_callback_offer_is_made_once_and_only_when_no_phone_rings() {
        let mut s = Script::new();
        s.enqueue("sales", timers(), 0);
        s.offer("1001", 29);
        let out = s.at(30, Input::Tick);
        assert!(!out.contains(&Effect::Play(vec!["leave_number".into()])));
        assert!(!s.core.callback_offered());
        let mut s = Script::new();
        s.enqueue("sales", timers(), 0);
        let out = s.at(30, Input::Tick);
        assert!(out.contains(&Effect::Play(vec!["leave_number".into()])));
        assert!(s.core.callback_offered());
        assert!(
            !s.at(90, Input::Tick)
                .contains(&Effect::Play(vec!["leave_number".into()]))
        );
    }

    #[test]
    fn a_recorded_callback_keeps_the_place_without_queue_timers() {
        let mut s = Script::new();
        s.enqueue("sales", timers(), 0);
        s.at(5, Input::NumberEntryStarted);
        s.confirm_number(6);
        assert_eq!(s.core.deadline(), None);
        assert!(s.core.in_router());
        s.offer("1001", 100);
        assert_eq!(s.core.deadline(), Some(secs(s.t0, 106)));
        assert_eq!(s.core.offers()[0].agent, aid("1001"));
    }
}
