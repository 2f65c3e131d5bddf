//! hotline: a real-time ACD/CTI telephony server.
//!
//! This file wires the rooms together (see docs/ARCHITECTURE.md): configuration in,
//! the store, the SIP edge and the HTTP listener up, an orderly shutdown out.

pub mod acd;
pub mod api;
pub mod call;
pub mod config;
pub mod events;
pub mod http;
pub mod ivr;
pub mod media;
pub mod metrics;
pub mod recording;
pub mod sip;
pub mod store;
pub mod wiring;

use std::future::Future;

use anyhow::Context;
use tracing::info;

use crate::config::{LogFormat, Settings};
use crate::events::EventBus;

/// Installs the tracing subscriber described by the `[log]` section.
/// `RUST_LOG`, when set, overrides `log.level`.
pub fn init_logging(settings: &Settings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_new(&settings.log.level).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    // rsipstack logs every datagram at info; keep it at warn unless asked.
    let filter = if settings.log.level.contains("rsipstack") {
        filter
    } else {
        filter.add_directive(
            "rsipstack=warn"
                .parse()
                .unwrap_or_else(|_| tracing::Level::WARN.into()),
        )
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was already set up: {e}");
    }
}

/// Runs hotline until `shutdown` resolves, then stops in order: no new calls,
/// in-flight transactions answered, live calls hung up, listeners closed,
/// and last the store, once the calls' final events are in.
pub async fn serve(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = EventBus::default();
    log_events(&bus);
    // Subscribed before anything can happen, so no event is missed.
    let metrics = metrics::Metrics::new(&settings).context("setting up the metrics")?;
    let registry = metrics::follow(&bus, metrics);
    let store = if settings.store.enabled {
        let store = store::Store::start(&settings.store, &bus).with_context(|| {
            format!(
                "cannot keep call records (store.path = {:?})",
                settings.store.path.display().to_string()
            )
        })?;
        info!(path = %settings.store.path.display(), "call records stored");
        Some(store)
    } else {
        info!("store disabled: no call records are kept");
        None
    };
    let prompts = media::load_prompts(&settings).map_err(|issues| {
        anyhow::anyhow!(
            "{}",
            config::ConfigError::Invalid {
                origin: settings.origin.clone(),
                issues
            }
        )
    })?;
    info!(prompts = prompts.len(), dir = %settings.media.prompts.display(), "prompts loaded");
    let media = std::sync::Arc::new(media::MediaRoom::start(&settings, prompts));
    let router = acd::router_from_settings(&settings, std::time::Instant::now())
        .context("setting up the ACD router")?;
    let (decisions_tx, decisions_rx) = tokio::sync::mpsc::unbounded_channel();
    let (router, _router_task) = acd::RouterHandle::start(router, decisions_tx);
    let pacer_stats = media.pacer.stats.clone();
    let wiring = wiring::Wiring::new(router.clone(), media);
    let edge = sip::SipEdge::start(&settings, bus.clone(), wiring.clone())
        .await
        .context("starting the SIP edge")?;
    watch_overload(&edge, &bus, store.as_ref(), pacer_stats);
    let calls = wiring.call_context(edge.context().clone());
    tokio::spawn(follow_decisions(decisions_rx, bus.clone(), calls.clone()));
    if settings.login_on_register {
        tokio::spawn(login_on_register(
            bus.subscribe(),
            edge.context().clone(),
            router.clone(),
        ));
    }
    let http = match settings.http_listen {
        Some(addr) => Some(
            http::start(
                addr,
                calls.clone(),
                router.clone(),
                registry,
                store.as_ref().map(store::Store::stats),
                api::ApiState::new(calls.clone(), router.clone(), &bus),
            )
            .await
            .with_context(|| format!("cannot bind HTTP listener on {addr} (http.listen)"))?,
        ),
        None => None,
    };
    info!(config = %settings.origin, "hotline ready");
    shutdown.await;
    info!("shutting down: refusing new calls, finishing in-flight transactions");
    edge.shutdown(settings.sip.shutdown_grace).await;
    if let Some(http) = http {
        http.stop().await;
    }
    if let Some(store) = store {
        store.close().await;
    }
    info!("hotline stopped");
    Ok(())
}

