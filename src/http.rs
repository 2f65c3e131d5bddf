//! The HTTP listener: health and a first view of the server's state.
//!
//! `/healthz` answers while the server runs; `/metrics` gives the live counts the
//! SIP edge already knows, in the Prometheus text format. The full metrics room
//! (fed by events) and the CTI API will mount here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::sip::EdgeContext;

pub struct HttpServer {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// The demo account service behind the default flow's balance self-service:
/// `GET /demo/balance?account=1001&pin=1234` → `{"balance": "250.75"}`; a wrong
/// PIN or unknown account → `{"next": "pin_wrong"}` (the flow's node for it).
async fn demo_balance(
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::Json<serde_json::Value> {
    const ACCOUNTS: [(&str, &str, &str); 2] =
        [("1001", "1234", "250.75"), ("2002", "5678", "18.20")];
    let account = query.get("account").map(String::as_str).unwrap_or("");
    let pin = query.get("pin").map(String::as_str).unwrap_or("");
    let reply = match ACCOUNTS.iter().find(|(a, p, _)| *a == account && *p == pin) {
        Some((_, _, balance)) => serde_json::json!({ "balance": balance, "verified": "yes" }),
        None => serde_json::json!({ "next": "pin_wrong", "verified": "no" }),
    };
    axum::Json(reply)
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Clone)]
struct HttpState {
    edge: Arc<EdgeContext>,
    router: crate::acd::RouterHandle,
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let ctx = &state.edge;
    let mut agents = std::collections::BTreeMap::new();
    for name in [
        "logged-out",
        "ready",
        "not-ready",
        "offered",
        "talking",
        "on-hold",
        "wrap-up",
    ] {
        agents.insert(name, 0usize);
    }
    if let Ok(snapshot) = state.router.snapshot().await {
        for agent in snapshot.agents {
            *agents.entry(agent.state).or_default() += 1;
        }
    }
    let mut by_state =
        String::from("# HELP hotline_agents Agents by state.\n# TYPE hotline_agents gauge\n");
    for (name, count) in agents {
        by_state.push_str(&format!("hotline_agents{{state=\"{name}\"}} {count}\n"));
    }
    let body = format!(
        "# HELP hotline_build_info Build information.\n\
         # TYPE hotline_build_info gauge\n\
         hotline_build_info{{version=\"{}\"}} 1\n\
         # HELP hotline_registrations_active Live registration bindings (agent contacts).\n\
         # TYPE hotline_registrations_active gauge\n\
         hotline_registrations_active {}\n\
         # HELP hotline_calls_active Calls in progress.\n\
         # TYPE hotline_calls_active gauge\n\
         hotline_calls_active {}\n",
        env!("CARGO_PKG_VERSION"),
        ctx.registrar.active_bindings(),
        ctx.calls.len(),
    ) + &by_state;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

pub async fn start(
    addr: SocketAddr,
    ctx: Arc<EdgeContext>,
    router: crate::acd::RouterHandle,
) -> std::io::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/demo/balance", get(demo_balance))
        .with_state(HttpState { edge: ctx, router });
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "HTTP listener stopped");
        }
    });
    Ok(HttpServer { cancel, task })
}
