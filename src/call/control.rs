//! Why a call refuses a control request (CTI API, the agent's phone, a
//! supervisor): one error per reason, each with a stable machine code the API
//! returns beside the message, and a kind saying what sort of refusal it is.

use super::core::TransferLimit;
use super::core::consult::{ConsultRefusal, ConsultTarget};
use super::core::monitor::MonitorRefusal;
use crate::acd::RouterError;

/// What sort of refusal a [`ControlError`] is, for callers that answer it
/// in their own protocol (an HTTP status, a SIP response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The call (or an agent) is not in a state that allows the request now.
    Conflict,
    /// The request names something that does not exist.
    NotFound,
    /// The request contradicts itself (an agent consulting itself).
    Invalid,
    /// A resource or service the request needs is not available.
    Unavailable,
}

/// A refused call-control request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request needs a caller talking with an agent; `action` completes
    /// "only a call connected to an agent can …".
    #[error("only a call connected to an agent can {action}")]
    NotBridged { action: &'static str },
    #[error("no agent on the call")]
    NoAgent,
    /// `acd.max_transfers` reached (rulebook L6).
    #[error("this call was transferred {done} time(s) already; at most {max} (rulebook L6)")]
    TransferLimitReached { done: u32, max: u32 },
    #[error("no queue {0}")]
    UnknownQueue(String),
    #[error("no IVR flow {0}")]
    UnknownFlow(String),
    #[error("queue {0} has no survey")]
    NoSurvey(String),
    #[error("a consultation is already going on")]
    AlreadyConsulting,
    #[error("an agent cannot consult itself")]
    SelfConsult,
    /// The router would not reserve the consulted agent or queue.
    #[error("{}", consult_refusal(target, reason))]
    ConsultRefused {
        target: ConsultTarget,
        reason: RouterError,
    },
    #[error("the ACD router has stopped")]
    RouterStopped,
    #[error("no consultation is going on")]
    NotConsulting,
    #[error("the consulted agent has not answered")]
    ConsultNotAnswered,
    #[error("a consultation dialled from the phone joins with the phone's own conference key")]
    ConsultFromPhone,
    #[error("a supervisor is on the call; a three-way call needs the mixer")]
    SupervisorOnCall,
    #[error("nobody monitors this call")]
    NotMonitored,
    #[error("a three-way call is going on")]
    ThreeWayCall,
    #[error("supervisor {0} already monitors this call")]
    MonitoredByAnother(String),
    #[error("{0} already monitors this call")]
    AlreadyMonitoring(String),
    #[error("the phone of {0} is not registered")]
    PhoneNotRegistered(String),
    /// A new leg could not be set up (no RTP ports, the INVITE not sent).
    #[error("{0}")]
    LegFailed(String),
}

pub(crate) fn consult_refusal(target: &ConsultTarget, reason: &RouterError) -> String {
    match target {
        ConsultTarget::Agent(agent) => format!("agent {agent} cannot be consulted now: {reason}"),
        ConsultTarget::Queue(queue) => format!("queue {queue} refused the consultation: {reason}"),
    }
}

impl ControlError {
    /// The stable, machine-readable name of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::NotBridged { .. } => "not_bridged",
            ControlError::NoAgent => "no_agent",
            ControlError::TransferLimitReached { .. } => "transfer_limit_reached",
            ControlError::UnknownQueue(_) | ControlError::UnknownFlow(_) => "unknown_target",
            ControlError::NoSurvey(_) => "no_survey",
            ControlError::AlreadyConsulting => "already_consulting",
            ControlError::SelfConsult => "self_consult",
            ControlError::ConsultRefused { reason, .. } => match reason {
                RouterError::UnknownAgent(_) | RouterError::UnknownQueue(_) => "unknown_target",
                RouterError::InvalidState { .. } => "agent_not_ready",
                RouterError::NoAgents { .. } => "no_agents",
                RouterError::QueueFull { .. } => "queue_full",
                _ => "consult_refused",
            },
            ControlError::RouterStopped => "router_stopped",
            ControlError::NotConsulting => "not_consulting",
            ControlError::ConsultNotAnswered => "consult_not_answered",
            ControlError::ConsultFromPhone => "consult_from_phone",
            ControlError::SupervisorOnCall => "supervisor_on_call",
            ControlError::NotMonitored => "not_monitored",
            ControlError::ThreeWayCall => "three_way_call",
            ControlError::MonitoredByAnother(_) => "monitored_by_another",
            ControlError::AlreadyMonitoring(_) => "already_monitoring",
            ControlError::PhoneNotRegistered(_) => "phone_not_registered",
            ControlError::LegFailed(_) => "leg_failed",
        }
    }

    /// What sort of refusal this is.
    pub fn kind(&self) -> RefusalKind {
        use ControlError::*;
        match self {
            UnknownQueue(_) | UnknownFlow(_) | NoSurvey(_) => RefusalKind::NotFound,
            ConsultRefused {
                reason: RouterError::UnknownAgent(_) | RouterError::UnknownQueue(_),
                ..
            } => RefusalKind::NotFound,
            SelfConsult => RefusalKind::Invalid,
            RouterStopped | LegFailed(_) => RefusalKind::Unavailable,
            // The transfer limit is the call's own history standing against
            // the request, like the other states here.
            NotBridged { .. }
            | NoAgent
            | TransferLimitReached { .. }
            | AlreadyConsulting
            | ConsultRefused { .. }
            | NotConsulting
            | ConsultNotAnswered
            | ConsultFromPhone
            | SupervisorOnCall
            | NotMonitored
            | ThreeWayCall
            | MonitoredByAnother(_)
            | AlreadyMonitoring(_)
            | PhoneNotRegistered(_) => RefusalKind::Conflict,
        }
    }
}

