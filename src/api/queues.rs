//! `/api/v1/queues` and `/api/v1/calls`: queue depths and figures for
//! supervisors, and the live calls each token may see.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::auth::Principal;
use super::error::ApiError;
use super::floor::{LiveCall, QueueFigures};
use crate::config::ApiRole;

/// A queue as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueView {
    pub id: String,
    pub waiting: usize,
    pub longest_wait_ms: u64,
    /// Moving average of recent waits until answer; null before the first.
    pub estimated_wait_ms: Option<u64>,
    /// Agents logged in without a pending logout.
    pub staffed: u32,
    pub min_staffed: u32,
    /// Agents serving the queue, by state.
    pub agents: BTreeMap<String, usize>,
    pub service_level_target_s: u64,
    #[serde(flatten)]
    pub figures: QueueFigures,
    /// New callers go straight to the overflow.
    pub paused: bool,
}

/// `POST /queues/{id}/pause`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Pause {
    pub paused: bool,
}

/// One live call with its history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallDetail {
    #[serde(flatten)]
    pub call: LiveCall,
    /// The call's events so far, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
}

async fn queue_views(state: &ApiState) -> Result<Vec<QueueView>, ApiError> {
    let snapshot = state.router.snapshot().await?;
    let now = std::time::SystemTime::now();
    let settings = &state.edge.settings;
    Ok(snapshot
        .queues
        .into_iter()
        .map(|q| {
            let config = settings.queues.get(&q.id.0);
            QueueView {
                figures: state.floor.figures(&q.id.0, now),
                paused: state.floor.is_paused(&q.id.0),
                id: q.id.0,
                waiting: q.waiting,
                longest_wait_ms: q.longest_wait.as_millis() as u64,
                estimated_wait_ms: q.estimated_wait.map(|d| d.as_millis() as u64),
                staffed: q.staffed,
                min_staffed: config.map_or(0, |c| c.min_staffed),
                agents: q
                    .agents_by_state
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                service_level_target_s: config.map_or(20, |c| c.service_level.as_secs()),
            }
        })
        .collect())
}

pub(super) fn may_see_call(who: &Principal, call: &LiveCall) -> bool {
    match who.role {
        ApiRole::Admin => true,
        ApiRole::Agent => call.agent.is_some() && call.agent == who.agent,
        ApiRole::Supervisor => call.queue.as_deref().is_some_and(|q| who.may_see_queue(q)),
    }
}

/// Queues the token supervises (agents: none), with depth and figures.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    security(("bearer" = [])),
    responses((status = 200, body = [QueueView]), (status = 401, body = ApiError)))]
pub async fn list_queues(
    State(state): State<Arc<ApiState>>,
    who: Principal,
) -> Result<Json<Vec<QueueView>>, ApiError> {
    let queues = queue_views(&state)
        .await?
        .into_iter()
        .filter(|q| who.may_see_queue(&q.id))
        .collect();
    Ok(Json(queues))
}

/// One queue.
#[utoipa::path(get, path = "/api/v1/queues/{id}", tag = "queues",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueView),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    ))]
pub async fn get_queue(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    let queue = queue_views(&state)
        .await?
        .into_iter()
        .find(|q| q.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no queue {id}")))?;
    if !who.may_see_queue(&id) {
        return Err(ApiError::forbidden(format!(
            "queue {id} is not yours to see"
        )));
    }
    Ok(Json(queue))
}

/// Pauses a queue (new callers hear the overflow prompt and go to its
/// overflow) or resumes it. Supervisors of the queue and admins.
#[utoipa::path(post, path = "/api/v1/queues/{id}/pause", tag = "queues",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Queue name")),
    request_body = Pause,
    responses(
        (status = 200, body = QueueView),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 422, body = ApiError),
    ))]
pub async fn pause_queue(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Pause>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<QueueView>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    if !state.edge.settings.queues.contains_key(&id) {
        return Err(ApiError::not_found(format!("no queue {id}")));
    }
    if !who.may_see_queue(&id) {
        return Err(ApiError::forbidden(format!(
            "queue {id} is not yours to pause"
        )));
    }
    state.floor.set_paused(&id, body.paused);
    state.edge.calls.set_paused(&id, body.paused);
    get_queue(State(state), who, Path(id)).await
}

/// Live calls the token may see: an agent its own, a supervisor those of its
/// queues, an admin all.
#[utoipa::path(get, path = "/api/v1/calls", tag = "calls",
    security(("bearer" = [])),
    responses((status = 200, body = [LiveCall]), (status = 401, body = ApiError)))]
pub async fn list_calls(
    State(state): State<Arc<ApiState>>,
    who: Principal,
) -> Result<Json<Vec<LiveCall>>, ApiError> {
    Ok(Json(
        state
            .floor
            .calls()
            .into_iter()
            .filter(|c| may_see_call(&who, c))
            .collect(),
    ))
}

/// One live call with its events so far (the IVR's variables in `vars`).
#[utoipa::path(get, path = "/api/v1/calls/{id}", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    responses(
        (status = 200, body = CallDetail),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    ))]
pub async fn get_call(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<CallDetail>, ApiError> {
    let call = state
        .floor
        .call(&id)
        .ok_or_else(|| ApiError::not_found(format!("no live call {id}")))?;
    if !may_see_call(&who, &call) {
        return Err(ApiError::forbidden(format!(
            "call {id} is not yours to see"
        )));
    }
    let events = state
        .floor
        .history(&id)
        .into_iter()
        .map(|e| (*e).clone())
        .collect();
    Ok(Json(CallDetail { call, events }))
}
