//! Every error the node's HTTP API can answer with, mapped to a status and an RFC 9457
//! problem body in one place.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use corral_core::{FieldError, Problem};

/// An error answer of the node API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidField(#[from] FieldError),
    #[error("no job `{0}` on this node")]
    JobNotFound(String),
    #[error("no route {0}")]
    RouteNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("content type `{0}` is not JSON")]
    UnsupportedMediaType(String),
    #[error("the queue is full ({0} jobs waiting); try again later")]
    QueueFull(usize),
    #[error("the node is shutting down and takes no new jobs")]
    ShuttingDown,
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn problem(&self) -> Problem {
        let detail = self.to_string();
        match self {
            ApiError::InvalidField(err) => Problem::invalid_field(err.clone()),
            ApiError::JobNotFound(_) => Problem::new(404, "Job not found")
                .with_kind("/problems/job-not-found")
                .with_detail(detail),
            ApiError::RouteNotFound(_) => Problem::new(404, "Not found").with_detail(detail),
            ApiError::MethodNotAllowed => Problem::new(405, "Method not allowed"),
            ApiError::BodyTooLarge { .. } => {
                Problem::new(413, "Request body too large").with_detail(detail)
            }
            ApiError::UnsupportedMediaType(_) => Problem::new(415, "Unsupported media type")
                .with_detail(format!("{detail}; send Content-Type: application/json")),
            ApiError::QueueFull(_) => Problem::new(503, "Queue full").with_detail(detail),
            ApiError::ShuttingDown => Problem::new(503, "Shutting down").with_detail(detail),
            ApiError::Internal(_) => Problem::new(500, "Internal error").with_detail(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                corral_core::problem::PROBLEM_CONTENT_TYPE,
            )],
            body,
        )
            .into_response();
        if matches!(self, ApiError::QueueFull(_) | ApiError::ShuttingDown) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}
