//! The API's error body: every refusal is `{code, message}` with a fitting
//! HTTP status, so a desktop can branch on `code` and show `message`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::call::control::{ControlError, RefusalKind};

/// An error as the API returns it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`,
    /// `invalid`, `conflict`, `too_many_requests`, `unavailable`, or the
    /// call's own code when a call refuses a control request (`not_bridged`,
    /// `transfer_limit_reached`, `agent_not_ready`, …).
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
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

/// A call's refusal keeps its own code; the status says what sort of
/// refusal it is (409 only where the call's state stands against it).
impl From<ControlError> for ApiError {
    fn from(refusal: ControlError) -> Self {
        let status = match refusal.kind() {
            RefusalKind::Conflict => 409,
            RefusalKind::NotFound => 404,
            RefusalKind::Invalid => 422,
            RefusalKind::Unavailable => 503,
        };
        Self::new(status, refusal.code(), refusal.to_string())
    }
}

impl From<crate::acd::RouterStopped> for ApiError {
    fn from(_: crate::acd::RouterStopped) -> Self {
        ApiError::unavailable("the ACD router has stopped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::consult::ConsultTarget;

    #[test]
    fn a_call_refusal_keeps_its_code_and_message_under_the_status_of_its_kind() {
        let cases = [
            (ControlError::NotConsulting, 409, "not_consulting"),
            (
                ControlError::TransferLimitReached { done: 1, max: 1 },
                409,
                "transfer_limit_reached",
            ),
            (ControlError::NoSurvey("support".into()), 404, "no_survey"),
            (
                ControlError::UnknownQueue("nowhere".into()),
                404,
                "unknown_target",
            ),
            (ControlError::SelfConsult, 422, "self_consult"),
            (ControlError::RouterStopped, 503, "router_stopped"),
            (
                ControlError::ConsultRefused {
                    target: ConsultTarget::Agent("1003".into()),
                    reason: crate::acd::RouterError::InvalidState {
                        agent: crate::acd::AgentId::from("1003"),
                        action: "take a call",
                        state: "logged-out",
                    },
                },
                409,
                "agent_not_ready",
            ),
        ];
        for (refusal, status, code) in cases {
            let message = refusal.to_string();
            let error = ApiError::from(refusal);
            assert_eq!((error.status, error.code), (status, code), "{message}");
            assert_eq!(error.message, message);
            assert_eq!(error.into_response().status().as_u16(), status);
        }
    }
}
