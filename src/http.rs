//! The HTTP listener: `/healthz` answers while the server runs, `/metrics`
//! serves the metrics room's page (Prometheus text format), the demo
//! account service behind the default IVR, the CTI API under `/api/v1` and
//! the supervisors' wallboard at `/`.

mod wallboard;

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
    registry: prometheus::Registry,
    started: std::time::Instant,
    store: Option<Arc<crate::store::StoreStats>>,
    api: Arc<crate::api::ApiState>,
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let snapshot = state.router.snapshot().await.ok();
    let mut body = crate::metrics::render(&crate::metrics::Sources {
        registry: &state.registry,
        edge: &state.edge,
        snapshot: snapshot.as_ref(),
        started: state.started,
        store: state.store.as_deref().map(|s| {
            use std::sync::atomic::Ordering::Relaxed;
            crate::metrics::StoreFigures {
                errors: s.errors.load(Relaxed),
                rows_written: s.rows_written.load(Relaxed),
                pending: s.pending.load(Relaxed),
                write_failures: s.write_failures.load(Relaxed),
                failing: s.failing.load(Relaxed),
                rows_dropped: s.rows_dropped.load(Relaxed),
                recovered: s.recovered.load(Relaxed),
                refusals_unsampled: s.refusals_unsampled.load(Relaxed),
                events_expired: s.events_expired.load(Relaxed),
                cdrs_expired: s.cdrs_expired.load(Relaxed),
            }
        }),
    });
    state.api.render_metrics(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

pub async fn start(
    addr: SocketAddr,
    ctx: Arc<EdgeContext>,
    router: crate::acd::RouterHandle,
    registry: prometheus::Registry,
    store: Option<Arc<crate::store::StoreStats>>,
    api: Arc<crate::api::ApiState>,
) -> std::io::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/demo/balance", get(demo_balance))
        .with_state(HttpState {
            edge: ctx,
            router,
            registry,
            started: std::time::Instant::now(),
            store,
            api: api.clone(),
        })
        .merge(crate::api::routes(api))
        .merge(wallboard::routes());
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "HTTP listener stopped");
        }
    });
    Ok(HttpServer { cancel, task })
}
