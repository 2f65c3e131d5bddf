//! `/api/v1/bans`: who is locked out of SIP authentication now, and why
//! (admins only). A lockout stops authentication attempts, for one user from
//! one address or, past the per-address total, for the whole address; it
//! never stops traffic a trunk's ACL admits.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::auth::Principal;
use super::error::ApiError;
use crate::config::ApiRole;
use crate::sip::lockout::BanScope;

/// One lockout in force.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BanView {
    /// The address the failures came from.
    pub source: String,
    /// `user` (one username from this address) or `source` (every
    /// authentication from it).
    pub scope: &'static str,
    /// The locked-out username, for `scope = user`.
    pub username: Option<String>,
    /// Failures counted in the window that led to the lockout.
    pub failures: u32,
    /// Seconds until the lockout ends.
    pub remaining_s: u64,
    pub reason: String,
}

#[utoipa::path(get, path = "/api/v1/bans", tag = "bans",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<BanView>), (status = 401, body = ApiError),
        (status = 403, body = ApiError)))]
pub async fn list_bans(
    State(state): State<Arc<ApiState>>,
    who: Principal,
) -> Result<Json<Vec<BanView>>, ApiError> {
    if who.role != ApiRole::Admin {
        return Err(ApiError::forbidden("only an admin token sees the bans"));
    }
    let now = Instant::now();
    let bans = state
        .edge
        .lockout
        .bans(now)
        .into_iter()
        .map(|ban| BanView {
            source: ban.source.to_string(),
            scope: ban.scope.label(),
            username: match &ban.scope {
                BanScope::User(user) => Some(user.clone()),
                BanScope::Source => None,
            },
            failures: ban.failures,
            remaining_s: ban.until.saturating_duration_since(now).as_secs(),
            reason: ban.reason(),
        })
        .collect();
    Ok(Json(bans))
}
