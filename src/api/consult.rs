//! `/api/v1/calls/{id}/consult…`: the agent consults another agent or a
//! queue while the caller waits on hold, then hands the caller over
//! (attended transfer, counted against `acd.max_transfers`), brings all
//! three together (three-way; the agent may then leave), or goes back to
//! the caller (rulebook L6).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::auth::Principal;
use super::calls::{ask, controllable};
use super::error::ApiError;
use crate::call::CallCommand;
use crate::call::consult::{ConsultCommand, ConsultTarget};

/// `POST /calls/{id}/consult`: exactly one of `agent` and `queue`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartConsult {
    /// A ready agent to consult.
    #[serde(default)]
    pub agent: Option<String>,
    /// A queue whose first free agent is consulted (experts, shift leaders).
    #[serde(default)]
    pub queue: Option<String>,
}

/// What a consultation request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsultDone {
    pub call_id: String,
    /// consulting, transferred, conference, cancelled.
    pub action: &'static str,
}

fn done(call_id: String, action: &'static str) -> Json<ConsultDone> {
    Json(ConsultDone { call_id, action })
}

/// Puts the caller on hold (music, hold limit running) and rings the agent
/// or the queue's first free agent; the call's agent talks to it over its
/// own phone. 409 when the named agent is not ready or a consultation is on.
#[utoipa::path(post, path = "/api/v1/calls/{id}/consult", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    request_body = StartConsult,
    responses((status = 202, body = ConsultDone), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 422, body = ApiError),
        (status = 503, body = ApiError)))]
pub async fn start_consult(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<StartConsult>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<ConsultDone>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    let target = match (body.agent, body.queue) {
        (Some(agent), None) if state.edge.settings.agents.contains_key(&agent) => {
            ConsultTarget::Agent(agent)
        }
        (Some(agent), None) => return Err(ApiError::invalid(format!("no agent {agent}"))),
        (None, Some(queue)) if state.edge.settings.queues.contains_key(&queue) => {
            ConsultTarget::Queue(queue)
        }
        (None, Some(queue)) => return Err(ApiError::invalid(format!("no queue {queue}"))),
        _ => return Err(ApiError::invalid("name exactly one of `agent` and `queue`")),
    };
    controllable(&state, &who, &id)?;
    ask(&state, &id, |reply| {
        CallCommand::Consult(ConsultCommand::Start { target, reply })
    })
    .await?;
    Ok((axum::http::StatusCode::ACCEPTED, done(id, "consulting")))
}

/// Attended transfer: the consulted agent takes the caller, the call's agent
/// goes to wrap-up. 409 before the consulted agent answered or past
/// `acd.max_transfers`.
#[utoipa::path(post, path = "/api/v1/calls/{id}/consult/transfer", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, body = ConsultDone), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn transfer_consult(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConsultDone>, ApiError> {
    controllable(&state, &who, &id)?;
    ask(&state, &id, |reply| {
        CallCommand::Consult(ConsultCommand::Transfer { reply })
    })
    .await?;
    Ok(done(id, "transferred"))
}

/// Three-way call: the caller comes off hold and hears both agents, each
/// hears the other two. When the call's agent hangs up, the consulted agent
/// stays with the caller (counted as a transfer).
#[utoipa::path(post, path = "/api/v1/calls/{id}/consult/conference", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, body = ConsultDone), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn conference(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConsultDone>, ApiError> {
    controllable(&state, &who, &id)?;
    ask(&state, &id, |reply| {
        CallCommand::Consult(ConsultCommand::Conference { reply })
    })
    .await?;
    Ok(done(id, "conference"))
}

/// Ends the consultation; the caller comes back to the call's agent.
#[utoipa::path(delete, path = "/api/v1/calls/{id}/consult", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, body = ConsultDone), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn cancel_consult(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConsultDone>, ApiError> {
    controllable(&state, &who, &id)?;
    ask(&state, &id, |reply| {
        CallCommand::Consult(ConsultCommand::Cancel { reply })
    })
    .await?;
    Ok(done(id, "cancelled"))
}
