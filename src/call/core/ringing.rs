//! Ringing agents: the offers the router made, each with its ring limit
//! counted from the offer (rulebook L1), the failures the router must hear
//! of, and the answer that connects the call (the router decides the race;
//! the losers are cancelled).

use std::time::{Duration, Instant};

use super::{Bridge, CallCore, Effect, Link, Stage, ms};
use crate::acd::{AgentId, CallId, Command, Outcome};
use crate::events::Event;

/// An agent whose phones ring for this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub agent: AgentId,
    pub queue: String,
    pub offered_at: Instant,
}

impl Offer {
    /// When the ring limit runs out.
    pub fn ring_deadline(&self, ring_limit: Duration) -> Instant {
        self.offered_at + ring_limit
    }
}

pub(crate) fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::NoAnswer => "no_answer",
        Outcome::Busy => "busy",
        Outcome::Declined => "declined",
        Outcome::Unreachable => "unreachable",
    }
}

impl CallCore {
    fn offer_failed(
        &self,
        agent: &AgentId,
        queue: &str,
        outcome: Outcome,
        rang: Duration,
        out: &mut Vec<Effect>,
    ) {
        out.push(Effect::Publish(Event::OfferFailed {
            call_id: self.ident.call_id.clone(),
            agent: agent.0.clone(),
            queue: queue.to_string(),
            outcome: outcome_name(outcome),
            ring_ms: ms(rang),
        }));
        out.push(Effect::Router(Command::OfferFailed(
            self.call(),
            agent.clone(),
            outcome,
        )));
    }

    fn take_offer(&mut self, agent: &AgentId) -> Option<super::Offer> {
        let Stage::Waiting(waiting) = &mut self.stage else {
            return None;
        };
        let i = waiting.offers.iter().position(|o| o.agent == *agent)?;
        Some(waiting.offers.remove(i))
    }

    /// The router offered the call to `agent`; its phones ring, or none
    /// could (the offer fails at once).
    pub(super) fn offered(
        &mut self,
        agent: AgentId,
        queue: String,
        contacts: usize,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        out.push(Effect::Publish(Event::CallOffered {
            call_id: self.ident.call_id.clone(),
            agent: agent.0.clone(),
            queue: queue.clone(),
            caller: self.ident.caller.clone(),
            number: self.ident.number.clone(),
            contacts,
            vars: self.vars.clone(),
        }));
        let waiting = match &mut self.stage {
            Stage::Waiting(waiting) if contacts > 0 => waiting,
            _ => {
                if contacts > 0 {
                    out.push(Effect::CancelRinging(agent.clone()));
                }
                return self.offer_failed(
                    &agent,
                    &queue,
                    Outcome::Unreachable,
                    Duration::ZERO,
                    out,
                );
            }
        };
        if let Some(previous) = waiting.offers.iter().position(|o| o.agent == agent) {
            // Offered again while still ringing: the new offer counts.
            waiting.offers.remove(previous);
        }
        waiting.offers.push(super::Offer {
            agent,
            queue,
            offered_at: now,
        });
    }

    pub(super) fn withdrawn(&mut self, agent: &AgentId, out: &mut Vec<Effect>) {
        if self.take_offer(agent).is_some() {
            out.push(Effect::CancelRinging(agent.clone()));
        }
    }

    pub(super) fn settled(
        &mut self,
        agent: &AgentId,
        outcome: Outcome,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if let Some(offer) = self.take_offer(agent) {
            self.offer_failed(agent, &offer.queue, outcome, now - offer.offered_at, out);
        }
    }