impl From<ConsultRefusal> for ControlError {
    fn from(refusal: ConsultRefusal) -> ControlError {
        match refusal {
            ConsultRefusal::NotBridged => ControlError::NotBridged { action: "consult" },
            ConsultRefusal::NoAgent => ControlError::NoAgent,
            ConsultRefusal::AlreadyRunning => ControlError::AlreadyConsulting,
            ConsultRefusal::ConsultsItself => ControlError::SelfConsult,
            ConsultRefusal::NoQueue(queue) => ControlError::UnknownQueue(queue),
            ConsultRefusal::Refused { target, reason } => {
                ControlError::ConsultRefused { target, reason }
            }
            ConsultRefusal::RouterStopped => ControlError::RouterStopped,
            ConsultRefusal::NotRunning => ControlError::NotConsulting,
            ConsultRefusal::NotAnswered => ControlError::ConsultNotAnswered,
            ConsultRefusal::TransferLimit { done, max } => {
                ControlError::TransferLimitReached { done, max }
            }
            ConsultRefusal::DialledFromPhone => ControlError::ConsultFromPhone,
            ConsultRefusal::SupervisorOn => ControlError::SupervisorOnCall,
        }
    }
}

impl From<MonitorRefusal> for ControlError {
    fn from(refusal: MonitorRefusal) -> ControlError {
        match refusal {
            MonitorRefusal::NotBridged => ControlError::NotBridged {
                action: "be monitored",
            },
            MonitorRefusal::ThreeWay => ControlError::ThreeWayCall,
            MonitorRefusal::Taken(supervisor) => ControlError::MonitoredByAnother(supervisor),
            MonitorRefusal::AlreadyOn(supervisor) => ControlError::AlreadyMonitoring(supervisor),
            MonitorRefusal::NobodyMonitors => ControlError::NotMonitored,
            MonitorRefusal::Unreachable(why) => why,
        }
    }
}

