//! The HTTP listener: `/healthz` answers while the server runs, `/metrics`
//! serves the metrics room's page (Prometheus text format), the demo
//! account service behind the default IVR (only with `demo.balance_service`),
//! the CTI API under `/api/v1` and
//! the supervisors' wallboard at `/`.
//!
//! The listener accepts connections itself so that it can bound them: past
//! `limits.http_max_connections` a new connection is closed at once, and a
//! client that does not send a complete request head within
//! `limits.http_header_timeout` (slowloris) is disconnected.

mod wallboard;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::call::context::CallContext;
use crate::sip::limits::EdgeLimits;

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
    edge: Arc<CallContext>,
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
    ctx: Arc<CallContext>,
    router: crate::acd::RouterHandle,
    registry: prometheus::Registry,
    store: Option<Arc<crate::store::StoreStats>>,
    api: Arc<crate::api::ApiState>,
) -> std::io::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let limits = ctx.limits.clone();
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    // Unauthenticated by design: served only when the demo asks for it.
    if ctx.settings.demo.balance_service {
        app = app.route("/demo/balance", get(demo_balance));
    }
    let app = app
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
    let task = tokio::spawn(serve(listener, app, limits, stop));
    Ok(HttpServer { cancel, task })
}

/// An accepted HTTP socket holding its place among the open connections;
/// the place is given back when the socket is dropped, so a connection
/// upgraded to a WebSocket (which outlives hyper's connection future) keeps
/// counting until the socket itself closes.
struct CountedStream {
    stream: tokio::net::TcpStream,
    limits: Arc<EdgeLimits>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.limits.http_open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Arc<EdgeLimits>,
    stop: CancellationToken,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.settings.http_header_timeout);
    let max = limits.settings.http_max_connections;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: let some close first.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if limits.http_open.load(Ordering::Acquire) >= max {
            limits.http_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "HTTP connection refused: too many open");
            continue;
        }
        limits.http_open.fetch_add(1, Ordering::AcqRel);
        let stream = CountedStream {
            stream,
            limits: limits.clone(),
        };
        let router = hyper_util::service::TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |mut request| {
            request.extensions_mut().insert(ConnectInfo(peer));
            hyper::service::Service::call(&router, request)
        });
        let connection = http1
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .with_upgrades();
        let (stop, limits) = (stop.clone(), limits.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                if e.is_timeout() {
                    limits.http_header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "HTTP client sent no complete request head in time");
                } else {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            }
        });
    }
}
