//! The connected call: the agent who answered, the hold (one value with the
//! reason it began, its clock counted from `since`), the hold limit's
//! warning and action (rulebook L2: alert, resume or requeue), and the
//! release of the agent (a transfer, the survey, the end of the call).

use std::time::{Duration, Instant};

use super::{CallCore, Effect, Place, QueueTimers, Side, Stage, Waiting, ms};
use crate::acd::{AgentId, CallId, Command};
use crate::call::policy::{HoldClock, HoldStep};
use crate::config::HoldAction;
use crate::events::{Event, ReleasedBy};

/// Why a call is on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// A phone's re-INVITE put its side on hold.
    Phone(Side),
    /// The CTI API.
    Api,
    /// The agent consults someone while the caller waits.
    Consultation,
}

impl HoldReason {
    /// As events name it.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Phone(Side::Caller) => "caller",
            HoldReason::Phone(Side::Agent) => "agent",
            HoldReason::Api => "api",
            HoldReason::Consultation => "consult",
        }
    }
}

/// Who asks for the call to be held right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldRequests {
    pub caller_phone: bool,
    pub agent_phone: bool,
    pub api: bool,
    pub consultation: bool,
}

impl HoldRequests {
    pub fn any(self) -> bool {
        self.caller_phone || self.agent_phone || self.api || self.consultation
    }

    /// The reason a hold starting now is given: the agent's side first.
    fn reason(self) -> Option<HoldReason> {
        if self.consultation {
            Some(HoldReason::Consultation)
        } else if self.api {
            Some(HoldReason::Api)
        } else if self.agent_phone {
            Some(HoldReason::Phone(Side::Agent))
        } else if self.caller_phone {
            Some(HoldReason::Phone(Side::Caller))
        } else {
            None
        }
    }

    /// The agent's side holds (the caller is the one who waits).
    fn agent_side(self) -> bool {
        self.agent_phone || self.api || self.consultation
    }
}

/// A hold in progress.
#[derive(Debug, Clone)]
pub struct Hold {
    pub reason: HoldReason,
    clock: HoldClock,
    /// The caller hears "thank you for waiting"; music follows.
    pub alerting: bool,
}

impl Hold {
    fn new(reason: HoldReason, since: Instant, policy: &crate::call::policy::CallPolicy) -> Hold {
        Hold {
            reason,
            clock: HoldClock::new(since, policy.hold_limit, policy.hold_warning_before),
            alerting: false,
        }
    }

    pub fn since(&self) -> Instant {
        self.clock.started
    }

    pub fn held(&self, now: Instant) -> Duration {
        self.clock.held(now)
    }
}

/// The agent connected to the call.
#[derive(Debug)]
pub struct Bridge {
    pub agent: AgentId,
    pub queue: String,
    pub answered_at: Instant,
    /// The call as the router knows this agent's part of it: the call's own
    /// id, or its consultation's when a consulted agent took the call over.
    pub router_call: CallId,
    /// How far caller and agent are joined.
    pub link: Link,
    pub holds: u32,
    pub hold_total: Duration,
    pub requests: HoldRequests,
    pub hold: Option<Hold>,
}

impl Bridge {
    pub fn new(agent: AgentId, queue: String, answered_at: Instant, router_call: CallId) -> Bridge {
        Bridge {
            agent,
            queue,
            answered_at,
            router_call,
            link: Link::Answered,
            holds: 0,
            hold_total: Duration::ZERO,
            requests: HoldRequests::default(),
            hold: None,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.hold.as_ref().map(|h| h.clock.deadline())
    }

    /// Caller and agent hear each other.
    pub fn talking(&self) -> bool {
        self.link == Link::Talking
    }
}

/// How far caller and agent are joined, from the agent's answer on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The answer was accepted; the bridge follows at once.
    Answered,
    /// The caller hears the agent's number; the bridge follows the prompt.
    Announcing,
    /// The agent answered a callback: the customer is being called.
    CallingCustomer,
    /// Caller and agent hear each other.
    Talking,
}

