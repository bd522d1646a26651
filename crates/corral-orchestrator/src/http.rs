//! The orchestrator's HTTP API: the tutorial's `/render` and `/status/{id}`, the native
//! `/api/v1` (documented by the OpenAPI document it serves), `/metrics`, `/healthz`,
//! `/readyz`. Handlers parse input into typed values and hand them to the orchestrator;
//! the rules about what may be done to a job live in the domain
//! ([`corral_core::lifecycle::check_job_command`]).

use crate::auth::Caller;
use crate::error::ApiError;
use crate::orchestrator::Orchestrator;
use crate::store::{
    Admission, JobOutcome, JobRecord, NodeRecord, NodeSecret, StoreError, TokenKind,
};
use crate::views;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_core::job::retry_after_secs;
use corral_core::lifecycle::JobCommand;
use corral_core::orchestrator_api::{
    validate_node_secret, validate_node_url, Event, FramePage, JobDetail, JobPage, JobState,
    JobSubmission, JobSummary, NodeView, RegisterNode, RenderAccepted, RenderStatus, SetPriority,
    SubmitJob, SubmitLimits, TaskPage,
};
use corral_core::tls::Fingerprint;
use corral_core::validate::parse_json_object;
use corral_core::{FieldError, JobId, NodeId};
use corral_http::{JsonBody, PathId};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::convert::Infallible;
use utoipa::OpenApi;

/// Most items one page holds.
const MAX_PAGE: u64 = 500;
/// Most frames one page of frames holds.
const MAX_FRAME_PAGE: u64 = 5000;

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
        job_tasks,
        job_frames,
        cancel_job,
        requeue_job,
        pause_job,
        resume_job,
        prioritize_job,
        list_nodes,
        register_node,
        drain_node,
        enable_node,
        remove_node,
        events,
        crate::dashboard::frame_thumbnail,
        crate::dashboard::frame_image,
        crate::dashboard::job_preview,
        crate::dashboard::job_preview_video,
        crate::dashboard::task_log,
        crate::transfer::missing_blobs,
        crate::transfer::head_blob,
        crate::transfer::get_blob,
        crate::transfer::put_blob,
        crate::transfer::create_manifest,
        crate::transfer::get_manifest,
        crate::transfer::put_frame,
        crate::transfer::get_frame
    ),
    components(schemas(
        SubmitJob,
        SetPriority,
        JobSummary,
        JobDetail,
        JobPage,
        TaskPage,
        FramePage,
        NodeView,
        RegisterNode,
        RenderAccepted,
        RenderStatus,
        Event,
        corral_core::orchestrator_api::PreviewView,
        corral_core::orchestrator_api::PreviewState,
        corral_core::Problem,
        corral_core::manifest::Manifest,
        corral_core::manifest::ManifestFile,
        corral_core::manifest::ManifestCreated,
        corral_core::manifest::MissingQuery,
        corral_core::manifest::MissingBlobs
    ))
)]
pub struct ApiDoc;

/// The orchestrator's routes, behind the token check when the farm requires tokens.
/// Public so tests can drive it in-process.
pub fn router(o: Orchestrator) -> Router {
    crate::auth::protect(o.clone(), routes(o))
}

/// The orchestrator's routes without the token check, for a server that adds routes of
/// its own (`corral up`) and then puts the whole under [`crate::auth::protect`].
pub fn routes(o: Orchestrator) -> Router {
    Router::new()
        .route("/render", post(render))
        .route("/status/{id}", get(status))
        .route("/api/v1/jobs", post(submit_job).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/tasks", get(job_tasks))
        .route("/api/v1/jobs/{id}/frames", get(job_frames))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/requeue", post(requeue_job))
        .route("/api/v1/jobs/{id}/pause", post(pause_job))
        .route("/api/v1/jobs/{id}/resume", post(resume_job))
        .route("/api/v1/jobs/{id}/priority", post(prioritize_job))
        .route("/api/v1/nodes", get(list_nodes).post(register_node))
        .route("/api/v1/nodes/{id}", axum::routing::delete(remove_node))
        .route("/api/v1/nodes/{id}/drain", post(drain_node))
        .route("/api/v1/nodes/{id}/enable", post(enable_node))
        .route("/api/v1/events", get(events))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::dashboard::router())
        .merge(crate::transfer::router())
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

async fn accept(o: &Orchestrator, mut sub: JobSubmission) -> Result<JobRecord, ApiError> {
    o.check_scene(&mut sub).await?;
    match o.submit(sub).await? {
        Admission::Accepted(job) => Ok(*job),
        Admission::Full(unfinished) => Err(ApiError::TooManyJobs(unfinished)),
    }
}

async fn find_job(o: &Orchestrator, id: &str) -> Result<JobRecord, ApiError> {
    // Ids are UUIDs; anything else cannot be a job (and is not looked up).
    let not_found = || ApiError::JobNotFound(id.chars().take(64).collect());
    let job_id: JobId = id.parse().map_err(|_| not_found())?;
    o.store().job(job_id).await?.ok_or_else(not_found)
}

fn location(path: String) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&path) {
        headers.insert(header::LOCATION, value);
    }
    headers
}

