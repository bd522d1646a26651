//! Every error the node's HTTP API can answer with, mapped to a status and an RFC 9457
//! problem body in one place.

use axum::response::{IntoResponse, Response};
use corral_core::{FieldError, Problem};
use corral_http::ProblemResponse;

/// An error answer of the node API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidField(#[from] FieldError),
    #[error("no job `{0}` on this node")]
    JobNotFound(String),
    #[error("the queue is full ({0} jobs waiting); try again later")]
    QueueFull(usize),
    #[error("the node is shutting down and takes no new jobs")]
    ShuttingDown,
    /// The job is past what the request asks of it (it has ended, ...).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let problem = match self {
            ApiError::InvalidField(err) => Problem::invalid_field(err),
            ApiError::JobNotFound(_) => Problem::new(404, "Job not found")
                .with_kind("/problems/job-not-found")
                .with_detail(detail),
            ApiError::QueueFull(_) => Problem::new(503, "Queue full").with_detail(detail),
            ApiError::ShuttingDown => Problem::new(503, "Shutting down").with_detail(detail),
            ApiError::Conflict(_) => Problem::new(409, "Conflict")
                .with_kind("/problems/job-conflict")
                .with_detail(detail),
            ApiError::Internal(_) => Problem::new(500, "Internal error").with_detail(detail),
        };
        ProblemResponse(problem).into_response()
    }
}
