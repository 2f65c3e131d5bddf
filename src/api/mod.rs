//! The `api` room: the CTI API under `/api/v1` for agent desktops, CRMs and
//! supervisors — agents and their state, live calls, queues, and the live
//! event stream (WebSocket). Routes are registered together with their
//! OpenAPI description (utoipa), so `/api/v1/openapi.json` cannot drift from
//! what is served. Every request is authenticated by a bearer token whose
//! role decides what it sees (an agent: itself and its calls; a supervisor:
//! its queues; an admin: everything).

mod agents;
pub mod auth;
mod bans;
mod calls;
mod consult;
pub mod error;
mod events;
pub mod floor;
mod monitor;
mod queues;
mod recordings;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRef;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::auth::Tokens;
use self::floor::Floor;
use crate::acd::RouterHandle;
use crate::call::context::CallContext;

/// Everything the API handlers share.
pub struct ApiState {
    pub edge: Arc<CallContext>,
    pub router: RouterHandle,
    pub floor: Floor,
    pub tokens: Tokens,
    pub throttle: auth::FailedAuths,
}

/// Axum's state for the API routes.
#[derive(Clone)]
pub struct Shared(pub Arc<ApiState>);

impl FromRef<Shared> for Arc<ApiState> {
    fn from_ref(shared: &Shared) -> Self {
        shared.0.clone()
    }
}

impl ApiState {
    /// The API for this edge and router; its floor follows `bus`.
    pub fn new(
        edge: Arc<CallContext>,
        router: RouterHandle,
        bus: &crate::events::EventBus,
    ) -> Arc<ApiState> {
        let settings = &edge.settings;
        let service_level: HashMap<String, std::time::Duration> = settings
            .queues
            .iter()
            .map(|(name, q)| (name.clone(), q.service_level))
            .collect();
        let limits = settings.api.limits;
        let floor = Floor::with_limits(
            service_level,
            floor::JournalLimits {
                max_bytes: limits.journal_max_bytes,
                entry_max_bytes: limits.journal_entry_max_bytes,
            },
        );
        floor.follow(bus);
        Arc::new(ApiState {
            tokens: Tokens::new(settings.api.tokens.clone()),
            throttle: auth::FailedAuths::new(
                settings.auth.max_failures,
                settings.auth.failure_window,
                settings.auth.ban_time,
                settings.api.limits.max_failed_sources,
            ),
            edge,
            router,
            floor,
        })
    }
}

impl ApiState {
    /// The API's own bounds on the metrics page, in the text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let journal = self.floor.journal_stats();
        let families: [(&str, &str, &str, u64); 6] = [
            (
                "hotline_api_auth_failure_sources",
                "gauge",
                "Source addresses in the API's failed-authentication table.",
                self.throttle.tracked_sources() as u64,
            ),
            (
                "hotline_api_auth_failure_sources_evicted_total",
                "counter",
                "Sources pushed out of the full failed-authentication table while their window or ban ran.",
                self.throttle.evicted(),
            ),
            (
                "hotline_api_journal_bytes",
                "gauge",
                "Bytes of event JSON held by the live-event journal.",
                journal.bytes.load(Relaxed),
            ),
            (
                "hotline_api_journal_truncated_total",
                "counter",
                "Events cut down to api.journal_entry_max_bytes in the live-event journal.",
                journal.truncated.load(Relaxed),
            ),
            (
                "hotline_api_journal_evicted_total",
                "counter",
                "Journal entries dropped early to keep api.journal_max_bytes.",
                journal.evicted_for_bytes.load(Relaxed),
            ),
            (
                "hotline_api_event_clients_dropped_total",
                "counter",
                "Event stream clients disconnected for falling behind (they may resume with since).",
                journal.dropped_clients.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hotline CTI API",
        description = "Agents, calls and queues of a hotline call center, and its live event \
            stream. Authenticate with `Authorization: Bearer TOKEN`; the WebSocket also \
            accepts `?token=`. Errors are `{code, message}`.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "agents", description = "Agents and their state"),
        (name = "calls", description = "Live calls"),
        (name = "queues", description = "Queues and their figures"),
        (name = "events", description = "The live event stream"),
        (name = "recordings", description = "Call recordings (read only: there is no delete)"),
        (name = "bans", description = "Lockouts from SIP authentication (admins only)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every API route together with its description.
fn documented() -> OpenApiRouter<Shared> {
    OpenApiRouter::<Shared>::with_openapi(ApiDoc::openapi())
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::get_agent))
        .routes(routes!(agents::login))
        .routes(routes!(agents::logout))
        .routes(routes!(agents::ready))
        .routes(routes!(agents::not_ready))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::get_queue))
        .routes(routes!(queues::pause_queue))
        .routes(routes!(queues::list_calls))
        .routes(routes!(queues::get_call))
        .routes(routes!(calls::hangup))
        .routes(routes!(calls::hold))
        .routes(routes!(calls::unhold))
        .routes(routes!(calls::transfer))
        .routes(routes!(calls::disposition))
        .routes(routes!(consult::start_consult, consult::cancel_consult))
        .routes(routes!(consult::transfer_consult))
        .routes(routes!(consult::conference))
        .routes(routes!(
            monitor::start_monitor,
            monitor::change_monitor,
            monitor::stop_monitor
        ))
        .routes(routes!(events::events))
        .routes(routes!(recordings::list_recordings))
        .routes(routes!(recordings::get_recording))
        .routes(routes!(bans::list_bans))
}

/// The API routes (with their state); `/api/v1/openapi.json` serves their
/// document.
pub fn routes(state: Arc<ApiState>) -> axum::Router {
    let (router, openapi) = documented().split_for_parts();
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || async move { axum::Json(openapi.clone()) }),
        )
        .with_state(Shared(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the API serves is in the document.
    #[test]
    fn the_document_lists_every_route() {
        let (_, openapi) = documented().split_for_parts();
        let paths: Vec<&String> = openapi.paths.paths.keys().collect();
        for path in [
            "/api/v1/agents",
            "/api/v1/agents/{id}",
            "/api/v1/agents/{id}/login",
            "/api/v1/agents/{id}/logout",
            "/api/v1/agents/{id}/ready",
            "/api/v1/agents/{id}/not-ready",
            "/api/v1/queues",
            "/api/v1/queues/{id}",
            "/api/v1/queues/{id}/pause",
            "/api/v1/calls",
            "/api/v1/calls/{id}",
            "/api/v1/calls/{id}/hangup",
            "/api/v1/calls/{id}/hold",
            "/api/v1/calls/{id}/unhold",
            "/api/v1/calls/{id}/transfer",
            "/api/v1/calls/{id}/disposition",
            "/api/v1/calls/{id}/monitor",
            "/api/v1/calls/{id}/consult",
            "/api/v1/calls/{id}/consult/transfer",
            "/api/v1/calls/{id}/consult/conference",
            "/api/v1/events",
            "/api/v1/recordings",
            "/api/v1/recordings/{call_id}",
            "/api/v1/bans",
        ] {
            assert!(paths.iter().any(|p| *p == path), "{path} not in {paths:?}");
        }
        assert!(
            openapi
                .components
                .as_ref()
                .is_some_and(|c| c.security_schemes.contains_key("bearer"))
        );
    }
}