impl CallCore {
    /// Applies a change of who asks for the hold; a hold starts or ends
    /// when the bridge's answer to "is anyone holding" changes.
    pub(super) fn holds(
        &mut self,
        now: Instant,
        out: &mut Vec<Effect>,
        change: impl FnOnce(&mut HoldRequests),
    ) {
        let call_id = self.ident.call_id.clone();
        let policy = self.policy.clone();
        let Some(bridge) = self.bridge_mut() else {
            return;
        };
        change(&mut bridge.requests);
        if !bridge.talking() {
            return;
        }
        match (bridge.hold.is_some(), bridge.requests.reason()) {
            (false, Some(reason)) => {
                bridge.holds += 1;
                let held_side = if bridge.requests.agent_side() {
                    Side::Caller
                } else {
                    Side::Agent
                };
                // The held side hears music, never silence.
                out.push(Effect::HoldMusic(held_side));
                bridge.hold = Some(Hold::new(reason, now, &policy));
                out.push(Effect::Publish(Event::HoldStarted {
                    call_id,
                    agent: bridge.agent.0.clone(),
                    by: reason.as_str(),
                }));
                out.push(Effect::Router(Command::HoldStarted(
                    bridge.router_call.clone(),
                    bridge.agent.clone(),
                )));
            }
            (true, None) => self.end_hold(now, out),
            _ => {}
        }
    }

    /// Ends the hold in progress, whatever is asked (off hold, or the agent
    /// who held hands the call over).
    pub(super) fn end_hold(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let call_id = self.ident.call_id.clone();
        let Some(bridge) = self.bridge_mut() else {
            return;
        };
        let Some(hold) = bridge.hold.take() else {
            return;
        };
        let held = hold.held(now);
        bridge.hold_total += held;
        out.push(Effect::StopHoldMusic);
        out.push(Effect::Publish(Event::HoldEnded {
            call_id,
            agent: bridge.agent.0.clone(),
            held_ms: ms(held),
        }));
        out.push(Effect::Router(Command::HoldEnded(
            bridge.router_call.clone(),
            bridge.agent.clone(),
        )));
    }

    /// After hotline's resume re-INVITEs were answered (or not): a call
    /// still held counts the limit again from now.
    pub(super) fn resume_answered(&mut self, now: Instant) {
        let policy = self.policy.clone();
        if let Some(hold) = self.bridge_mut().and_then(|b| b.hold.as_mut()) {
            hold.clock = HoldClock::new(now, policy.hold_limit, policy.hold_warning_before);
        }
    }

    /// The hold's warning and limits due at `now`.
    pub(super) fn hold_clock(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let call_id = self.ident.call_id.clone();
        let policy = self.policy.clone();
        loop {
            let Some(bridge) = self.bridge_mut() else {
                return;
            };
            let agent = bridge.agent.0.clone();
            let Some(hold) = bridge.hold.as_mut() else {
                return;
            };
            let Some(step) = hold.clock.step(now) else {
                return;
            };
            match step {
                HoldStep::Warning { held } => out.push(Effect::Publish(Event::HoldWarning {
                    call_id: call_id.clone(),
                    agent,
                    held_ms: ms(held),
                })),
                HoldStep::Limit { held, count } => {
                    out.push(Effect::Publish(Event::HoldLimitReached {
                        call_id: call_id.clone(),
                        agent,
                        held_ms: ms(held),
                        action: policy.hold_action.as_str(),
                        count,
                    }));
                    match policy.hold_action {
                        HoldAction::Alert => {
                            if hold.reason == HoldReason::Phone(Side::Agent) {
                                hold.alerting = true;
                                out.push(Effect::Play(vec!["thank_you_for_waiting".into()]));
                            }
                            out.push(Effect::HoldAlert {
                                held,
                                limit: policy.hold_limit,
                            });
                        }
                        HoldAction::Resume => out.push(Effect::ResumePhones),
                        HoldAction::Requeue => return self.hold_requeue(now, out),
                    }
                }
            }
        }
    }

