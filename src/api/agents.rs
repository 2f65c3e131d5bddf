//! `/api/v1/agents`: who is logged in and in which state, and the state
//! changes a desktop (or a supervisor) asks for. Repeating a request that is
//! already in effect (`ready` while ready) is not an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::Principal;
use super::error::ApiError;
use crate::acd::{AgentId, Command, RouterError};

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    /// logged-out, ready, not-ready, offered, talking, on-hold, wrap-up.
    pub state: String,
    /// Why the agent is not ready, when it is not.
    pub reason: Option<String>,
    /// Milliseconds in the current state.
    pub in_state_ms: u64,
    /// The call it is offered, talking on or holding.
    pub call: Option<String>,
    pub queues: Vec<String>,
    pub skills: BTreeMap<String, u8>,
}

/// `POST /agents/{id}/not-ready`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NotReady {
    /// One of `api.not_ready_reasons`.
    pub reason: String,
}

/// Options of `POST /agents/{id}/logout`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogoutOptions {
    /// Supervisors and admins: log the agent out even if a queue drops below
    /// its `min_staffed`.
    #[serde(default)]
    pub force: bool,
}

async fn views(state: &ApiState) -> Result<Vec<AgentView>, ApiError> {
    let snapshot = state.router.snapshot().await?;
    let now = std::time::Instant::now();
    let settings = &state.edge.settings;
    Ok(snapshot
        .agents
        .into_iter()
        .filter_map(|a| {
            let config = settings.agents.get(&a.id.0)?;
            Some(AgentView {
                id: a.id.0.clone(),
                name: config.name.clone(),
                state: a.state.to_string(),
                reason: a.reason,
                in_state_ms: now.saturating_duration_since(a.since).as_millis() as u64,
                call: a.call.map(|c| c.0),
                queues: config.queues.clone(),
                skills: config.skills.clone(),
            })
        })
        .collect())
}

/// The agent `id` as `who` may see it: 404 when it does not exist, 403 when
/// it is not theirs to see.
async fn visible(state: &ApiState, who: &Principal, id: &str) -> Result<AgentView, ApiError> {
    let agent = views(state)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no agent {id}")))?;
    if !who.may_act_for_agent(&agent.id, &agent.queues) {
        return Err(ApiError::forbidden(format!(
            "agent {id} is not yours to see or change"
        )));
    }
    Ok(agent)
}

fn router_refusal(e: RouterError) -> ApiError {
    match e {
        RouterError::MinStaffed { .. } => ApiError::conflict(e.to_string()),
        RouterError::UnknownAgent(_) => ApiError::not_found(e.to_string()),
        _ => ApiError::conflict(e.to_string()),
    }
}

async fn apply(state: &ApiState, command: Command) -> Result<(), ApiError> {
    state.router.request(command).await?.map_err(router_refusal)
}

/// Agents the token may see, with their state.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    security(("bearer" = [])),
    responses(
        (status = 200, body = [AgentView]),
        (status = 401, body = ApiError),
    ))]
pub async fn list_agents(
    State(state): State<Arc<ApiState>>,
    who: Principal,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    let agents = views(&state)
        .await?
        .into_iter()
        .filter(|a| who.may_act_for_agent(&a.id, &a.queues))
        .collect();
    Ok(Json(agents))
}

/// One agent.
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, body = AgentView),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    ))]
pub async fn get_agent(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(visible(&state, &who, &id).await?))
}

/// Logs the agent in as ready (already logged in: no change).
#[utoipa::path(post, path = "/api/v1/agents/{id}/login", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, body = AgentView),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    ))]
pub async fn login(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = visible(&state, &who, &id).await?;
    if agent.state == "logged-out" {
        apply(&state, Command::AgentLogin(AgentId::from(id.as_str()))).await?;
    }
    Ok(Json(visible(&state, &who, &id).await?))
}

/// Logs the agent out. Refused (409) when a queue it serves would drop below
/// its `min_staffed` (shift handover), unless a supervisor forces it; during a
/// call the logout takes effect when the call ends.
#[utoipa::path(post, path = "/api/v1/agents/{id}/logout", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id"), LogoutOptions),
    responses(
        (status = 200, body = AgentView),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "Below a queue's minimum staffing"),
    ))]
pub async fn logout(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
    Query(options): Query<LogoutOptions>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = visible(&state, &who, &id).await?;
    if options.force && !who.is_supervisor_or_admin() {
        return Err(ApiError::forbidden(
            "only supervisors and admins may force a logout",
        ));
    }
    if agent.state != "logged-out" {
        let agent_id = AgentId::from(id.as_str());
        let command = if options.force {
            Command::AgentLogout(agent_id)
        } else {
            Command::AgentRequestLogout(agent_id)
        };
        apply(&state, command).await?;
    }
    Ok(Json(visible(&state, &who, &id).await?))
}

/// Makes the agent ready: from not-ready, or ending wrap-up early.
#[utoipa::path(post, path = "/api/v1/agents/{id}/ready", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, body = AgentView),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "Logged out, or on a call"),
    ))]
pub async fn ready(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = visible(&state, &who, &id).await?;
    if agent.state != "ready" {
        apply(&state, Command::AgentReady(AgentId::from(id.as_str()))).await?;
    }
    Ok(Json(visible(&state, &who, &id).await?))
}

/// Makes the agent not ready for a configured reason; supervisors may force it.
#[utoipa::path(post, path = "/api/v1/agents/{id}/not-ready", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    request_body = NotReady,
    responses(
        (status = 200, body = AgentView),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "Logged out, or on a call"),
        (status = 422, body = ApiError, description = "Not a configured reason"),
    ))]
pub async fn not_ready(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<NotReady>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<AgentView>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    let reasons = &state.edge.settings.api.not_ready_reasons;
    if !reasons.contains(&body.reason) {
        return Err(ApiError::invalid(format!(
            "`{}` is not a not-ready reason; configured: {}",
            body.reason,
            reasons.join(", ")
        )));
    }
    let agent = visible(&state, &who, &id).await?;
    if agent.state != "not-ready" || agent.reason.as_deref() != Some(body.reason.as_str()) {
        apply(
            &state,
            Command::AgentNotReady(AgentId::from(id.as_str()), body.reason),
        )
        .await?;
    }
    Ok(Json(visible(&state, &who, &id).await?))
}
