//! Every error the orchestrator's API answers with, mapped to a status and an RFC 9457
//! problem body in one place.

use crate::store::StoreError;
use axum::response::{IntoResponse, Response};
use corral_core::{FieldError, Problem};
use corral_http::ProblemResponse;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidField(#[from] FieldError),
    #[error("no job `{0}`")]
    JobNotFound(String),
    #[error("no node `{0}`")]
    NodeNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} jobs are unfinished, the most this orchestrator holds; try again later")]
    TooManyJobs(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Media(#[from] crate::dashboard::MediaError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let problem = match self {
            ApiError::InvalidField(err) => Problem::invalid_field(err),
            // The tutorial answers an unknown job with "Job not found".
            ApiError::JobNotFound(_) => Problem::new(404, "Job not found")
                .with_kind("/problems/job-not-found")
                .with_detail(detail),
            ApiError::NodeNotFound(_) => Problem::new(404, "Node not found").with_detail(detail),
            ApiError::Conflict(_) => Problem::new(409, "Conflict").with_detail(detail),
            ApiError::TooManyJobs(_) => Problem::new(503, "Too many jobs").with_detail(detail),
            ApiError::Store(StoreError::Unavailable(_)) => Problem::new(503, "Unavailable")
                .with_detail("the database is unavailable; try again in a few seconds"),
            ApiError::Media(e) => {
                use crate::dashboard::MediaError;
                match e {
                    MediaError::NotRendered { .. } => {
                        Problem::new(404, "Frame not rendered").with_detail(detail)
                    }
                    MediaError::Unreadable(_) => {
                        Problem::new(404, "Frame not readable here").with_detail(detail)
                    }
                    MediaError::NoPreview(_) => {
                        Problem::new(404, "No preview video").with_detail(detail)
                    }
                    MediaError::NoLog(_) => Problem::new(404, "No log").with_detail(detail),
                    MediaError::Undecodable(_) => {
                        Problem::new(422, "Frame not decodable").with_detail(detail)
                    }
                    MediaError::Io(_) => {
                        tracing::error!(error = %detail, "media folder error");
                        Problem::new(500, "Internal error").with_detail(detail)
                    }
                }
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "database error");
                Problem::new(500, "Internal error")
                    .with_detail("the database failed; see the orchestrator's log")
            }
        };
        ProblemResponse(problem).into_response()
    }
}
