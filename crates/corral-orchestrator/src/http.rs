//! The orchestrator's HTTP API: the tutorial's `/render` and `/status/{id}`, the native
//! `/api/v1` (documented by the OpenAPI document it serves), `/metrics`, `/healthz`,
//! `/readyz`.

use crate::error::ApiError;
use crate::scheduler::Orchestrator;
use crate::store::JobRow;
use crate::views;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_core::job::retry_after_secs;
use corral_core::orchestrator_api::{
    validate_node_url, Event, JobDetail, JobPage, JobState, JobSubmission, JobSummary, NodeState,
    NodeView, RegisterNode, RenderAccepted, RenderStatus, SubmitJob, SubmitLimits,
};
use corral_core::validate::parse_json_object;
use corral_core::FieldError;
use corral_http::{JsonBody, PathId};
use futures_util::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use utoipa::OpenApi;

/// The OpenAPI document of the native API, generated from the same types the handlers use.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Corral orchestrator API",
        description = "Submit and follow Blender render jobs on a Corral farm."
    ),
    paths(
        render,
        status,
        submit_job,
        list_jobs,
        get_job,
        cancel_job,
        requeue_job,
        pause_job,
        resume_job,
        list_nodes,
        register_node,
        drain_node,
        enable_node,
        remove_node,
        events
    ),
    components(schemas(
        SubmitJob,
        JobSummary,
        JobDetail,
        JobPage,
        NodeView,
        RegisterNode,
        RenderAccepted,
        RenderStatus,
        Event,
        corral_core::Problem
    ))
)]
pub struct ApiDoc;

/// The orchestrator's routes. Public so tests can drive it in-process.
pub fn router(o: Orchestrator) -> Router {
    Router::new()
        .route("/render", post(render))
        .route("/status/{id}", get(status))
        .route("/api/v1/jobs", post(submit_job).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/requeue", post(requeue_job))
        .route("/api/v1/jobs/{id}/pause", post(pause_job))
        .route("/api/v1/jobs/{id}/resume", post(resume_job))
        .route("/api/v1/nodes", get(list_nodes).post(register_node))
        .route("/api/v1/nodes/{id}", axum::routing::delete(remove_node))
        .route("/api/v1/nodes/{id}/drain", post(drain_node))
        .route("/api/v1/nodes/{id}/enable", post(enable_node))
        .route("/api/v1/events", get(events))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(corral_http::route_not_found)
        .method_not_allowed_fallback(corral_http::method_not_allowed)
        .with_state(o)
}

fn limits(o: &Orchestrator) -> SubmitLimits {
    SubmitLimits {
        max_frames: o.config().max_frames,
        default_chunk_size: o.config().batch_size,
    }
}

async fn accept(o: &Orchestrator, sub: JobSubmission) -> Result<JobRow, ApiError> {
    let unfinished = o.store().count_unfinished_jobs().await?;
    if unfinished >= o.config().max_unfinished_jobs {
        return Err(ApiError::TooManyJobs(unfinished));
    }
    Ok(o.submit(sub).await?)
}

async fn find_job(o: &Orchestrator, id: &str) -> Result<JobRow, ApiError> {
    // Ids are UUIDs; anything else cannot be a job (and is not looked up).
    if id.parse::<corral_core::JobId>().is_err() {
        return Err(ApiError::JobNotFound(id.chars().take(64).collect()));
    }
    o.store()
        .job(id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))
}

fn location(path: String) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&path) {
        headers.insert(header::LOCATION, value);
    }
    headers
}

/// Submit frames `from`..`to` of the nodes' default scene (the tutorial's API).
#[utoipa::path(post, path = "/render", request_body = inline(corral_core::orchestrator_api::RenderRequest),
    responses((status = 202, description = "Stored; follow the Location", body = RenderAccepted),
              (status = 400, body = corral_core::Problem)))]
async fn render(
    State(o): State<Orchestrator>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let sub = JobSubmission::from_render_body(&body, limits(&o))?;
    let job = accept(&o, sub).await?;
    let id = job.job_id()?;
    let headers = location(format!("/status/{id}"));
    Ok((
        StatusCode::ACCEPTED,
        headers,
        Json(RenderAccepted { job_id: id }),
    )
        .into_response())
}

/// A job's status (the tutorial's API): 202 while it runs, 200 when it has ended.
#[utoipa::path(get, path = "/status/{id}", params(("id" = String, Path)),
    responses((status = 200, body = RenderStatus), (status = 202, body = RenderStatus),
              (status = 404, body = corral_core::Problem)))]
