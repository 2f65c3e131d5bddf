//! The API's error body: every refusal is `{code, message}` with a fitting
//! HTTP status, so a desktop can branch on `code` and show `message`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as the API returns it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`,
    /// `invalid`, `conflict`, `too_many_requests`, `unavailable`.
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        Self::new(401, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(403, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(404, "not_found", message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        Self::new(422, "invalid", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(409, "conflict", message)
    }

    pub fn too_many(message: impl Into<String>) -> ApiError {
        Self::new(429, "too_many_requests", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(503, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"hotline\""),
            );
        }
        response
    }
}

impl From<crate::acd::RouterStopped> for ApiError {
    fn from(_: crate::acd::RouterStopped) -> Self {
        ApiError::unavailable("the ACD router has stopped")
    }
}