    /// The hold limit sends the caller back to the head of its queue; the
    /// agent is released.
    fn hold_requeue(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let Stage::Connected { place, bridge } =
            std::mem::replace(&mut self.stage, Stage::Outside { place: None })
        else {
            return;
        };
        out.push(Effect::DetachAgent);
        out.push(Effect::Publish(self.released_event(
            &bridge,
            None,
            ReleasedBy::System,
            now,
        )));
        if bridge.router_call != self.call() {
            // The agent took the call over from a consultation: the router
            // knows the call itself no more, so it queues afresh (keeping
            // its waited time).
            out.push(Effect::Router(Command::CallEnded(
                bridge.router_call,
                bridge.agent,
            )));
            self.stage = Stage::Outside { place };
            self.in_router = false;
            out.push(Effect::EnterQueue(bridge.queue));
            return;
        }
        out.push(Effect::Router(Command::Requeue(self.call(), bridge.agent)));
        let place = place.unwrap_or(Place {
            queue: bridge.queue.clone(),
            first: bridge.answered_at,
        });
        out.push(Effect::QueueMusic);
        out.push(Effect::Publish(Event::CallQueued {
            call_id: self.ident.call_id.clone(),
            queue: bridge.queue,
            waited_ms: ms(now.saturating_duration_since(place.first)),
        }));
        // Back in the router's queue, without the queue's timers.
        let mut waiting = Waiting::new(place, now, QueueTimers::default(), false);
        waiting.callback_offer = super::CallbackOffer::Never;
        self.stage = Stage::Waiting(waiting);
    }

    fn released_event(
        &self,
        bridge: &Bridge,
        hold: Option<&Hold>,
        by: ReleasedBy,
        now: Instant,
    ) -> Event {
        let hold_now = hold.map_or(Duration::ZERO, |h| h.held(now));
        Event::CallReleased {
            call_id: self.ident.call_id.clone(),
            agent: bridge.agent.0.clone(),
            queue: bridge.queue.clone(),
            released_by: by,
            talk_ms: ms(now.saturating_duration_since(bridge.answered_at)),
            holds: bridge.holds,
            hold_ms: ms(bridge.hold_total + hold_now),
        }
    }

    /// The release of the connected agent as an event and a message to the
    /// router (a running hold counts).
    pub(super) fn released_effects(&self, by: ReleasedBy, now: Instant, out: &mut Vec<Effect>) {
        let Some(bridge) = self.bridge() else {
            return;
        };
        out.push(Effect::Publish(self.released_event(
            bridge,
            bridge.hold.as_ref(),
            by,
            now,
        )));
        out.push(Effect::Router(Command::CallEnded(
            bridge.router_call.clone(),
            bridge.agent.clone(),
        )));
    }

    /// The agent goes to wrap-up while the caller stays on the line.
    pub(super) fn release_agent(&mut self, by: ReleasedBy, now: Instant, out: &mut Vec<Effect>) {
        if self.bridge().is_none() {
            return;
        }
        self.released_effects(by, now, out);
        let place = self.place().cloned();
        self.stage = Stage::Outside { place };
        self.in_router = false;
    }

    /// The call is over: ringing phones are cancelled, the connected agent
    /// released (its dialog ended unless the agent hung up), or a waiting
    /// caller abandoned; the router hears it once.
    pub(super) fn end(&mut self, by: ReleasedBy, now: Instant, out: &mut Vec<Effect>) {
        for offer in self.offers().to_vec() {
            out.push(Effect::CancelRinging(offer.agent));
        }
        if self.bridge().is_some() {
            if by != ReleasedBy::Agent {
                out.push(Effect::EndAgentDialog);
            }
            self.released_effects(by, now, out);
        } else if self.in_router {
            if let Some(place) = self.place() {
                out.push(Effect::Publish(Event::CallAbandoned {
                    call_id: self.ident.call_id.clone(),
                    queue: place.queue.clone(),
                    waited_ms: ms(now.saturating_duration_since(place.first)),
                }));
            }
            out.push(Effect::Router(Command::Dequeue(self.call())));
        }
        self.in_router = false;
        if let Some(callback) = self.callback.as_mut() {
            callback.ringing = None;
        }
        self.stage = Stage::Ended;
    }
}

#[cfg(test)]
mod tests {
    use super::super::Input;
    use super::super::tests::{Script, aid, routed};
    use super::*;

