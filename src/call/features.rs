//! What a phone's dialled string means to the call room: a supervisor's
//! monitoring feature code (`*41`, `*42`, `*43` followed by an agent id), or an
//! agent id or queue name, which an agent's phone dials to consult from its
//! call. The phone answers the digest challenge of its account (the edge's
//! authority); the call it acts on is the one the router has its agent on.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::transaction::Transaction;
use tracing::{info, warn};

use super::CallCommand;
use super::consult::{ConsultCommand, ConsultTarget, IncomingConsult};
use super::context::CallContext;
use super::monitor::{IncomingMonitor, MonitorCommand, MonitorMode};
use crate::config::{MonitorSettings, Settings};
use crate::events::Event;
use crate::sip::{phone_account, refuse_with};

/// A dialled string the call room takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feature {
    /// A supervisor monitors an agent's call.
    Monitor { mode: MonitorMode, agent: String },
    /// An agent consults another agent or a queue from its call.
    Consult(ConsultTarget),
}

/// What `dialled` means, or `None` when it is nothing to the call room (a
/// hotline number, or unknown). A feature code wins over a hotline number;
/// an agent id over a queue name.
pub fn feature(settings: &Settings, dialled: &str) -> Option<Feature> {
    if let Some((mode, agent)) = monitor_code(&settings.monitor, dialled) {
        return Some(Feature::Monitor {
            mode,
            agent: agent.to_string(),
        });
    }
    if settings.numbers.contains_key(dialled) {
        return None;
    }
    if settings.agents.contains_key(dialled) {
        Some(Feature::Consult(ConsultTarget::Agent(dialled.to_string())))
    } else if settings.queues.contains_key(dialled) {
        Some(Feature::Consult(ConsultTarget::Queue(dialled.to_string())))
    } else {
        None
    }
}

/// The mode and agent id of a dialled monitoring feature code (`*41` + agent).
fn monitor_code<'a>(
    settings: &MonitorSettings,
    dialled: &'a str,
) -> Option<(MonitorMode, &'a str)> {
    [
        (&settings.listen_code, MonitorMode::Listen),
        (&settings.whisper_code, MonitorMode::Whisper),
        (&settings.barge_code, MonitorMode::Barge),
    ]
    .into_iter()
    .find_map(|(code, mode)| {
        dialled
            .strip_prefix(code.as_str())
            .filter(|agent| !agent.is_empty())
            .map(|agent| (mode, agent))
    })
}

/// Serves a phone's INVITE for `feature` until it is answered or handed to
/// the call it acts on.
pub async fn serve(ctx: Arc<CallContext>, tx: Transaction, source: SocketAddr, feature: Feature) {
    match feature {
        Feature::Monitor { mode, agent } => monitor_invite(ctx, tx, source, mode, agent).await,
        Feature::Consult(target) => consult_invite(ctx, tx, source, target).await,
    }
}

/// A phone dialled a monitoring feature code: it must answer the digest
/// challenge of a supervisor's account, whatever its source (a trunk's
/// caller never monitors), and the agent must be on a call.
async fn monitor_invite(
    ctx: Arc<CallContext>,
    mut tx: Transaction,
    source: SocketAddr,
    mode: MonitorMode,
    agent: String,
) {
    let Some(supervisor) = phone_account(&ctx, &mut tx, source).await else {
        return;
    };
    let refused = |reason: &'static str| Event::MonitorRefused {
        supervisor: supervisor.clone(),
        agent: agent.clone(),
        via: "phone",
        reason,
    };
    if !ctx.settings.monitor.supervisors.contains(&supervisor) {
        warn!(%source, %supervisor, "monitoring feature code from a phone that is no supervisor's");
        ctx.bus.publish(refused("not_supervisor"));
        return refuse_with(&mut tx, 403, "Forbidden (not a supervisor)", vec![]).await;
    }
    let agent_queues = ctx
        .settings
        .agents
        .get(&agent)
        .map(|a| a.queues.as_slice())
        .unwrap_or_default();
    if !ctx.settings.monitor.may_monitor(&supervisor, agent_queues) {
        warn!(%supervisor, %agent, "monitoring feature code for an agent outside the supervisor's queues");
        ctx.bus.publish(refused("out_of_scope"));
        return refuse_with(
            &mut tx,
            403,
            "Forbidden (not an agent of your queues)",
            vec![],
        )
        .await;
    }
    let call = match call_of_agent(&ctx, &agent).await {
        Ok(call) => call,
        Err(()) => return refuse_with(&mut tx, 503, "Service Unavailable", vec![]).await,
    };
    let Some(call) = call else {
        info!(%supervisor, %agent, "nothing to monitor");
        return refuse_with(&mut tx, 404, "Not Found (the agent is on no call)", vec![]).await;
    };
    let incoming = IncomingMonitor {
        tx,
        supervisor,
        mode,
    };
    let command = CallCommand::Monitor(MonitorCommand::Incoming(Box::new(incoming)));
    if let Err(CallCommand::Monitor(MonitorCommand::Incoming(incoming))) =
        ctx.calls.try_deliver(&call, command)
    {
        let mut tx = incoming.tx;
        refuse_with(&mut tx, 404, "Not Found (the call has just ended)", vec![]).await;
    }
}

