//! `/api/v1/events`: the live event stream over a WebSocket, as JSON objects
//! with a `cursor`, filtered by the token's role (an agent sees its own state
//! and calls — `call_offered` is its screen pop, with the IVR's variables —,
//! a supervisor its queues and their agents, an admin everything). A client
//! that reconnects with `?since=CURSOR` within the journal's window misses
//! nothing; one that cannot keep up (more than the live buffer behind, or a
//! message not taken within a few seconds) is disconnected and counted,
//! never slowing calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::ApiState;
use super::auth::Principal;
use super::error::ApiError;
use super::floor::Entry;
use crate::config::ApiRole;

/// How long one message may take to leave before its client counts as
/// stuck (it stopped reading) and is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest message (and frame) a client may send: the stream only reads
/// control traffic from it, so anything bigger is refused before it is
/// buffered.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamOptions {
    /// Resume after this cursor (the last one received).
    pub since: Option<u64>,
    /// The bearer token, for browsers (which cannot set WebSocket headers);
    /// read by the authentication from the query string itself.
    #[allow(dead_code)]
    pub token: Option<String>,
}

/// Whether `who` may see `entry`.
pub fn visible(who: &Principal, entry: &Entry, agent_queues: &dyn Fn(&str) -> Vec<String>) -> bool {
    match who.role {
        ApiRole::Admin => true,
        ApiRole::Agent => entry.agent.is_some() && entry.agent == who.agent,
        ApiRole::Supervisor => {
            if let Some(queue) = &entry.queue {
                return who.may_see_queue(queue);
            }
            entry
                .agent
                .as_deref()
                .is_some_and(|a| agent_queues(a).iter().any(|q| who.may_see_queue(q)))
        }
    }
}

/// The live event stream (WebSocket upgrade). Each message is one event:
/// `{"cursor": N, "at": unix_ms, "type": "...", ...}`. With `since`, events
/// after that cursor still in the journal come first; a `since` older than
/// the journal gets a `{"type": "gap", "since": N, "resumes_at": M}` message
/// first (events `N + 1` to `M - 1` are lost), then the whole journal.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    security(("bearer" = [])),
    params(StreamOptions),
    responses(
        (status = 101, description = "Switching to the WebSocket event stream"),
        (status = 401, body = ApiError),
    ))]
pub async fn events(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Query(options): Query<StreamOptions>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| stream(state, who, options.since, socket))
}

fn message(entry: &Entry) -> Option<Message> {
    let mut json = (*entry.json).clone();
    if let Some(object) = json.as_object_mut() {
        object.insert("cursor".into(), entry.cursor.into());
    }
    serde_json::to_string(&json)
        .ok()
        .map(|text| Message::Text(text.into()))
}

/// Sends `msg`; false when the client is gone or is dropped for not taking
/// it within [`SEND_TIMEOUT`] (counted on the metrics page).
async fn send(state: &ApiState, socket: &mut WebSocket, msg: Message) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await {
        Ok(sent) => sent.is_ok(),
        Err(_) => {
            tracing::info!("an event stream client stopped reading: dropped");
            let stats = state.floor.journal_stats();
            stats.dropped_clients.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

async fn stream(state: Arc<ApiState>, who: Principal, since: Option<u64>, mut socket: WebSocket) {
    let settings = state.edge.settings.clone();
    let agent_queues = move |agent: &str| {
        settings
            .agents
            .get(agent)
            .map(|a| a.queues.clone())
            .unwrap_or_default()
    };
    // Subscribe first, then replay: nothing falls between the two, and what
    // both deliver is sent once (by cursor).
    let mut live = state.floor.subscribe();
    let mut last: Option<u64> = None;
    if let Some(cursor) = since {
        last = Some(cursor);
        let (backlog, gap) = state.floor.resume(cursor);
        if let Some(resumes_at) = gap {
            // The client missed `since + 1` up to `resumes_at` (exclusive);
            // what the journal still holds follows.
            let gap = serde_json::json!({"type": "gap", "since": cursor, "resumes_at": resumes_at})
                .to_string();
            if !send(&state, &mut socket, Message::Text(gap.into())).await {
                return;
            }
        }
        for entry in backlog {
            last = Some(entry.cursor);
            if visible(&who, &entry, &agent_queues)
                && let Some(msg) = message(&entry)
                && !send(&state, &mut socket, msg).await
            {
                return;
            }
        }
    }
    loop {
        tokio::select! {
            entry = live.recv() => match entry {
                Ok(entry) => {
                    if last.is_some_and(|l| entry.cursor <= l) {
                        continue;
                    }
                    last = Some(entry.cursor);
                    if visible(&who, &entry, &agent_queues)
                        && let Some(msg) = message(&entry)
                        && !send(&state, &mut socket, msg).await
                    {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Too slow: drop it; it may reconnect with `since`.
                    let stats = state.floor.journal_stats();
                    stats.dropped_clients.fetch_add(1, Ordering::Relaxed);
                    let close = Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1013,
                        reason: "too slow; reconnect with since=<last cursor>".into(),
                    }));
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(close)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