impl From<TransferLimit> for ControlError {
    fn from(limit: TransferLimit) -> ControlError {
        ControlError::TransferLimitReached {
            done: limit.done,
            max: limit.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::acd::{AgentId, CallId, QueueId};

    fn consult_refused(reason: RouterError) -> ControlError {
        ControlError::ConsultRefused {
            target: ConsultTarget::Agent("1003".into()),
            reason,
        }
    }

    /// One of each refusal (and of each router reason a consultation meets).
    fn every_refusal() -> Vec<ControlError> {
        vec![
            ControlError::NotBridged { action: "consult" },
            ControlError::NoAgent,
            ControlError::TransferLimitReached { done: 1, max: 1 },
            ControlError::UnknownQueue("nowhere".into()),
            ControlError::UnknownFlow("nowhere".into()),
            ControlError::NoSurvey("support".into()),
            ControlError::AlreadyConsulting,
            ControlError::SelfConsult,
            consult_refused(RouterError::UnknownAgent(AgentId::from("1003"))),
            consult_refused(RouterError::InvalidState {
                agent: AgentId::from("1003"),
                action: "take a call",
                state: "logged-out",
            }),
            consult_refused(RouterError::NoAgents {
                queue: QueueId::from("sales"),
            }),
            consult_refused(RouterError::QueueFull {
                queue: QueueId::from("sales"),
                max_len: 3,
            }),
            consult_refused(RouterError::DuplicateCall(CallId::from("c1"))),
            ControlError::RouterStopped,
            ControlError::NotConsulting,
            ControlError::ConsultNotAnswered,
            ControlError::ConsultFromPhone,
            ControlError::SupervisorOnCall,
            ControlError::NotMonitored,
            ControlError::ThreeWayCall,
            ControlError::MonitoredByAnother("2002".into()),
            ControlError::AlreadyMonitoring("2001".into()),
            ControlError::PhoneNotRegistered("2001".into()),
            ControlError::LegFailed("no RTP ports for another leg".into()),
        ]
    }

    #[test]
    fn codes_are_snake_case_and_tell_the_refusals_apart() {
        let mut by_code: HashMap<&str, usize> = HashMap::new();
        for refusal in every_refusal() {
            *by_code.entry(refusal.code()).or_default() += 1;
        }
        for (code, count) in &by_code {
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
            // An unknown queue, IVR flow or consulted agent is one thing to
            // a client: a target that does not exist.
            let expected = if *code == "unknown_target" { 3 } else { 1 };
            assert_eq!(*count, expected, "{code}");
        }
    }

    #[test]
    fn codes_are_stable() {
        let code = |e: ControlError| e.code();
        assert_eq!(
            code(ControlError::NotBridged { action: "consult" }),
            "not_bridged"
        );
        assert_eq!(
            code(ControlError::TransferLimitReached { done: 2, max: 2 }),
            "transfer_limit_reached"
        );
        assert_eq!(
            code(ControlError::UnknownQueue("x".into())),
            "unknown_target"
        );
        assert_eq!(
            code(consult_refused(RouterError::UnknownQueue(QueueId::from(
                "x"
            )))),
            "unknown_target"
        );
        assert_eq!(
            code(consult_refused(RouterError::InvalidState {
                agent: AgentId::from("1003"),
                action: "take a call",
                state: "logged-out",
            })),
            "agent_not_ready"
        );
        assert_eq!(code(ControlError::AlreadyConsulting), "already_consulting");
        assert_eq!(code(ControlError::SelfConsult), "self_consult");
        assert_eq!(code(ControlError::NotMonitored), "not_monitored");
        assert_eq!(code(ControlError::RouterStopped), "router_stopped");
    }

    #[test]
    fn kinds_follow_what_stands_against_the_request() {
        use RefusalKind::*;
        let kind = |e: ControlError| e.kind();
        assert_eq!(kind(ControlError::UnknownFlow("x".into())), NotFound);
        assert_eq!(kind(ControlError::NoSurvey("support".into())), NotFound);
        assert_eq!(
            kind(consult_refused(RouterError::UnknownAgent(AgentId::from(
                "1003"
            )))),
            NotFound
        );
        assert_eq!(kind(ControlError::SelfConsult), Invalid);
        assert_eq!(kind(ControlError::RouterStopped), Unavailable);
        assert_eq!(
            kind(ControlError::LegFailed("no ports".into())),
            Unavailable
        );
        assert_eq!(kind(ControlError::NotConsulting), Conflict);
        assert_eq!(
            kind(ControlError::TransferLimitReached { done: 1, max: 1 }),
            Conflict
        );
        assert_eq!(
            kind(consult_refused(RouterError::NoAgents {
                queue: QueueId::from("sales")
            })),
            Conflict
        );
    }

    /// The messages people and the API's clients already read stay as they were.
    #[test]
    fn messages_read_as_before() {
        let text = |e: ControlError| e.to_string();
        assert_eq!(
            text(ControlError::NotBridged {
                action: "be transferred"
            }),
            "only a call connected to an agent can be transferred"
        );
        assert_eq!(
            text(ControlError::TransferLimitReached { done: 1, max: 1 }),
            "this call was transferred 1 time(s) already; at most 1 (rulebook L6)"
        );
        assert_eq!(
            text(ControlError::ConsultRefused {
                target: ConsultTarget::Queue("sales".into()),
                reason: RouterError::NoAgents {
                    queue: QueueId::from("sales")
                },
            }),
            "queue sales refused the consultation: queue sales has no agent logged in"
        );
        assert_eq!(
            text(consult_refused(RouterError::UnknownAgent(AgentId::from(
                "1003"
            )))),
            "agent 1003 cannot be consulted now: unknown agent 1003"
        );
        assert_eq!(
            text(ControlError::PhoneNotRegistered("2001".into())),
            "the phone of 2001 is not registered"
        );
        assert_eq!(
            text(ControlError::MonitoredByAnother("2002".into())),
            "supervisor 2002 already monitors this call"
        );
        assert_eq!(
            text(ControlError::LegFailed(
                "no RTP ports for another leg: x".into()
            )),
            "no RTP ports for another leg: x"
        );
    }
}
