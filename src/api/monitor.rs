//! `/api/v1/calls/{id}/monitor`: a supervisor joins a live call from its phone
//! (rulebook Q2). hotline rings the supervisor's registered phone; once it
//! answers the supervisor hears the call (`listen`), talks to the agent only
//! (`whisper`) or to both (`barge`). The mode changes with PATCH, the session
//! ends with DELETE or when either side hangs up.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::auth::Principal;
use super::calls::ask;
use super::error::ApiError;
use super::queues::may_see_call;
use crate::call::CallCommand;
use crate::call::monitor::{MonitorCommand, MonitorMode};
use crate::config::ApiRole;

/// `POST /calls/{id}/monitor`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartMonitor {
    pub mode: MonitorMode,
    /// The supervisor's phone (a registered account): one of a supervisor
    /// token's `phones` (the only one when it has one), any phone for an
    /// admin.
    #[serde(default)]
    pub phone: Option<String>,
}

/// `PATCH /calls/{id}/monitor`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeMonitor {
    pub mode: MonitorMode,
}

/// What a monitoring request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonitorDone {
    pub call_id: String,
    /// ringing (the supervisor's phone rings), mode, stopped.
    pub action: &'static str,
}

/// Supervisors (of the call's queue) and admins only: an agent never
/// monitors another agent.
fn may_monitor(state: &ApiState, who: &Principal, id: &str) -> Result<(), ApiError> {
    if who.role == ApiRole::Agent {
        return Err(ApiError::forbidden("monitoring is for supervisors"));
    }
    let call = state
        .floor
        .call(id)
        .ok_or_else(|| ApiError::not_found(format!("no live call {id}")))?;
    if !may_see_call(who, &call) {
        return Err(ApiError::forbidden(format!(
            "call {id} is not in a queue you supervise"
        )));
    }
    Ok(())
}

/// The phone to ring for `who`: a supervisor's own (its token's `phones`;
/// the only one when it names none), any phone an admin names. Nobody can
/// make another agent's phone listen in.
fn monitoring_phone(who: &Principal, named: Option<String>) -> Result<String, ApiError> {
    match who.role {
        ApiRole::Admin => named.ok_or_else(|| ApiError::invalid("name the supervisor's `phone`")),
        ApiRole::Supervisor => match named {
            Some(phone) if who.phones.contains(&phone) => Ok(phone),
            Some(phone) => Err(ApiError::forbidden(format!(
                "{phone} is not one of this supervisor's phones"
            ))),
            None => match who.phones.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(ApiError::forbidden(
                    "this supervisor token has no phones (api.tokens.NAME.phones)",
                )),
                _ => Err(ApiError::invalid(
                    "name which of this supervisor's phones to ring (`phone`)",
                )),
            },
        },
        ApiRole::Agent => Err(ApiError::forbidden("monitoring is for supervisors")),
    }
}

/// Rings the supervisor's phone to monitor the call in `mode`. 409 when the
/// call has no agent connected, another supervisor monitors it, or the phone
/// is not registered; asking again for the same phone changes the mode.
#[utoipa::path(post, path = "/api/v1/calls/{id}/monitor", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    request_body = StartMonitor,
    responses((status = 202, body = MonitorDone), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 422, body = ApiError),
        (status = 503, body = ApiError)))]
pub async fn start_monitor(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<StartMonitor>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<MonitorDone>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    may_monitor(&state, &who, &id)?;
    let named = body.phone.clone();
    let phone = monitoring_phone(&who, body.phone).inspect_err(|_| {
        if let Some(phone) = named {
            state
                .edge
                .bus
                .publish(crate::events::Event::MonitorRefused {
                    supervisor: who.name.clone(),
                    agent: phone,
                    via: "api",
                    reason: "foreign_phone",
                });
        }
    })?;
    if !state.edge.settings.agents.contains_key(&phone) {
        return Err(ApiError::invalid(format!("{phone} is not a phone account")));
    }
    let mode = body.mode;
    ask(&state, &id, |reply| {
        CallCommand::Monitor(MonitorCommand::Start {
            supervisor: phone,
            mode,
            reply,
        })
    })
    .await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(MonitorDone {
            call_id: id,
            action: "ringing",
        }),
    ))
}

/// Switches the session between listen, whisper and barge.
#[utoipa::path(patch, path = "/api/v1/calls/{id}/monitor", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    request_body = ChangeMonitor,
    responses((status = 200, body = MonitorDone), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub async fn change_monitor(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<ChangeMonitor>, JsonRejection>,
) -> Result<Json<MonitorDone>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    may_monitor(&state, &who, &id)?;
    ask(&state, &id, |reply| {
        CallCommand::Monitor(MonitorCommand::Mode {
            mode: body.mode,
            reply,
        })
    })
    .await?;
    Ok(Json(MonitorDone {
        call_id: id,
        action: "mode",
    }))
}

/// Ends the monitoring session (the supervisor's phone gets BYE).
#[utoipa::path(delete, path = "/api/v1/calls/{id}/monitor", tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, body = MonitorDone), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn stop_monitor(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<MonitorDone>, ApiError> {
    may_monitor(&state, &who, &id)?;
    ask(&state, &id, |reply| {
        CallCommand::Monitor(MonitorCommand::Stop { reply })
    })
    .await?;
    Ok(Json(MonitorDone {
        call_id: id,
        action: "stopped",
    }))
}
