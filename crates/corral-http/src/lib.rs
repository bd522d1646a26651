//! HTTP pieces shared by the node and the orchestrator: the server itself (timeouts and
//! a connection bound, in `server`), every error as an RFC 9457 problem answer, bodies
//! read with one size limit, deadline and content-type check, and problems for unknown
//! routes and methods too.

mod server;
pub mod tls;

/// What [`serve_tls`] wraps connections in (made by [`tls::TlsIdentity::acceptor`]).
pub use tokio_rustls::TlsAcceptor;

pub use server::{
    serve, serve_tls, serve_with, BodyTimeout, ServerLimits, BODY_TIMEOUT, HEADER_TIMEOUT,
    MAX_CONNECTIONS, SHUTDOWN_GRACE, WRITE_TIMEOUT,
};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use corral_core::problem::PROBLEM_CONTENT_TYPE;
use corral_core::{FieldError, Problem};

/// Largest request body read; API requests are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A problem, answered with its status and `application/problem+json`.
#[derive(Debug, Clone)]
pub struct ProblemResponse(pub Problem);

impl From<FieldError> for ProblemResponse {
    fn from(err: FieldError) -> Self {
        ProblemResponse(Problem::invalid_field(err))
    }
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut response =
            (status, [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)], body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Overload and shutdown are temporary: tell clients when to come back.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// A JSON request body: at most [`MAX_BODY_BYTES`] (413 beyond), read within the
/// request's [`BodyTimeout`] (408 after), and JSON by content type when one is given (a
/// missing content type is accepted, for `curl -d`; 415 otherwise). A body that cannot
/// be read for any other reason (cut off, malformed chunks) is 400. Every failure is a
/// problem.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ProblemResponse;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let deadline = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(BODY_TIMEOUT, |t| t.0);
        read_json(req, MAX_BODY_BYTES, deadline).await.map(JsonBody)
    }
}

/// Least time a [`LargeJsonBody`] gets to arrive: megabytes over a slow link take longer
/// than the few hundred bytes [`BODY_TIMEOUT`] is meant for.
pub const LARGE_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A JSON request body of at most `MAX` bytes, otherwise read like [`JsonBody`] (within
/// the request's body deadline or [`LARGE_BODY_TIMEOUT`], whichever is longer): for the
/// few requests that carry lists (a scene's manifest, a list of blob hashes).
pub struct LargeJsonBody<const MAX: usize>(pub Bytes);

impl<S: Send + Sync, const MAX: usize> FromRequest<S> for LargeJsonBody<MAX> {
    type Rejection = ProblemResponse;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let deadline = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(BODY_TIMEOUT, |t| t.0)
            .max(LARGE_BODY_TIMEOUT);
        read_json(req, MAX, deadline).await.map(LargeJsonBody)
    }
}

async fn read_json(
    req: Request,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Bytes, ProblemResponse> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim().to_string();
        if essence != "application/json" && !essence.ends_with("+json") {
            let shown: String = essence.chars().take(100).collect();
            return Err(ProblemResponse(
                Problem::new(415, "Unsupported media type").with_detail(format!(
                    "content type `{shown}` is not JSON; send Content-Type: application/json"
                )),
            ));
        }
    }
    let read = axum::body::to_bytes(req.into_body(), limit);
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) if is_too_large(&e) => Err(ProblemResponse(
            Problem::new(413, "Request body too large")
                .with_detail(format!("request body is larger than {limit} bytes")),
        )),
        // The client closed mid-body, sent fewer bytes than it announced, or broke
        // the chunked encoding: the request is malformed, not too large.
        Ok(Err(e)) => Err(ProblemResponse(
            Problem::new(400, "Unreadable request body").with_detail(format!(
                "the request body could not be read: {}",
                root_message(&e)
            )),
        )),
        Err(_) => Err(ProblemResponse(
            Problem::new(408, "Request body timeout").with_detail(format!(
                "the request body did not arrive within {} s",
                deadline.as_secs_f64()
            )),
        )),
    }
}

/// Whether reading a body failed because it is larger than the limit (the only failure
/// that is the body's size; others are a broken or cut-off request).
fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The innermost cause of a body error (`connection closed before message completed`),
/// cut short, for the problem's detail.
fn root_message(e: &axum::Error) -> String {
    let mut inner: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string().chars().take(200).collect()
}

/// A path segment naming a resource. An id that is not even valid UTF-8 names nothing, so
/// it is answered like any unknown id: 404, with a problem body.
pub struct PathId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathId {
    type Rejection = ProblemResponse;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(PathId(id)),
            Err(_) => Err(ProblemResponse(
                Problem::new(404, "Not found").with_detail("no such id"),
            )),
        }
    }
}

/// Fallback for unknown routes.
pub async fn route_not_found(uri: Uri) -> ProblemResponse {
    let path: String = uri.path().chars().take(200).collect();
    ProblemResponse(Problem::new(404, "Not found").with_detail(format!("no route {path}")))
}

/// Fallback for known routes with the wrong method.
pub async fn method_not_allowed() -> ProblemResponse {
    ProblemResponse(Problem::new(405, "Method not allowed"))
}
