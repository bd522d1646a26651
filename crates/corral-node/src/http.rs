//! The node's HTTP API: routes, the JSON body extractor, and the long-poll.

use crate::error::ApiError;
use crate::jobs::Node;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use corral_core::job::retry_after_secs;
use corral_core::node_api::{JobSpec, JobView, TruncateAnswer, TruncateRequest};
use corral_core::FieldError;
use corral_http::{JsonBody, PathId};
use std::collections::HashMap;
use std::time::Duration;

/// The node's routes over `node`'s state. Public so tests can drive it in-process.
pub fn router(node: Node) -> Router {
    let secret = node.config().secret.clone();
    let app = Router::new()
        .route("/job", axum::routing::post(submit_job))
        .route("/job/{id}", get(get_job).delete(cancel_job))
        .route("/job/{id}/log", get(job_log))
        .route("/job/{id}/truncate", axum::routing::post(truncate_job))
        .route("/jobs", get(list_jobs))
        .route("/healthz", get(healthz))
        .route("/info", get(info))
        .fallback(corral_http::route_not_found)
        .method_not_allowed_fallback(corral_http::method_not_allowed)
        .with_state(node);
    match secret {
        Some(secret) => app.layer(axum::middleware::from_fn(move |req, next| {
            require_secret(secret.clone(), req, next)
        })),
        None => app,
    }
}

/// The layer of a node that joined with a token: a call without its secret (but
/// `/healthz`, for probes) is a `401` problem, and reaches no handler.
async fn require_secret(
    secret: String,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented.is_some_and(|p| same_secret(p, &secret)) {
        return next.run(req).await;
    }
    let problem = corral_core::Problem::new(401, "Unauthorized")
        .with_detail("this node joined an orchestrator and takes calls only from it");
    let mut response = corral_http::ProblemResponse(problem).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares two secrets in time that does not depend on where they differ: their SHA-256
/// digests are compared whole.
fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `202 Accepted` with `Location` and `Retry-After` while a job is queued or running,
/// `200 OK` once it has ended; the body is the job's view either way.
fn job_response(view: JobView, created: bool) -> Response {
    let terminal = view.state.is_terminal();
    let status = if terminal && !created {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut headers = HeaderMap::new();
    if !terminal || created {
        if let Ok(location) = HeaderValue::from_str(&format!("/job/{}", view.id)) {
            headers.insert(header::LOCATION, location);
        }
        let secs = retry_after_secs(
            view.frames_total.saturating_sub(view.frames_done),
            seconds_per_frame(&view),
        );
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    (status, headers, Json(view)).into_response()
}

fn seconds_per_frame(view: &JobView) -> Option<f64> {
    let started = view.started_at?;
    if view.frames_done == 0 {
        return None;
    }
    let elapsed = (chrono::Utc::now() - started).num_milliseconds() as f64 / 1000.0;
    Some(elapsed / view.frames_done as f64)
}

async fn submit_job(
    State(node): State<Node>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    if !node.is_accepting() {
        return Err(ApiError::ShuttingDown);
    }
    let spec = JobSpec::from_body(&body, node.config().max_frames)?;
    let view = node.submit(spec)?;
    Ok(job_response(view, true))
}

/// `?wait=SECONDS[&since=VERSION][&batch=SECONDS]`: hold the answer until the job
/// changes; with `batch`, answer progress short of the render's end no sooner than that
/// long after the request (the end at once).
struct WaitParams {
    wait: Option<Duration>,
    since: Option<u64>,
    batch: Duration,
}

/// A query parameter that is a number of seconds, at most `max`.
fn seconds(
    query: &HashMap<String, String>,
    name: &str,
    max: Duration,
) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = query.get(name) else {
        return Ok(None);
    };
    let secs: f64 = raw
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| FieldError::new(name, format!("`{raw}` is not a number of seconds")))?;
    if secs > max.as_secs_f64() {
        return Err(FieldError::new(name, format!("at most {} seconds", max.as_secs())).into());
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

fn wait_params(query: &HashMap<String, String>, max: Duration) -> Result<WaitParams, ApiError> {
    // A misspelt `wait` would silently turn a long-poll into a plain poll.
    if let Some(unknown) = query
        .keys()
        .find(|k| !["wait", "since", "batch"].contains(&k.as_str()))
    {
        let shown: String = unknown.chars().take(50).collect();
        return Err(FieldError::new(
            shown.clone(),
            format!("unknown query parameter `{shown}`; expected `wait`, `since` and `batch`"),
        )
        .into());
    }
    let wait = seconds(query, "wait", max)?;
    let batch = seconds(query, "batch", max)?.unwrap_or_default();
    let since = match query.get("since") {
        None => None,
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
            FieldError::new(
                "since",
                format!("`{raw}` is not a job version (an integer)"),
            )
        })?),
    };
    Ok(WaitParams { wait, since, batch })
}

async fn get_job(
    State(node): State<Node>,
    PathId(key): PathId,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = node.find(&key)?;
    let Query(query) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
    let params = wait_params(&query, node.config().max_wait)?;
    let view = node
        .view(id)
        .ok_or_else(|| ApiError::JobNotFound(key.clone()))?;
    let view = match params.wait {
        Some(wait) if !wait.is_zero() => {
            let since = params.since.unwrap_or(view.version);
            node.wait_for_change(id, since, wait, params.batch)
                .await
                .ok_or(ApiError::JobNotFound(key))?
        }
        _ => view,
    };
    Ok(job_response(view, false))
}

async fn cancel_job(State(node): State<Node>, PathId(key): PathId) -> Result<Response, ApiError> {
    let id = node.find(&key)?;
    node.cancel(id);
    // A running job ends when its Blender group is reaped, which takes milliseconds; wait
    // for it briefly so the answer usually shows the final state.
    let view = node
        .wait_for_change(id, u64::MAX, Duration::from_secs(2), Duration::ZERO)
        .await
        .ok_or(ApiError::JobNotFound(key))?;
    Ok(job_response(view, false))
}

/// `POST /job/{id}/truncate {"to": N}`: the render ends after frame N, or after the frame
/// it is rendering when that is later; answers `{"to": E}`, its last frame from now on.
async fn truncate_job(
    State(node): State<Node>,
    PathId(key): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<TruncateAnswer>, ApiError> {
    let id = node.find(&key)?;
    let to = TruncateRequest::from_body(&body)?;
    let end = node.truncate(id, to)?;
    Ok(Json(TruncateAnswer { to: end }))
}

async fn job_log(State(node): State<Node>, PathId(key): PathId) -> Result<Response, ApiError> {
    let id = node.find(&key)?;
    let path = crate::runner::log_path(&node, id);
    let body = match tokio::fs::File::open(&path).await {
        Ok(file) => Body::from_stream(tokio_util::io::ReaderStream::new(file)),
        // Queued jobs have no log yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Body::empty(),
        Err(e) => return Err(ApiError::Internal(format!("cannot read the log: {e}"))),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn list_jobs(State(node): State<Node>) -> Json<Vec<JobView>> {
    Json(node.list())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn info(State(node): State<Node>) -> Json<corral_core::node_api::NodeInfo> {
    Json(node.info())
}