    /// The ring limit of each offer that reached it: CANCEL, and the
    /// router hears nobody answered.
    pub(super) fn ring_limits(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let limit = self.policy.ring_limit;
        let Stage::Waiting(waiting) = &mut self.stage else {
            return;
        };
        let (expired, ringing): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting.offers)
            .into_iter()
            .partition(|o| o.ring_deadline(limit) <= now);
        waiting.offers = ringing;
        for offer in expired {
            out.push(Effect::CancelRinging(offer.agent.clone()));
            self.offer_failed(
                &offer.agent,
                &offer.queue,
                Outcome::NoAnswer,
                now - offer.offered_at,
                out,
            );
        }
    }

    /// The router accepted `agent`'s answer: every other phone stops, the
    /// call is connected (late when the ring limit had passed).
    pub(super) fn answered(
        &mut self,
        agent: AgentId,
        announce: bool,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let limit = self.policy.ring_limit;
        let Stage::Waiting(waiting) = &mut self.stage else {
            return;
        };
        let Some(i) = waiting.offers.iter().position(|o| o.agent == agent) else {
            return;
        };
        let offer = waiting.offers.remove(i);
        for other in std::mem::take(&mut waiting.offers) {
            out.push(Effect::CancelRinging(other.agent));
        }
        let place = waiting.place.clone();
        let callback = waiting.kept.is_some();
        out.push(Effect::Publish(Event::CallConnected {
            call_id: self.ident.call_id.clone(),
            agent: agent.0.clone(),
            queue: offer.queue.clone(),
            waited_ms: ms(now - place.first),
            ring_ms: ms(now - offer.offered_at),
            late: now > offer.ring_deadline(limit),
        }));
        let digits: Vec<String> = agent
            .0
            .chars()
            .filter(char::is_ascii_digit)
            .map(|d| format!("digit_{d}"))
            .collect();
        let mut bridge = Bridge::new(agent, offer.queue, now, self.call());
        out.push(if callback {
            bridge.link = Link::CallingCustomer;
            Effect::DialCustomer
        } else if announce && !digits.is_empty() {
            let mut prompts = vec!["agent_number".to_string()];
            prompts.extend(digits);
            prompts.push("will_serve_you".to_string());
            bridge.link = Link::Announcing;
            Effect::Announce(prompts)
        } else {
            Effect::Bridge
        });
        self.stage = Stage::Connected {
            place: Some(place),
            bridge,
        };
    }

    /// The router gave the call to someone else; the offer is gone unless
    /// other phones of the agent still ring.
    pub(super) fn answer_refused(&mut self, agent: &AgentId, still_ringing: bool) {
        if !still_ringing {
            self.take_offer(agent);
        }
    }

    /// A consulted agent takes the call over: the agent on it is released
    /// (its hold ended), the consulted one connected.
    pub(super) fn taken_over(
        &mut self,
        agent: AgentId,
        queue: String,
        router_call: CallId,
        rang_since: Instant,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let place = self.place().cloned();
        if let Some(bridge) = self.bridge_mut() {
            bridge.requests = Default::default();
        }
        self.end_hold(now, out);
        if let Stage::Connected { bridge, .. } = &self.stage {
            let previous = (bridge.agent.clone(), bridge.queue.clone());
            self.released_effects(crate::events::ReleasedBy::System, now, out);
            self.transfers += 1;
            out.push(Effect::Transferred {
                agent: previous.0,
                from_queue: previous.1,
                count: self.transfers,
            });
        }
        out.push(Effect::Publish(Event::CallConnected {
            call_id: self.ident.call_id.clone(),
            agent: agent.0.clone(),
            queue: queue.clone(),
            waited_ms: place
                .as_ref()
                .map_or(0, |p| ms(now.saturating_duration_since(p.first))),
            ring_ms: ms(now.saturating_duration_since(rang_since)),
            late: false,
        }));
        let mut bridge = Bridge::new(agent, queue, now, router_call);
        bridge.link = Link::Talking;
        self.stage = Stage::Connected { place, bridge };
    }
}

#[cfg(test)]
mod tests {
    use super::super::Input;
    use super::super::tests::{Script, aid, routed};
    use super::*;
    use crate::call::core::QueueTimers;