    fn connected(s: &mut Script) {
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 0);
        s.answer("1001", 2);
        s.at(2, Input::Bridged);
    }

    fn published(out: &[Effect]) -> Vec<&Event> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Publish(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_hold_started_by_the_caller_plays_music_to_the_agent_and_runs_the_limit() {
        let mut s = Script::new();
        connected(&mut s);
        let out = s.at(
            10,
            Input::PhoneHold {
                caller: true,
                agent: false,
            },
        );
        assert_eq!(out[0], Effect::HoldMusic(Side::Agent));
        assert!(matches!(
            out[1],
            Effect::Publish(Event::HoldStarted { by: "caller", .. })
        ));
        assert_eq!(
            routed(&out),
            vec![Command::HoldStarted(s.core.call(), aid("1001"))]
        );
        assert_eq!(s.core.hold().map(Hold::since), Some(s.t(10)));
        // The limit applies: 30 s, warned 5 s before.
        assert_eq!(s.core.deadline(), Some(s.t(35)));
        let out = s.at(35, Input::Tick);
        assert!(matches!(
            published(&out)[..],
            [Event::HoldWarning {
                held_ms: 25_000,
                ..
            }]
        ));
        let out = s.at(40, Input::Tick);
        assert!(matches!(
            published(&out)[..],
            [Event::HoldLimitReached {
                held_ms: 30_000,
                count: 1,
                action: "alert",
                ..
            }]
        ));
        // Only the agent's own hold makes the caller hear the alert prompt.
        assert!(!out.iter().any(|e| matches!(e, Effect::Play(_))));
        assert!(out.iter().any(|e| matches!(e, Effect::HoldAlert { .. })));
        let out = s.at(
            41,
            Input::PhoneHold {
                caller: false,
                agent: false,
            },
        );
        assert!(matches!(
            published(&out)[..],
            [Event::HoldEnded {
                held_ms: 31_000,
                ..
            }]
        ));
        assert_eq!(
            s.core.bridge().map(|b| (b.holds, b.hold_total)),
            Some((1, Duration::from_secs(31)))
        );
        assert_eq!(s.core.deadline(), None);
    }

    #[test]
    fn the_agent_holding_makes_the_caller_hear_music_and_the_alert_prompt() {
        let mut s = Script::new();
        connected(&mut s);
        let out = s.at(
            10,
            Input::PhoneHold {
                caller: false,
                agent: true,
            },
        );
        assert_eq!(out[0], Effect::HoldMusic(Side::Caller));
        s.at(35, Input::Tick);
        let out = s.at(40, Input::Tick);
        assert!(out.contains(&Effect::Play(vec!["thank_you_for_waiting".into()])));
        assert_eq!(s.at(42, Input::PromptEnded), vec![Effect::QueueMusic]);
        assert!(s.at(43, Input::PromptEnded).is_empty());
    }

    #[test]
    fn one_hold_with_many_reasons_ends_when_the_last_is_gone() {
        let mut s = Script::new();
        connected(&mut s);
        s.at(5, Input::ApiHold(true));
        assert_eq!(s.core.hold().map(|h| h.reason), Some(HoldReason::Api));
        let out = s.at(
            6,
            Input::PhoneHold {
                caller: false,
                agent: true,
            },
        );
        assert!(out.is_empty());
        assert!(s.at(7, Input::ApiHold(false)).is_empty());
        assert!(s.core.is_held());
        let out = s.at(
            8,
            Input::PhoneHold {
                caller: false,
                agent: false,
            },
        );
        assert!(out.contains(&Effect::StopHoldMusic));
        assert!(!s.core.is_held());
        assert_eq!(s.core.bridge().map(|b| b.holds), Some(1));
    }

    #[test]
    fn no_hold_before_caller_and_agent_talk() {
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 0);
        s.answer("1001", 2);
        assert!(s.at(3, Input::ApiHold(true)).is_empty());
        assert!(!s.core.is_held());
        // The hold asked for during the announcement starts with the talk.
        let out = s.at(4, Input::Bridged);
        assert_eq!(out[0], Effect::HoldMusic(Side::Caller));
        assert!(matches!(
            out[1],
            Effect::Publish(Event::HoldStarted { by: "api", .. })
        ));
    }

    #[test]
    fn an_api_hold_before_any_agent_answers_is_not_kept_for_the_next_agent() {
        // Formerly remembered and applied the moment an agent answered: the
        // caller went on hold with an agent who had never held it.
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        assert!(s.at(1, Input::ApiHold(true)).is_empty());
        s.offer("1001", 2);
        s.answer("1001", 3);
        assert!(s.at(3, Input::Bridged).is_empty());
        assert!(!s.core.is_held());
    }

    #[test]
    fn resume_glare_keeps_the_hold_and_restarts_its_clock() {
        // The hold limit asks the phones to resume; hotline's re-INVITE
        // crosses one from the caller's phone that still holds (491 on
        // ours). The core keeps the hold and counts the limit again.
        let mut s = Script::new();
        s.policy(HoldAction::Resume);
        connected(&mut s);
        s.at(
            10,
            Input::PhoneHold {
                caller: true,
                agent: false,
            },
        );
        s.at(35, Input::Tick);
        let out = s.at(40, Input::Tick);
        assert!(out.contains(&Effect::ResumePhones));
        // The phone's own re-INVITE, still sendonly, answered first.
        assert!(
            s.at(
                40,
                Input::PhoneHold {
                    caller: true,
                    agent: false,
                },
            )
            .is_empty()
        );
        // Our re-INVITE failed (491): still held, the limit counts from now.
        s.at(41, Input::ResumeAnswered);
        assert!(s.core.is_held());
        assert_eq!(s.core.hold().map(Hold::since), Some(s.t(41)));
        assert_eq!(s.core.deadline(), Some(s.t(66)));
        // The retry after the RFC 3261 §14.1 wait succeeds.
        let out = s.at(
            43,
            Input::PhoneHold {
                caller: false,
                agent: false,
            },
        );
        assert!(matches!(
            published(&out)[..],
            [Event::HoldEnded { held_ms: 2_000, .. }]
        ));
    }

    #[test]
    fn the_requeue_action_sends_the_caller_back_and_releases_the_agent() {
        let mut s = Script::new();
        s.policy(HoldAction::Requeue);
        connected(&mut s);
        s.at(
            10,
            Input::PhoneHold {
                caller: false,
                agent: true,
            },
        );
        s.at(35, Input::Tick);
        let out = s.at(40, Input::Tick);
        let requeue = out.iter().position(|e| *e == Effect::DetachAgent);
        assert!(requeue.is_some());
        assert_eq!(
            routed(&out),
            vec![Command::Requeue(s.core.call(), aid("1001"))]
        );
        assert!(published(&out).iter().any(|e| matches!(
            e,
            Event::CallReleased {
                hold_ms: 0,
                holds: 1,
                released_by: ReleasedBy::System,
                ..
            }
        )));
        assert!(matches!(
            published(&out).last(),
            Some(Event::CallQueued {
                waited_ms: 40_000,
                ..
            })
        ));
        assert!(s.core.waiting().is_some());
        assert!(s.core.in_router());
        assert_eq!(s.core.deadline(), None);
    }

    #[test]
    fn ending_a_connected_call_releases_the_agent_with_its_running_hold() {
        let mut s = Script::new();
        connected(&mut s);
        s.at(5, Input::ApiHold(true));
        let out = s.at(9, Input::Ended(ReleasedBy::Caller));
        assert_eq!(out[0], Effect::EndAgentDialog);
        assert!(matches!(
            published(&out)[..],
            [Event::CallReleased {
                hold_ms: 4_000,
                talk_ms: 7_000,
                holds: 1,
                ..
            }]
        ));
        assert_eq!(
            routed(&out),
            vec![Command::CallEnded(s.core.call(), aid("1001"))]
        );
        // The agent hanging up keeps its own dialog.
        let mut s = Script::new();
        connected(&mut s);
        let out = s.at(9, Input::Ended(ReleasedBy::Agent));
        assert!(!out.contains(&Effect::EndAgentDialog));
    }

    #[test]
    fn a_consulted_agent_taking_over_releases_the_first_and_ends_its_hold() {
        let mut s = Script::new();
        connected(&mut s);
        s.at(5, Input::ConsultHold(true));
        let consult = CallId::from("c1/consult");
        let out = s.at(
            9,
            Input::TakenOver {
                agent: aid("1002"),
                queue: "sales".into(),
                router_call: consult.clone(),
                rang_since: s.t(6),
            },
        );
        let events = published(&out);
        assert!(matches!(events[0], Event::HoldEnded { held_ms: 4_000, .. }));
        assert!(matches!(
            events[1],
            Event::CallReleased { hold_ms: 4_000, .. }
        ));
        assert!(matches!(
            events[2],
            Event::CallConnected { ring_ms: 3_000, .. }
        ));
        assert_eq!(
            routed(&out),
            vec![
                Command::HoldEnded(s.core.call(), aid("1001")),
                Command::CallEnded(s.core.call(), aid("1001"))
            ]
        );
        let bridge = s.core.bridge().expect("connected");
        assert_eq!(
            (bridge.agent.clone(), bridge.router_call.clone()),
            (aid("1002"), consult)
        );
        assert!(!s.core.is_held());
    }
}
