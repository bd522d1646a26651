//! HTTP pieces shared by the node and the orchestrator: every error becomes an RFC 9457
//! problem answer here, bodies are read with one size limit and content-type check, and
//! unknown routes and methods answer with problems too.

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

/// A JSON request body: at most [`MAX_BODY_BYTES`], and JSON by content type when one is
/// given (a missing content type is accepted, for `curl -d`). Every failure is a problem.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ProblemResponse;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
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
        let body =
            axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
                .await
                .map_err(|_| {
                    ProblemResponse(Problem::new(413, "Request body too large").with_detail(
                        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                    ))
                })?;
        Ok(JsonBody(body))
    }
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

/// How long a server waits, once its own shutdown work is done, for open connections to
/// finish before it exits anyway (a client that never completes its request must not keep
/// a stopped server alive).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `app` until `shutdown` completes, then lets open requests finish for at most
/// [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = done_tx.send(());
    });
    tokio::select! {
        result = server => result,
        () = async {
            if done_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => Ok(()),
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