    #[test]
    fn an_unanswered_offer_is_cancelled_at_the_ring_limit_and_the_router_told() {
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 1);
        assert_eq!(s.core.deadline(), Some(s.t(7)));
        assert!(s.at(6, Input::Tick).is_empty());
        let out = s.at(7, Input::Tick);
        assert_eq!(out[0], Effect::CancelRinging(aid("1001")));
        assert!(matches!(
            &out[1],
            Effect::Publish(Event::OfferFailed {
                outcome: "no_answer",
                ring_ms: 6000,
                ..
            })
        ));
        assert_eq!(
            routed(&out),
            vec![Command::OfferFailed(
                s.core.call(),
                aid("1001"),
                Outcome::NoAnswer
            )]
        );
        assert!(s.core.offers().is_empty());
        assert_eq!(s.core.deadline(), None);
    }

    #[test]
    fn a_lost_agent_invite_is_given_up_at_the_ring_limit_and_the_next_agent_rings() {
        // No final response ever comes for 1001's INVITE (timer B would
        // fire only after 32 s): the ring limit moves the call on.
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 0);
        let out = s.at(6, Input::Tick);
        assert!(out.contains(&Effect::CancelRinging(aid("1001"))));
        s.offer("1002", 6);
        s.answer("1002", 8);
        assert_eq!(s.core.bridge().map(|b| b.agent.clone()), Some(aid("1002")));
        // The lost INVITE's late failure changes nothing.
        let out = s.at(
            38,
            Input::OfferSettled {
                agent: aid("1001"),
                outcome: Outcome::Unreachable,
            },
        );
        assert!(out.is_empty());
    }

    #[test]
    fn the_first_accepted_answer_cancels_every_other_agent() {
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 1);
        s.offer("1002", 1);
        let out = s.at(
            3,
            Input::AgentAnswered {
                agent: aid("1002"),
                announce: true,
            },
        );
        assert_eq!(out[0], Effect::CancelRinging(aid("1001")));
        assert!(matches!(
            &out[1],
            Effect::Publish(Event::CallConnected {
                waited_ms: 3000,
                ring_ms: 2000,
                late: false,
                ..
            })
        ));
        assert!(!s.core.may_ring());
    }

    #[test]
    fn the_answer_leads_to_the_agents_number_the_bridge_or_the_customer() {
        let answered = |agent: &str, announce: bool, callback: bool| {
            let mut s = Script::new();
            s.enqueue("sales", QueueTimers::default(), 0);
            if callback {
                s.record_callback(1);
            }
            s.offer(agent, 2);
            let out = s.at(
                3,
                Input::AgentAnswered {
                    agent: aid(agent),
                    announce,
                },
            );
            out.into_iter().last()
        };
        assert_eq!(
            answered("1001", true, false),
            Some(Effect::Announce(
                [
                    "agent_number",
                    "digit_1",
                    "digit_0",
                    "digit_0",
                    "digit_1",
                    "will_serve_you"
                ]
                .map(String::from)
                .to_vec()
            ))
        );
        assert_eq!(answered("1001", false, false), Some(Effect::Bridge));
        // An agent without digits in its id has no number to announce.
        assert_eq!(answered("alice", true, false), Some(Effect::Bridge));
        assert_eq!(answered("1001", true, true), Some(Effect::DialCustomer));
    }

    #[test]
    fn an_answer_after_the_ring_limit_that_the_router_accepts_is_late() {
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 0);
        // The answer crossed the CANCEL; the tick had not run yet.
        let out = s.at(
            7,
            Input::AgentAnswered {
                agent: aid("1001"),
                announce: false,
            },
        );
        assert!(matches!(
            &out[0],
            Effect::Publish(Event::CallConnected { late: true, .. })
        ));
    }

    #[test]
    fn a_refused_answer_keeps_the_offer_only_while_other_phones_ring() {
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 0);
        s.at(
            1,
            Input::AnswerRefused {
                agent: aid("1001"),
                still_ringing: true,
            },
        );
        assert_eq!(s.core.offers().len(), 1);
        s.at(
            2,
            Input::AnswerRefused {
                agent: aid("1001"),
                still_ringing: false,
            },
        );
        assert!(s.core.offers().is_empty());
    }

    #[test]
    fn a_withdrawn_offer_is_cancelled_without_a_failure_for_the_router() {
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 0);
        let out = s.at(2, Input::OfferWithdrawn(aid("1001")));
        assert_eq!(out, vec![Effect::CancelRinging(aid("1001"))]);
        assert!(s.core.offers().is_empty());
        // Withdrawn twice: nothing more.
        assert!(s.at(3, Input::OfferWithdrawn(aid("1001"))).is_empty());
    }

    #[test]
    fn an_agent_with_no_phone_fails_at_once_as_unreachable() {
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        let out = s.at(
            1,
            Input::Offered {
                agent: aid("1001"),
                queue: "sales".into(),
                contacts: 0,
            },
        );
        assert!(matches!(
            &out[0],
            Effect::Publish(Event::CallOffered { contacts: 0, .. })
        ));
        assert_eq!(
            routed(&out),
            vec![Command::OfferFailed(
                s.core.call(),
                aid("1001"),
                Outcome::Unreachable
            )]
        );
    }

    #[test]
    fn the_caller_leaving_as_the_agent_answers_frees_the_agent() {
        // CANCEL/200 crossing: the caller's hang-up is handled first; the
        // agent's 200 then finds no offer and the driver answers it with
        // ACK and BYE. The router hears the end once, as a dequeue.
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s.offer("1001", 1);
        let out = s.at(4, Input::Ended(crate::events::ReleasedBy::Caller));
        assert_eq!(out[0], Effect::CancelRinging(aid("1001")));
        assert_eq!(routed(&out), vec![Command::Dequeue(s.core.call())]);
        let out = s.at(
            4,
            Input::AgentAnswered {
                agent: aid("1001"),
                announce: true,
            },
        );
        assert!(out.is_empty());
        assert!(s.core.bridge().is_none());
        assert!(!s.core.in_router());
    }
}