async fn status(State(o): State<Orchestrator>, PathId(id): PathId) -> Result<Response, ApiError> {
    let job = find_job(&o, &id).await?;
    let view = views::render_status(o.store(), &job).await?;
    if view.state.is_terminal() {
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    let mut headers = location(format!("/status/{id}"));
    let summary = views::job_summary(o.store(), &job).await?;
    let left = summary.frames_total.saturating_sub(summary.frames_done);
    let per_frame = summary
        .eta_seconds
        .filter(|_| left > 0)
        .map(|eta| eta as f64 / left as f64);
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(left, per_frame)),
    );
    Ok((StatusCode::ACCEPTED, headers, Json(view)).into_response())
}

/// Submit a job.
#[utoipa::path(post, path = "/api/v1/jobs", request_body = SubmitJob,
    responses((status = 202, body = JobSummary), (status = 400, body = corral_core::Problem),
              (status = 503, body = corral_core::Problem)))]
async fn submit_job(
    State(o): State<Orchestrator>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let sub = JobSubmission::from_body(&body, limits(&o))?;
    let job = accept(&o, sub).await?;
    let summary = views::job_summary(o.store(), &job).await?;
    let headers = location(format!("/api/v1/jobs/{}", job.id));
    Ok((StatusCode::ACCEPTED, headers, Json(summary)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

/// Jobs, newest first; `state` filters, `offset`/`limit` page (limit ≤ 500).
#[utoipa::path(get, path = "/api/v1/jobs",
    params(("state" = Option<String>, Query), ("offset" = Option<u64>, Query), ("limit" = Option<u64>, Query)),
    responses((status = 200, body = JobPage), (status = 400, body = corral_core::Problem)))]
async fn list_jobs(
    State(o): State<Orchestrator>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s)
                .ok_or_else(|| FieldError::new("state", format!("`{s}` is not a job state")))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(FieldError::new("limit", "must be between 1 and 500").into());
    }
    let offset = q.offset.unwrap_or(0);
    if offset > i64::MAX as u64 {
        return Err(FieldError::new("offset", format!("must be at most {}", i64::MAX)).into());
    }
    let (rows, total) = o.store().list_jobs(state, offset, limit).await?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        jobs.push(views::job_summary(o.store(), row).await?);
    }
    Ok(Json(JobPage {
        jobs,
        total,
        offset,
        limit,
    }))
}

/// A job with its tasks (state, node, attempts, timings, failure, log tail) and frames.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobDetail), (status = 404, body = corral_core::Problem)))]
async fn get_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobDetail>, ApiError> {
    let job = find_job(&o, &id).await?;
    Ok(Json(views::job_detail(o.store(), &job).await?))
}

async fn summary_of(o: &Orchestrator, id: &str) -> Result<Json<JobSummary>, ApiError> {
    let job = find_job(o, id).await?;
    Ok(Json(views::job_summary(o.store(), &job).await?))
}

/// Cancel a job; its running tasks are killed on their nodes before this answers.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = JobSummary), (status = 404, body = corral_core::Problem)))]
async fn cancel_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobSummary>, ApiError> {
    let job = find_job(&o, &id).await?;
    o.cancel(&job).await?;
    summary_of(&o, &id).await
}

/// Put a failed job's unfinished tasks back in the queue with fresh attempts.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/requeue", params(("id" = String, Path)),
    responses((status = 200, body = JobSummary), (status = 404, body = corral_core::Problem),
              (status = 409, body = corral_core::Problem)))]
async fn requeue_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobSummary>, ApiError> {
    let job = find_job(&o, &id).await?;
    let state = job.job_state()?;
    if !matches!(state, JobState::Failed | JobState::Cancelled) {
        return Err(ApiError::Conflict(format!(
            "job is {}; only failed or cancelled jobs can be re-queued",
            state.as_str()
        )));
    }
    o.requeue(&job).await?;
    summary_of(&o, &id).await
}

/// Pause a job: no new tasks start; running ones finish.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/pause", params(("id" = String, Path)),
    responses((status = 200, body = JobSummary), (status = 404, body = corral_core::Problem),
              (status = 409, body = corral_core::Problem)))]
async fn pause_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobSummary>, ApiError> {
    set_paused(&o, &id, true).await
}

/// Resume a paused job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/resume", params(("id" = String, Path)),
    responses((status = 200, body = JobSummary), (status = 404, body = corral_core::Problem),
              (status = 409, body = corral_core::Problem)))]
async fn resume_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobSummary>, ApiError> {
    set_paused(&o, &id, false).await
}

