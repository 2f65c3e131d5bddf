//! `/api/v1/calls/{id}/…`: what a desktop or supervisor does to a live call —
//! hold and resume (the same hold-limit policy as a phone's hold), hang up,
//! blind transfer to a queue (counted against `acd.max_transfers`), and the
//! call's category and notes for its record (rulebook R1).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::auth::Principal;
use super::error::ApiError;
use super::queues::may_see_call;
use crate::call::control::ControlError;
use crate::call::{CallCommand, TransferTarget};
use crate::events::Event;

/// The categories a call can be filed under (rulebook R1).
pub const CATEGORIES: [&str; 4] = ["consult", "suggestion", "complaint", "help"];

/// `POST /calls/{id}/transfer`: exactly one of `queue`, `agent` and
/// `"survey": true`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Transfer {
    /// The queue the caller goes to.
    #[serde(default)]
    pub queue: Option<String>,
    /// The agent offered the call at once (it must be ready); should it not
    /// answer, the caller waits in the call's queue.
    #[serde(default)]
    pub agent: Option<String>,
    /// true: the caller rates the call in the post-call survey of the
    /// queue it was answered from (the agent is released; not counted as a
    /// transfer). Refused (409) when that queue has no `survey`.
    #[serde(default)]
    pub survey: bool,
}

/// `POST /calls/{id}/disposition`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Disposition {
    /// consult, suggestion, complaint or help.
    pub category: String,
    #[serde(default)]
    pub notes: String,
}

/// What a control request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    pub call_id: String,
    /// hangup, hold, unhold, transfer, disposition.
    pub action: &'static str,
}

/// The call, if `who` may act on it.
pub(super) fn controllable(state: &ApiState, who: &Principal, id: &str) -> Result<(), ApiError> {
    let call = state
        .floor
        .call(id)
        .ok_or_else(|| ApiError::not_found(format!("no live call {id}")))?;
    if !may_see_call(who, &call) {
        return Err(ApiError::forbidden(format!(
            "call {id} is not yours to control"
        )));
    }
    Ok(())
}

fn deliver(state: &ApiState, id: &str, command: CallCommand) -> Result<(), ApiError> {
    if state.edge.calls.deliver(id, command) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("call {id} has just ended")))
    }
}

/// Hands the call a command built around a reply channel and waits for the
/// call's answer: a refusal carries the call's code and reason.
pub(super) async fn ask(
    state: &ApiState,
    id: &str,
    command: impl FnOnce(tokio::sync::oneshot::Sender<Result<(), ControlError>>) -> CallCommand,
) -> Result<(), ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    deliver(state, id, command(reply))?;
    match answer.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refusal)) => Err(refusal.into()),
        Err(_) => Err(ApiError::not_found(format!("call {id} has just ended"))),
    }
}

fn done(id: String, action: &'static str) -> Json<Done> {
    Json(Done {
        call_id: id,
        action,
    })
}

/// Ends the call (both legs).
#[utoipa::path(post, path = "/api/v1/calls/{id}/hangup", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, body = Done), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn hangup(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    controllable(&state, &who, &id)?;
    deliver(&state, &id, CallCommand::Hangup)?;
    Ok(done(id, "hangup"))
}

/// Puts the connected call on hold: the caller hears the queue's music and
/// the hold limit runs as for a phone's hold. Repeating it changes nothing.
#[utoipa::path(post, path = "/api/v1/calls/{id}/hold", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, body = Done), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn hold(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    controllable(&state, &who, &id)?;
    deliver(&state, &id, CallCommand::Hold(true))?;
    Ok(done(id, "hold"))
}

/// Takes the call off hold.
#[utoipa::path(post, path = "/api/v1/calls/{id}/unhold", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, body = Done), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn unhold(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    controllable(&state, &who, &id)?;
    deliver(&state, &id, CallCommand::Hold(false))?;
    Ok(done(id, "unhold"))
}

/// Blind transfer to a queue or to a named, ready agent: the agent on the
/// call is released to wrap-up and the caller keeps its waited time. Refused
/// (409) past `acd.max_transfers`, when no agent is connected, or when the
/// named agent is not ready. `{"survey": true}` sends the caller to its
/// queue's post-call survey instead.
#[utoipa::path(post, path = "/api/v1/calls/{id}/transfer", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    request_body = Transfer,
    responses((status = 200, body = Done), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub async fn transfer(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Transfer>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    controllable(&state, &who, &id)?;
    let target = match (body.queue, body.agent) {
        (None, None) if body.survey => TransferTarget::Survey,
        _ if body.survey => {
            return Err(ApiError::invalid(
                "name exactly one of `queue`, `agent` and `survey`",
            ));
        }
        (Some(queue), None) => {
            if !state.edge.settings.queues.contains_key(&queue) {
                return Err(ApiError::invalid(format!("no queue {queue}")));
            }
            TransferTarget::Queue(queue)
        }
        (None, Some(agent)) => {
            let snapshot = state.router.snapshot().await?;
            let Some(found) = snapshot.agents.iter().find(|a| a.id.0 == agent) else {
                return Err(ApiError::invalid(format!("no agent {agent}")));
            };
            if found.state != "ready" {
                return Err(ApiError::new(
                    409,
                    "agent_not_ready",
                    format!(
                        "agent {agent} is {}, not ready to take a transfer",
                        found.state
                    ),
                ));
            }
            TransferTarget::Agent(agent)
        }
        _ => {
            return Err(ApiError::invalid(
                "name exactly one of `queue`, `agent` and `survey`",
            ));
        }
    };
    ask(&state, &id, |reply| CallCommand::Transfer { target, reply }).await?;
    Ok(done(id, "transfer"))
}

/// Files the call under a category with notes; both go on its record.
#[utoipa::path(post, path = "/api/v1/calls/{id}/disposition", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    request_body = Disposition,
    responses((status = 200, body = Done), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 422, body = ApiError)))]
pub async fn disposition(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Disposition>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    if !CATEGORIES.contains(&body.category.as_str()) {
        return Err(ApiError::invalid(format!(
            "`{}` is not a category; one of {}",
            body.category,
            CATEGORIES.join(", ")
        )));
    }
    if body.notes.len() > 4000 {
        return Err(ApiError::invalid("notes are at most 4000 bytes"));
    }
    controllable(&state, &who, &id)?;
    state.edge.bus.publish(Event::CallDispositionSet {
        call_id: id.clone(),
        category: body.category,
        notes: body.notes,
    });
    Ok(done(id, "disposition"))
}