/// Has the SIP edge shed new calls while the server falls behind: the
/// store's queue and uncommitted rows, the media pacer's late ticks, the
/// event bus's lag (its slowest subscriber, or the metrics' queue).
fn watch_overload(
    edge: &sip::SipEdge,
    bus: &EventBus,
    store: Option<&store::Store>,
    pacer: std::sync::Arc<media::pacer::PacerStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let store = store.map(store::Store::stats);
    let lagging = bus.clone();
    let limits = edge.context().limits.clone();
    sip::overload::watch(
        edge.context().limits.overload.clone(),
        sip::overload::SignalSources {
            calls_up: Box::new(move || limits.calls.counts().0 as u64),
            // Rows kept while the database cannot be written are the write
            // alarm's, not the door's: a full disk must not stop the calls.
            store_backlog: Box::new(move || {
                store.as_ref().map_or(0, |s| {
                    let uncommitted = if s.failing.load(Relaxed) {
                        0
                    } else {
                        s.pending.load(Relaxed)
                    };
                    s.queue.queued() + uncommitted
                })
            }),
            pacer_late_ticks_total: Box::new(move || pacer.late_ticks.load(Relaxed)),
            // The broadcast ring's slowest subscriber, or the metrics'
            // queue: both mean the runtime runs behind the calls.
            bus_lag: Box::new(move || {
                let followers = lagging
                    .backlogs()
                    .into_iter()
                    .filter(|(name, _)| *name != "store")
                    .map(|(_, backlog)| backlog.queued());
                followers.fold(lagging.lag() as u64, u64::max)
            }),
        },
    );
}

/// Writes every event to the log at debug level (target `hotline::events`), as
/// one JSON object per line, until the bus closes. Without that level (the
/// filter is set once, at start) nothing subscribes: a follower that writes
/// nothing must not lag behind the bus under load.
fn log_events(bus: &EventBus) {
    if !tracing::enabled!(target: "hotline::events", tracing::Level::DEBUG) {
        return;
    }
    let mut events = bus.subscribe();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(event) => {
                    let json = serde_json::to_string(&event).unwrap_or_default();
                    tracing::debug!(target: "hotline::events", "{json}");
                }
                Err(RecvError::Lagged(lost)) => {
                    tracing::warn!(target: "hotline::events", lost, "event log fell behind")
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// Carries the router's decisions out: offers and their withdrawal go to the
/// call's actor, agent state changes and alerts become events. A decision for
/// a call that has just ended is dropped: the actor's own goodbye to the
/// router (dequeue, call ended) settles that call's agents.
async fn follow_decisions(
    mut decisions: tokio::sync::mpsc::UnboundedReceiver<acd::Decision>,
    bus: EventBus,
    edge: std::sync::Arc<call::context::CallContext>,
) {
    use call::CallCommand;
    while let Some(decision) = decisions.recv().await {
        match decision {
            acd::Decision::AgentState { agent, state } => {
                let reason = match &state {
                    acd::AgentState::NotReady { reason } => Some(reason.clone()),
                    _ => None,
                };
                info!(agent = %agent, state = state.name(), "agent state");
                bus.publish(events::Event::AgentStateChanged {
                    agent: agent.0,
                    state: state.name(),
                    reason,
                });
            }
            acd::Decision::Offer { call, agent, queue } => {
                let offer = CallCommand::Offer {
                    agents: vec![agent],
                    queue,
                };
                edge.calls.deliver(&call.0, offer);
            }
            acd::Decision::OfferMany {
                call,
                agents,
                queue,
            } => {
                edge.calls
                    .deliver(&call.0, CallCommand::Offer { agents, queue });
            }
            acd::Decision::Cancel { call, agent } => {
                edge.calls.deliver(&call.0, CallCommand::Cancel { agent });
            }
            acd::Decision::BreakOverLimit {
                agent,
                reason,
                not_ready_for,
                count,
            } => {
                tracing::warn!(agent = %agent, %reason, secs = not_ready_for.as_secs(), "break over limit");
                bus.publish(events::Event::BreakOverLimit {
                    agent: agent.0,
                    reason,
                    not_ready_secs: not_ready_for.as_secs(),
                    count,
                });
            }
            acd::Decision::StaffingBelowMinimum {
                queue,
                staffed,
                min,
            } => {
                tracing::warn!(queue = %queue, staffed, min, "staffing below minimum");
                bus.publish(events::Event::StaffingBelowMinimum {
                    queue: queue.0,
                    staffed,
                    min,
                });
            }
        }
    }
}

/// Logs an agent in when a phone registers for it, out when its last
/// registration goes (the router defers that until a call ends).
async fn login_on_register(
    mut events: tokio::sync::broadcast::Receiver<events::Stamped>,
    edge: std::sync::Arc<sip::EdgeContext>,
    router: acd::RouterHandle,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(stamped) => stamped.event,
            Err(RecvError::Lagged(lost)) => {
                tracing::warn!(lost, "agent login follower fell behind");
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let command = match event {
            events::Event::RegistrationAdded { aor, .. }
                if edge.settings.agents.contains_key(&aor) =>
            {
                acd::Command::AgentLogin(acd::AgentId::from(aor.as_str()))
            }
            events::Event::RegistrationRemoved { aor, .. }
                if edge.settings.agents.contains_key(&aor)
                    && edge.registrar.contacts(&aor).is_empty() =>
            {
                acd::Command::AgentLogout(acd::AgentId::from(aor.as_str()))
            }
            _ => continue,
        };
        if router.send(command).is_err() {
            break;
        }
    }
}
