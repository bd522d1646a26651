//! Every error the orchestrator's API answers with, mapped to a status and an RFC 9457
//! problem body in one place.

use crate::storage::TransferError;
use crate::store::StoreError;
use crate::transfer::UPLOAD_OFFSET;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use corral_core::problem::PROBLEM_CONTENT_TYPE;
use corral_core::{BlobHash, FieldError, Problem};
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
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// `held`: the bytes of an unfinished upload, answered as `Upload-Offset` (to `HEAD`).
    #[error("the farm holds no blob {hash}")]
    BlobNotFound { hash: BlobHash, held: Option<u64> },
    #[error("the farm holds no manifest {0}")]
    ManifestNotFound(BlobHash),
    #[error("{} blob(s) the manifest names are not on the farm; upload them first", .0.len())]
    MissingBlobs(Vec<BlobHash>),
    /// A frame upload whose render tag is not the task's current lease for that frame.
    #[error("{0}")]
    FrameRefused(String),
    /// A known token that may not make this call.
    #[error("{0}")]
    Forbidden(String),
    /// A join that would take over a node the farm knows under another secret.
    #[error("{0}")]
    NodeTaken(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        // Headers some answers carry besides their problem (where a resumable upload
        // stands), and members some problems carry besides the standard ones.
        let mut upload_offset: Option<u64> = None;
        let mut missing: Option<Vec<BlobHash>> = None;
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
            ApiError::Transfer(e) => match e {
                TransferError::OffsetMismatch { held, .. } | TransferError::Busy { held } => {
                    upload_offset = Some(held);
                    Problem::new(409, "Upload offset conflict")
                        .with_field("Upload-Offset")
                        .with_detail(detail)
                }
                TransferError::HashMismatch { field, .. } => Problem::new(422, "Hash mismatch")
                    .with_kind("/problems/hash-mismatch")
                    .with_field(field)
                    .with_detail(detail),
                TransferError::TooLarge { .. } => {
                    Problem::new(413, "Too large").with_detail(detail)
                }
                TransferError::TooLong { .. } => Problem::new(400, "Body too long")
                    .with_field("Upload-Length")
                    .with_detail(detail),
                TransferError::DiskFull { held, .. } => {
                    tracing::error!(error = %detail, "disk full");
                    upload_offset = Some(held);
                    Problem::new(507, "Insufficient storage").with_detail(detail)
                }
                TransferError::BodyBroken(_) => {
                    Problem::new(400, "Unreadable request body").with_detail(detail)
                }
                TransferError::BodyIdle => {
                    Problem::new(408, "Request body timeout").with_detail(detail)
                }
                TransferError::Io(_) => {
                    tracing::error!(error = %detail, "storage error");
                    Problem::new(500, "Internal error").with_detail(detail)
                }
            },
            ApiError::BlobNotFound { held, .. } => {
                upload_offset = held;
                Problem::new(404, "Blob not found").with_detail(detail)
            }
            ApiError::ManifestNotFound(_) => {
                Problem::new(404, "Manifest not found").with_detail(detail)
            }
            ApiError::MissingBlobs(list) => {
                missing = Some(list);
                Problem::new(409, "Blobs missing")
                    .with_kind("/problems/blobs-missing")
                    .with_field("files")
                    .with_detail(detail)
            }
            ApiError::FrameRefused(_) => Problem::new(409, "Frame refused")
                .with_kind("/problems/frame-refused")
                .with_field("X-Corral-Render")
                .with_detail(detail),
            ApiError::Forbidden(_) => Problem::new(403, "Forbidden").with_detail(detail),
            ApiError::NodeTaken(_) => Problem::new(409, "Node already joined")
                .with_kind("/problems/node-taken")
                .with_field("secret")
                .with_detail(detail),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "database error");
                Problem::new(500, "Internal error")
                    .with_detail("the database failed; see the orchestrator's log")
            }
        };
        let mut response = match missing {
            // RFC 9457 extension member: which blobs to upload.
            Some(missing) => {
                let mut body = serde_json::to_value(&problem).unwrap_or_default();
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("missing".into(), serde_json::json!(missing));
                }
                (
                    axum::http::StatusCode::CONFLICT,
                    [(axum::http::header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)],
                    body.to_string(),
                )
                    .into_response()
            }
            None => ProblemResponse(problem).into_response(),
        };
        if let Some(offset) = upload_offset {
            response.headers_mut().insert(
                HeaderName::from_static(UPLOAD_OFFSET),
                HeaderValue::from(offset),
            );
        }
        response
    }
}