/// Query parameters, each checked against the names a route takes; a bad one is refused
/// naming itself.
struct QueryParams(HashMap<String, String>);

impl QueryParams {
    fn parse(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<QueryParams, FieldError> {
        let Query(params) = query.map_err(|e| FieldError::new("query", e.body_text()))?;
        if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
            let shown: String = unknown.chars().take(50).collect();
            return Err(FieldError::new(
                shown,
                format!(
                    "unknown query parameter; this route takes {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(QueryParams(params))
    }

    fn number(&self, name: &str, default: u64, max: u64) -> Result<u64, FieldError> {
        let Some(raw) = self.0.get(name) else {
            return Ok(default);
        };
        let n: u64 = raw
            .parse()
            .map_err(|_| FieldError::new(name, "must be a whole number"))?;
        if n > max {
            return Err(FieldError::new(name, format!("must be at most {max}")));
        }
        Ok(n)
    }

    /// `offset` (default 0) and `limit` (default `default`, 1 to `max`).
    fn page(&self, default: u64, max: u64) -> Result<(u64, u64), FieldError> {
        let offset = self.number("offset", 0, i64::MAX as u64)?;
        let limit = self.number("limit", default, max)?;
        if limit == 0 {
            return Err(FieldError::new(
                "limit",
                format!("must be between 1 and {max}"),
            ));
        }
        Ok((offset, limit))
    }
}

/// Submit frames `from`..`to` of the nodes' default scene (the tutorial's API).
#[utoipa::path(post, path = "/render", request_body = inline(corral_core::orchestrator_api::RenderRequest),
    responses((status = 202, description = "Stored; follow the Location", body = RenderAccepted),
              (status = 400, body = corral_core::Problem, content_type = "application/problem+json"), (status = 503, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn render(
    State(o): State<Orchestrator>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let sub = JobSubmission::from_render_body(&body, limits(&o))?;
    let job = accept(&o, sub).await?;
    let id = job.id();
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
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn status(State(o): State<Orchestrator>, PathId(id): PathId) -> Result<Response, ApiError> {
    let job = find_job(&o, &id).await?;
    let view = views::render_status(o.store(), &job).await?;
    if view.state.is_terminal() {
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    let mut headers = location(format!("/status/{id}"));
    let summary = views::job_summary(&job);
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
    responses((status = 202, body = JobSummary), (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 503, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn submit_job(
    State(o): State<Orchestrator>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let sub = JobSubmission::from_body(&body, limits(&o))?;
    let fps = SubmitJob::fps_from_body(&body)?;
    // From the manifest's check until the job is recorded, the collector deletes none of
    // its blobs; after, the job names them.
    let blobs = &o.storage().blobs;
    let in_use = match &sub.manifest {
        Some(_) => Some(blobs.in_use().await),
        None => None,
    };
    if let (Some(manifest), Some(in_use)) = (&sub.manifest, &in_use) {
        // Nodes fetch it from this orchestrator: a job on a manifest it lacks could only fail.
        let Some(bytes) = crate::transfer::load_manifest(&o, manifest).await? else {
            return Err(FieldError::new(
                "manifest",
                format!(
                    "the farm holds no manifest {manifest}; POST it to /api/v1/manifests first"
                ),
            )
            .into());
        };
        // Stored manifests were checked when posted; one that no longer parses names nothing.
        let mut named = corral_core::manifest::Manifest::from_body(&bytes)
            .map(|m| m.hashes())
            .unwrap_or_default();
        named.push(manifest.clone());
        let missing = blobs.touch(in_use, &named).await;
        if !missing.is_empty() {
            // Collected since the manifest was posted (it went unused past the retention).
            return Err(ApiError::MissingBlobs(missing));
        }
    }
    let job = accept(&o, sub).await?;
    drop(in_use);
    if let Some(fps) = fps {
        // The job is accepted either way; without it its preview plays at 24 fps.
        if let Err(e) = o.inner.media.remember_fps(job.id(), fps).await {
            tracing::warn!(job = %job.id(), error = %e, "could not keep the job's frame rate");
        }
    }
    let headers = location(format!("/api/v1/jobs/{}", job.id()));
    Ok((
        StatusCode::ACCEPTED,
        headers,
        Json(views::job_summary(&job)),
    )
        .into_response())
}

/// Jobs, newest first; `state` filters, `offset`/`limit` page (limit ≤ 500).
#[utoipa::path(get, path = "/api/v1/jobs",
    params(("state" = Option<String>, Query), ("offset" = Option<u64>, Query), ("limit" = Option<u64>, Query)),
    responses((status = 200, body = JobPage), (status = 400, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn list_jobs(
    State(o): State<Orchestrator>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let q = QueryParams::parse(query, &["state", "offset", "limit"])?;
    let state =
        q.0.get("state")
            .map(|s| {
                JobState::parse(s).ok_or_else(|| {
                    let shown: String = s.chars().take(50).collect();
                    FieldError::new("state", format!("`{shown}` is not a job state"))
                })
            })
            .transpose()?;
    let (offset, limit) = q.page(50, MAX_PAGE)?;
    let (jobs, total) = o.store().jobs(state, offset, limit).await?;
    Ok(Json(JobPage {
        jobs: jobs.iter().map(views::job_summary).collect(),
        total,
        offset,
        limit,
    }))
}

/// A job's summary with its first tasks (state, node, attempts, timings, failure, log
/// tail); page through the rest with `/tasks`, and its frames with `/frames`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobDetail), (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn get_job(State(o): State<Orchestrator>, PathId(id): PathId) -> Result<Response, ApiError> {
    // Ids are UUIDs; anything else cannot be a job (and is not looked up).
    let not_found = || ApiError::JobNotFound(id.chars().take(64).collect());
    let job: JobId = id.parse().map_err(|_| not_found())?;
    let body = o
        .inner
        .details
        .detail(o.store(), job)
        .await?
        .ok_or_else(not_found)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A page of a job's tasks, in order (`offset`, `limit` ≤ 500).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/tasks",
    params(("id" = String, Path), ("offset" = Option<u64>, Query), ("limit" = Option<u64>, Query)),
    responses((status = 200, body = TaskPage), (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn job_tasks(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<TaskPage>, ApiError> {
    let (offset, limit) = QueryParams::parse(query, &["offset", "limit"])?.page(100, MAX_PAGE)?;
    let job = find_job(&o, &id).await?;
    let tasks = o.store().tasks(job.id(), offset, limit).await?;
    Ok(Json(TaskPage {
        tasks: tasks.iter().map(views::task_view).collect(),
        total: job.life.tally.total(),
        offset,
        limit,
    }))
}

/// A page of a job's frames, in order from its first (`offset`, `limit` ≤ 5000): each
/// done (with its node and path) or pending.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/frames",
    params(("id" = String, Path), ("offset" = Option<u64>, Query), ("limit" = Option<u64>, Query)),
    responses((status = 200, body = FramePage), (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn job_frames(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<FramePage>, ApiError> {
    let (offset, limit) =
        QueryParams::parse(query, &["offset", "limit"])?.page(1000, MAX_FRAME_PAGE)?;
    let job = find_job(&o, &id).await?;
    Ok(Json(
        views::frame_page(o.store(), &job, offset, limit).await?,
    ))
}

async fn command(
    o: &Orchestrator,
    id: &str,
    command: JobCommand,
) -> Result<Json<JobSummary>, ApiError> {
    let job = find_job(o, id).await?;
    match o.job_command(job.id(), command).await? {
        JobOutcome::Done { job, .. } => Ok(Json(views::job_summary(&job))),
        JobOutcome::Refused(refusal) => Err(ApiError::Conflict(refusal.to_string())),
        JobOutcome::Unknown => Err(ApiError::JobNotFound(id.chars().take(64).collect())),
    }
}

/// Cancel a job that has not ended; its running tasks are killed on their nodes before
/// this answers.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = JobSummary), (status = 404, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 409, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn cancel_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobSummary>, ApiError> {
    command(&o, &id, JobCommand::Cancel).await
}

/// Put a failed or cancelled job's unfinished tasks back in the queue with fresh attempts.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/requeue", params(("id" = String, Path)),
    responses((status = 200, body = JobSummary), (status = 404, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 409, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn requeue_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobSummary>, ApiError> {
    command(&o, &id, JobCommand::Requeue).await
}

/// Pause a job: no new tasks start; running ones finish.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/pause", params(("id" = String, Path)),
    responses((status = 200, body = JobSummary), (status = 404, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 409, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn pause_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobSummary>, ApiError> {
    command(&o, &id, JobCommand::Pause).await
}

/// Resume a paused job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/resume", params(("id" = String, Path)),
    responses((status = 200, body = JobSummary), (status = 404, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 409, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn resume_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<JobSummary>, ApiError> {
    command(&o, &id, JobCommand::Resume).await
}

/// Change a job's priority (higher runs first; -1000 to 1000).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/priority", params(("id" = String, Path)),
    request_body = SetPriority,
    responses((status = 200, body = JobSummary), (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json"), (status = 409, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn prioritize_job(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<JobSummary>, ApiError> {
    let priority = SetPriority::from_body(&body)?;
    command(&o, &id, JobCommand::Prioritize(priority)).await
}

/// Render nodes: state, slots, running tasks, last seen, Blender version.
#[utoipa::path(get, path = "/api/v1/nodes", responses((status = 200, body = Vec<NodeView>)))]
async fn list_nodes(State(o): State<Orchestrator>) -> Result<Json<Vec<NodeView>>, ApiError> {
    let nodes = o.store().nodes().await?;
    Ok(Json(nodes.iter().map(views::node_view).collect()))
}

/// A node announces itself (`corral node --orchestrator`), again every few seconds.
#[utoipa::path(post, path = "/api/v1/nodes", request_body = RegisterNode,
    responses((status = 200, body = NodeView), (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 409, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn register_node(
    State(o): State<Orchestrator>,
    caller: Option<axum::Extension<Caller>>,
    JsonBody(body): JsonBody,
) -> Result<Json<NodeView>, ApiError> {
    let req: RegisterNode = parse_json_object(&body)?;
    let url = req.url.ok_or_else(|| {
        FieldError::new("url", "required: where the orchestrator reaches the node")
    })?;
    let url = validate_node_url("url", &url)?;
    let secret = req
        .secret
        .map(|s| validate_node_secret("secret", &s).map(NodeSecret))
        .transpose()?;
    let tls = req
        .fingerprint
        .map(|fp| Fingerprint::parse(&fp).map_err(|why| FieldError::new("fingerprint", why)))
        .transpose()?;
    if tls.is_some() && !url.starts_with("https://") {
        return Err(FieldError::new(
            "fingerprint",
            "is for a node reached over HTTPS; this url is plain http",
        )
        .into());
    }
    let caller = caller.map(|axum::Extension(c)| c);
    // A node's credential refreshes that node's registration only.
    if let Some(Caller {
        kind: TokenKind::Node,
        name,
    }) = &caller
    {
        if *name != NodeId::from_url(&url).as_str() {
            return Err(ApiError::Forbidden(format!(
                "this credential belongs to node `{name}`, not to {url}"
            )));
        }
    }
    // A join token adds machines; it does not take over one the farm knows. Known under a
    // secret, a URL joins again only with that same secret (the node's restart: it keeps
    // its secret); otherwise another machine could have the farm send that node's calls
    // under a secret of its choosing and get that node's credential. A node that lost its
    // secret is removed by an admin first (`DELETE /api/v1/nodes/{id}`, a client token).
    // The secret's holder may change the node's certificate (it made a new one).
    let joining = matches!(
        &caller,
        Some(Caller {
            kind: TokenKind::Join,
            ..
        })
    );
    let _joins = if joining {
        // One join at a time in this process, so two joins of one URL cannot both pass.
        Some(o.inner.joins.lock().await)
    } else {
        None
    };
    if joining {
        if let Some(known) = o.store().node(&NodeId::from_url(&url)).await? {
            let digest = |s: Option<&NodeSecret>| s.map(|s| crate::auth::token_hash(&s.0));
            // Compared as digests, not byte by byte against the stored secret.
            let same =
                known.secret.is_some() && digest(known.secret.as_ref()) == digest(secret.as_ref());
            if !same {
                return Err(ApiError::NodeTaken(format!(
                    "node `{}` ({url}) is already on this farm under another secret; a join \
                     token cannot replace it. Join from that node (it keeps its secret in its \
                     data folder), or remove the node first with a client token \
                     (DELETE /api/v1/nodes/{})",
                    known.id, known.id
                )));
            }
        }
    }
    let node = o.register_node(&url, secret, tls).await?;
    let mut view = views::node_view(&node);
    // Joining under a join token: the node gets a credential of its own for its later
    // calls (its earlier ones, from an earlier join, stop working).
    if let Some(Caller {
        kind: TokenKind::Join,
        ..
    }) = caller
    {
        let store = o.store();
        store
            .revoke_tokens_named(TokenKind::Node, node.id.as_str())
            .await?;
        let (credential, _) = crate::auth::create_token(store, TokenKind::Node, node.id.as_str())
            .await
            .map_err(|e| match e {
                crate::auth::TokenError::Store(e) => ApiError::Store(e),
                crate::auth::TokenError::Random(e) => {
                    ApiError::Store(StoreError::Database(e.to_string()))
                }
            })?;
        view.credential = Some(credential);
    }
    Ok(Json(view))
}

async fn find_node(o: &Orchestrator, id: &str) -> Result<NodeRecord, ApiError> {
    o.store()
        .node(&NodeId::new(id))
        .await?
        .ok_or_else(|| ApiError::NodeNotFound(id.chars().take(100).collect()))
}

async fn set_draining(
    o: &Orchestrator,
    id: &str,
    draining: bool,
) -> Result<Json<NodeView>, ApiError> {
    let node = find_node(o, id).await?;
    let node = o
        .set_draining(&node.id, draining)
        .await?
        .ok_or_else(|| ApiError::NodeNotFound(id.chars().take(100).collect()))?;
    Ok(Json(views::node_view(&node)))
}

/// Drain a node: it gets no new tasks; its running ones finish.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/drain", params(("id" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn drain_node(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<NodeView>, ApiError> {
    set_draining(&o, &id, true).await
}

/// Let a drained node take tasks again.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/enable", params(("id" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn enable_node(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<Json<NodeView>, ApiError> {
    set_draining(&o, &id, false).await
}

/// Forget a node; its running tasks are stopped there and re-queued.
#[utoipa::path(delete, path = "/api/v1/nodes/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
async fn remove_node(
    State(o): State<Orchestrator>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let node = find_node(&o, &id).await?;
    if !o.remove_node(&node.id).await? {
        return Err(ApiError::NodeNotFound(id.chars().take(100).collect()));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Server-Sent Events: one `data:` JSON [`Event`] per job, task, frame or node change,
/// whichever orchestrator made it, and this orchestrator's render progress and preview
/// videos (not stored). A client that reconnects re-reads the state it shows: nothing is
/// replayed.
#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 200, description = "text/event-stream of Event", body = Event)))]
async fn events(
    State(o): State<Orchestrator>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let stored = tokio_stream::wrappers::BroadcastStream::new(o.subscribe());
    let local = tokio_stream::wrappers::BroadcastStream::new(o.subscribe_local());
    // Renders in progress first, so a new page shows them before their next sample.
    let now = futures_util::stream::iter(o.inner.media.progress_snapshot().into_iter().map(Ok));
    let stream = now
        .chain(futures_util::stream::select(stored, local))
        .filter_map(|event| async move {
            // A lagging client skips what it missed; the next event carries fresh state.
            let event = event.ok()?;
            let kind = event.kind();
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
    let counts = o.store().counts().await?;
    let body = o.metrics().render(&counts);
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
        Ok(()) => Json(serde_json::json!({
            "status": "ready",
            "orchestrator": o.id(),
            "dispatching": o.is_leader(),
        }))
        .into_response(),
        Err(e) => corral_http::ProblemResponse(
            corral_core::Problem::new(503, "Not ready").with_detail(e.to_string()),
        )
        .into_response(),
    }
}