/// The call `agent` is talking on (or holding), per the router.
async fn call_of_agent(ctx: &CallContext, agent: &str) -> Result<Option<String>, ()> {
    let snapshot = ctx.router.snapshot().await.map_err(|_| ())?;
    Ok(snapshot
        .agents
        .into_iter()
        .find(|a| a.id.0 == agent && matches!(a.state, "talking" | "on-hold"))
        .and_then(|a| a.call)
        .map(|c| c.0.to_string()))
}

/// An agent's phone dialled another agent or a queue: a consultation from
/// the call the agent is on (the caller waits on hold), which the phone may
/// complete with REFER and Replaces (attended transfer).
async fn consult_invite(
    ctx: Arc<CallContext>,
    mut tx: Transaction,
    source: SocketAddr,
    target: ConsultTarget,
) {
    let Some(agent) = phone_account(&ctx, &mut tx, source).await else {
        return;
    };
    let call = match call_of_agent(&ctx, &agent).await {
        Ok(Some(call)) => call,
        Ok(None) => {
            info!(%agent, %target, "an agent dialled an agent or a queue while on no call");
            return refuse_with(
                &mut tx,
                403,
                "Forbidden (an agent dials an agent or a queue only to consult during a call)",
                vec![],
            )
            .await;
        }
        Err(()) => return refuse_with(&mut tx, 503, "Service Unavailable", vec![]).await,
    };
    let incoming = IncomingConsult { tx, target };
    let command = CallCommand::Consult(ConsultCommand::Incoming(Box::new(incoming)));
    if let Err(CallCommand::Consult(ConsultCommand::Incoming(incoming))) =
        ctx.calls.try_deliver(&call, command)
    {
        let mut tx = incoming.tx;
        refuse_with(&mut tx, 404, "Not Found (the call has just ended)", vec![]).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::EMBEDDED_DEFAULT;

    fn settings() -> Settings {
        Settings::from_toml(EMBEDDED_DEFAULT, "default", &BTreeMap::new())
            .expect("the embedded default configuration is valid")
    }

    fn monitor(mode: MonitorMode, agent: &str) -> Option<Feature> {
        Some(Feature::Monitor {
            mode,
            agent: agent.to_string(),
        })
    }

    #[test]
    fn monitoring_codes_name_the_mode_and_the_agent() {
        let s = settings();
        assert_eq!(feature(&s, "*411001"), monitor(MonitorMode::Listen, "1001"));
        assert_eq!(
            feature(&s, "*421002"),
            monitor(MonitorMode::Whisper, "1002")
        );
        assert_eq!(feature(&s, "*431003"), monitor(MonitorMode::Barge, "1003"));
        // The agent is whatever follows the code; the call room checks it.
        assert_eq!(
            feature(&s, "*41nobody"),
            monitor(MonitorMode::Listen, "nobody")
        );
    }

    #[test]
    fn a_code_without_an_agent_is_nothing() {
        let s = settings();
        for bare in ["*41", "*42", "*43"] {
            assert_eq!(feature(&s, bare), None, "{bare}");
        }
    }

    #[test]
    fn configured_codes_replace_the_defaults() {
        let mut s = settings();
        s.monitor.listen_code = "#7".into();
        assert_eq!(feature(&s, "#71001"), monitor(MonitorMode::Listen, "1001"));
        assert_eq!(feature(&s, "*411001"), None);
        assert_eq!(
            feature(&s, "*421001"),
            monitor(MonitorMode::Whisper, "1001")
        );
    }

    #[test]
    fn an_agent_id_or_a_queue_name_is_a_consultation() {
        let s = settings();
        assert_eq!(
            feature(&s, "1002"),
            Some(Feature::Consult(ConsultTarget::Agent("1002".into())))
        );
        assert_eq!(
            feature(&s, "sales"),
            Some(Feature::Consult(ConsultTarget::Queue("sales".into())))
        );
    }

    #[test]
    fn hotline_numbers_and_unknown_strings_are_nothing() {
        let s = settings();
        assert!(s.numbers.contains_key("400"));
        assert_eq!(feature(&s, "400"), None);
        assert_eq!(feature(&s, "9999"), None);
        assert_eq!(feature(&s, ""), None);
    }

    #[test]
    fn a_hotline_number_is_never_a_consultation_but_a_code_wins_over_it() {
        let mut s = settings();
        let number = s.numbers["400"].clone();
        s.numbers.insert("1002".into(), number.clone());
        s.numbers.insert("*411001".into(), number);
        assert_eq!(feature(&s, "1002"), None);
        assert_eq!(feature(&s, "*411001"), monitor(MonitorMode::Listen, "1001"));
    }

    #[test]
    fn an_agent_id_wins_over_a_queue_of_the_same_name() {
        let mut s = settings();
        let queue = s.queues["sales"].clone();
        s.queues.insert("1002".into(), queue);
        assert_eq!(
            feature(&s, "1002"),
            Some(Feature::Consult(ConsultTarget::Agent("1002".into())))
        );
    }
}
