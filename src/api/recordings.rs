//! `/api/v1/recordings`: the recordings of finished calls (rulebook Q1), read
//! from the call records, and each file streamed as `audio/wav`. An admin
//! sees every recording, a supervisor those of its queues, an agent those of
//! its own calls. There is no way to delete one: any other method is 405.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::Principal;
use super::error::ApiError;
use crate::config::ApiRole;
use crate::store::{StoreError, export, schema};

/// Most recordings one list returns.
const MAX_LIST: usize = 1000;

/// One recording in the list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingView {
    pub call_id: String,
    pub queue: Option<String>,
    pub agent: Option<String>,
    /// When the recording started (the bridge), RFC 3339 UTC.
    pub started: Option<String>,
    pub duration_ms: Option<i64>,
    /// SHA-256 (hex) of the file, as finished at hang-up; null when the
    /// recording failed.
    pub sha256: Option<String>,
}

/// Filters of `GET /recordings`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordingFilter {
    /// Started at or after: RFC 3339, a date (midnight UTC) or unix seconds.
    pub since: Option<String>,
    /// Started before.
    pub until: Option<String>,
    pub queue: Option<String>,
    pub agent: Option<String>,
}

/// A row of the `cdr` table with a recording.
struct Row {
    view: RecordingView,
    path: String,
}

fn may_see(who: &Principal, queue: Option<&str>, agent: Option<&str>) -> bool {
    match who.role {
        ApiRole::Admin => true,
        ApiRole::Supervisor => queue.is_some_and(|q| who.queues.iter().any(|s| s == q)),
        ApiRole::Agent => agent.is_some() && who.agent.as_deref() == agent,
    }
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| export::parse_time(v).map_err(|e| ApiError::invalid(format!("{name}: {e}"))))
        .transpose()
}

/// What to read.
struct Select {
    call_id: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    queue: Option<String>,
    agent: Option<String>,
    /// Rows the principal may not see are skipped, not counted.
    who: Principal,
}

/// Reads recordings from the database, off the async runtime: at most
/// [`MAX_LIST`] that `select` keeps, newest first.
async fn rows(state: &ApiState, select: Select) -> Result<Vec<Row>, ApiError> {
    let store = &state.edge.settings.store;
    if !store.enabled {
        return Err(ApiError::unavailable(
            "call records are not kept (store.enabled = false)",
        ));
    }
    let db: PathBuf = store.path.clone();
    let read = tokio::task::spawn_blocking(move || read_rows(&db, &select)).await;
    match read {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(StoreError::NotFound { .. })) => Ok(Vec::new()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the recordings");
            Err(ApiError::unavailable("the call records cannot be read"))
        }
        Err(_) => Err(ApiError::unavailable("the call records cannot be read")),
    }
}

fn read_rows(db: &std::path::Path, select: &Select) -> Result<Vec<Row>, StoreError> {
    let conn = schema::open_for_reading(db)?;
    let read_err = |source| StoreError::Read {
        path: db.to_path_buf(),
        source,
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT call_id, queue, agent, recording_started_at, recording_ms,
                    recording_sha256, recording
             FROM cdr
             WHERE recording IS NOT NULL
               AND (?1 IS NULL OR call_id = ?1)
               AND (?2 IS NULL OR recording_started_at >= ?2)
               AND (?3 IS NULL OR recording_started_at < ?3)
               AND (?4 IS NULL OR queue = ?4)
               AND (?5 IS NULL OR agent = ?5)
             ORDER BY recording_started_at DESC, call_id",
        )
        .map_err(read_err)?;
    let params = rusqlite::params![
        select.call_id,
        select.since,
        select.until,
        select.queue,
        select.agent
    ];
    let rows = stmt
        .query_map(params, |r| {
            Ok(Row {
                view: RecordingView {
                    call_id: r.get(0)?,
                    queue: r.get(1)?,
                    agent: r.get(2)?,
                    started: r.get::<_, Option<i64>>(3)?.map(export::rfc3339_ms),
                    duration_ms: r.get(4)?,
                    sha256: r.get(5)?,
                },
                path: r.get(6)?,
            })
        })
        .map_err(read_err)?;
    let mut kept = Vec::new();
    for row in rows {
        let row = row.map_err(read_err)?;
        // Who may see it is decided here, for the call id lookup too: a row
        // kept back would read as a 404 instead of a 403.
        if select.call_id.is_some()
            || may_see(
                &select.who,
                row.view.queue.as_deref(),
                row.view.agent.as_deref(),
            )
        {
            kept.push(row);
            if kept.len() >= MAX_LIST {
                break;
            }
        }
    }
    Ok(kept)
}

/// The recordings this token may hear, newest first (at most 1000).
#[utoipa::path(get, path = "/api/v1/recordings", tag = "recordings",
    security(("bearer" = [])),
    params(RecordingFilter),
    responses((status = 200, body = Vec<RecordingView>), (status = 401, body = ApiError),
        (status = 422, body = ApiError), (status = 503, body = ApiError)))]
pub async fn list_recordings(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Query(filter): Query<RecordingFilter>,
) -> Result<Json<Vec<RecordingView>>, ApiError> {
    let since = time_param("since", filter.since.as_deref())?;
    let until = time_param("until", filter.until.as_deref())?;
    let select = Select {
        call_id: None,
        since,
        until,
        queue: filter.queue,
        agent: filter.agent,
        who,
    };
    let views = rows(&state, select).await?.into_iter().map(|r| r.view);
    Ok(Json(views.collect()))
}

/// The recording of a call, streamed as `audio/wav`.
#[utoipa::path(get, path = "/api/v1/recordings/{call_id}", tag = "recordings",
    security(("bearer" = [])),
    params(("call_id" = String, Path, description = "Call id")),
    responses((status = 200, description = "The WAV file", content_type = "audio/wav"),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 503, body = ApiError)))]
pub async fn get_recording(
    State(state): State<Arc<ApiState>>,
    who: Principal,
    Path(call_id): Path<String>,
) -> Result<Response, ApiError> {
    let select = Select {
        call_id: Some(call_id.clone()),
        since: None,
        until: None,
        queue: None,
        agent: None,
        who: who.clone(),
    };
    let row = rows(&state, select)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no recording of call {call_id}")))?;
    if !may_see(&who, row.view.queue.as_deref(), row.view.agent.as_deref()) {
        return Err(ApiError::forbidden(format!(
            "the recording of call {call_id} is not yours to hear"
        )));
    }
    let file = tokio::fs::File::open(&row.path).await.map_err(|e| {
        tracing::error!(%call_id, path = %row.path, error = %e, "a recorded call's file cannot be opened");
        ApiError::not_found(format!(
            "the recording of call {call_id} is missing from disk"
        ))
    })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("audio/wav"),
    );
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, len.into());
    }
    Ok(response)
}