async fn set_paused(
    o: &Orchestrator,
    id: &str,
    paused: bool,
) -> Result<Json<JobSummary>, ApiError> {
    let job = find_job(o, id).await?;
    let state = job.job_state()?;
    if state.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "job has ended ({})",
            state.as_str()
        )));
    }
    o.set_paused(&job, paused).await?;
    summary_of(o, id).await
}

/// Render nodes: state, slots, running tasks, last seen, Blender version.
#[utoipa::path(get, path = "/api/v1/nodes", responses((status = 200, body = Vec<NodeView>)))]
async fn list_nodes(State(o): State<Orchestrator>) -> Result<Json<Vec<NodeView>>, ApiError> {
    let nodes = o.store().nodes().await?;
    let running = o.store().running_per_node().await?;
    Ok(Json(
        nodes
            .iter()
            .map(|n| views::node_view(n, &running))
            .collect(),
    ))
}

/// A node announces itself (`corral node --orchestrator`), again every few seconds.
#[utoipa::path(post, path = "/api/v1/nodes", request_body = RegisterNode,
    responses((status = 200, body = NodeView), (status = 400, body = corral_core::Problem)))]
async fn register_node(
    State(o): State<Orchestrator>,
    JsonBody(body): JsonBody,
) -> Result<Json<NodeView>, ApiError> {
    let req: RegisterNode = parse_json_object(&body)?;
    let url = req.url.ok_or_else(|| {
        FieldError::new("url", "required: where the orchestrator reaches the node")
    })?;
    let url = validate_node_url("url", &url)?;
    let node = o.register_node(&url).await?;
    let running = o.store().running_per_node().await?;
    Ok(Json(views::node_view(&node, &running)))
}

async fn find_node(o: &Orchestrator, id: &str) -> Result<crate::store::NodeRow, ApiError> {
    o.store()
        .node(id)
        .await?
        .ok_or_else(|| ApiError::NodeNotFound(id.chars().take(100).collect()))
}

async fn node_answer(o: &Orchestrator, id: &str) -> Result<Json<NodeView>, ApiError> {
    let node = find_node(o, id).await?;
    let running = o.store().running_per_node().await?;
    Ok(Json(views::node_view(&node, &running)))
}

/// Drain a node: it gets no new tasks; its running ones finish.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/drain", params(("id" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = corral_core::Problem)))]
async fn drain_node(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<NodeView>, ApiError> {
    let node = find_node(&o, &id).await?;
    o.set_draining(&node, true).await?;
    node_answer(&o, &id).await
}

/// Let a drained node take tasks again.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/enable", params(("id" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = corral_core::Problem)))]
async fn enable_node(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<NodeView>, ApiError> {
    let node = find_node(&o, &id).await?;
    o.set_draining(&node, false).await?;
    node_answer(&o, &id).await
}

/// Forget a node; its running tasks are stopped there and re-queued.
#[utoipa::path(delete, path = "/api/v1/nodes/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = corral_core::Problem)))]
async fn remove_node(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let node = find_node(&o, &id).await?;
    o.remove_node(&node).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Server-Sent Events: one `data:` JSON [`Event`] per job, task, frame or node change.
#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 200, description = "text/event-stream of Event", body = Event)))]
async fn events(
    State(o): State<Orchestrator>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = tokio_stream::wrappers::BroadcastStream::new(o.subscribe())
        .filter_map(|event| async move {
            // A lagging client skips what it missed; the next event carries fresh state.
            let event = event.ok()?;
            let kind = match &event {
                Event::Job { .. } => "job",
                Event::Task { .. } => "task",
                Event::Frame { .. } => "frame",
                Event::Node { .. } => "node",
            };
            SseEvent::default()
                .event(kind)
                .json_data(&event)
                .ok()
                .map(Ok)
        })
        .take_until(o.shutdown_token().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn metrics(State(o): State<Orchestrator>) -> Result<Response, ApiError> {
    let store = o.store();
    let jobs = store.count_by_state("jobs").await?;
    let tasks = store.count_by_state("tasks").await?;
    let nodes = store.nodes().await?;
    let up = nodes
        .iter()
        .filter(|n| n.node_state() == NodeState::Up)
        .count() as i64;
    let frames = store.count_frames().await?;
    let body = o
        .metrics()
        .render(&jobs, &tasks, up, nodes.len() as i64, frames);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the database answers.
async fn readyz(State(o): State<Orchestrator>) -> Response {
    match o.store().ping().await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => corral_http::ProblemResponse(
            corral_core::Problem::new(503, "Not ready").with_detail(e.to_string()),
        )
        .into_response(),
    }
}
