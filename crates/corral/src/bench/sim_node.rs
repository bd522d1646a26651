//! A SIMULATED render node for `corral bench sim`: the node API (`POST /job`,
//! `GET /job/{id}?wait=&since=`, `DELETE /job/{id}`, `GET /jobs`, `GET /info`) over real
//! HTTP on its own loopback port, with no Blender: a frame takes `frame_ms / speed`
//! milliseconds of sleeping. It exists only to drive the real orchestrator at a scale no
//! machine could render; nothing user-facing is claimed from it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use corral_core::node_api::{FrameOutput, JobSpec, JobView, NodeInfo};
use corral_core::{Engine, JobId, JobState};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// When the simulated nodes ended each render, by tag (the orchestrator's task and
/// lease), for completion latency.
pub type Finishes = Arc<Mutex<HashMap<String, Instant>>>;

/// One simulated node; cheap to clone.
#[derive(Clone)]
pub struct SimNode {
    inner: Arc<Inner>,
}

struct Inner {
    frame_time: Duration,
    slots: usize,
    table: Mutex<Table>,
    changes: watch::Sender<u64>,
    killed: CancellationToken,
    finishes: Finishes,
    url: Mutex<String>,
    /// Answers a long-poll that asks for `batch` with a 400, as a node of a version before
    /// `batch` existed does (`bench sim --old-nodes`).
    refuses_batch: AtomicBool,
    /// Long-polls refused so.
    batch_refused: AtomicU64,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<JobId, Job>,
    order: Vec<JobId>,
    queue: VecDeque<JobId>,
    running: usize,
    version: u64,
    next_alias: u64,
}

struct Job {
    view: JobView,
    cancel: CancellationToken,
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<f64>,
    since: Option<u64>,
    batch: Option<f64>,
}

impl SimNode {
    /// A node rendering a frame in `frame_ms / speed` ms, with `slots` renders at once.
    pub fn new(frame_ms: f64, speed: f64, slots: usize, finishes: Finishes) -> SimNode {
        let (changes, _) = watch::channel(0);
        let per_frame = (frame_ms / speed.max(0.001)).max(0.0);
        SimNode {
            inner: Arc::new(Inner {
                frame_time: Duration::from_secs_f64(per_frame / 1000.0),
                slots: slots.max(1),
                table: Mutex::new(Table {
                    next_alias: 1,
                    ..Table::default()
                }),
                changes,
                killed: CancellationToken::new(),
                finishes,
                url: Mutex::new(String::new()),
                refuses_batch: AtomicBool::new(false),
                batch_refused: AtomicU64::new(0),
            }),
        }
    }

    /// From now on answers as a node of a version before `batch` on `GET /job/{id}`
    /// existed: a long-poll that asks for it gets a 400.
    pub fn refuse_batch(&self) {
        self.inner.refuses_batch.store(true, Ordering::Relaxed);
    }

    /// Long-polls refused for asking for `batch`.
    pub fn batch_refused(&self) -> u64 {
        self.inner.batch_refused.load(Ordering::Relaxed)
    }

    /// Listens on a loopback port and serves until killed; answers the node's URL.
    pub async fn serve(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        if let Ok(mut u) = self.inner.url.lock() {
            u.clone_from(&url);
        }
        let app = Router::new()
            .route("/job", post(submit))
            .route("/job/{id}", get(job).delete(cancel))
            .route("/job/{id}/truncate", post(truncate))
            .route("/jobs", get(jobs))
            .route("/info", get(info))
            .with_state(self.clone());
        let killed = self.inner.killed.clone();
        tokio::spawn(async move {
            // Connections are tasks of this set: killing the node drops them all, as a
            // dead machine's sockets would be.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    () = killed.cancelled() => {
                        connections.abort_all();
                        return;
                    }
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let service = TowerToHyperService::new(app.clone());
                        connections.spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(url)
    }

    /// Stops answering at once and drops every connection; running renders stop.
    pub fn kill(&self) {
        self.inner.killed.cancel();
        if let Ok(table) = self.inner.table.lock() {
            for job in table.jobs.values() {
                job.cancel.cancel();
            }
        }
    }

    pub fn running(&self) -> usize {
        self.inner.table.lock().map_or(0, |t| t.running)
    }

    /// Tags of the renders running now.
    pub fn running_tags(&self) -> Vec<String> {
        self.inner.table.lock().map_or_else(
            |_| Vec::new(),
            |t| {
                t.jobs
                    .values()
                    .filter(|j| j.view.state == JobState::Running)
                    .filter_map(|j| j.view.tag.clone())
                    .collect()
            },
        )
    }

    fn notify(&self) {
        self.inner.changes.send_modify(|v| *v += 1);
    }

    /// Starts queued renders while slots are free.
    fn pump(&self) {
        let mut started = Vec::new();
        if let Ok(mut table) = self.inner.table.lock() {
            while table.running < self.inner.slots {
                let Some(id) = table.queue.pop_front() else {
                    break;
                };
                table.version += 1;
                let version = table.version;
                if let Some(job) = table.jobs.get_mut(&id) {
                    job.view.state = JobState::Running;
                    job.view.status = JobState::Running.status_text().into();
                    job.view.started_at = Some(Utc::now());
                    job.view.version = version;
                    started.push((id, job.cancel.clone()));
                }
                table.running += 1;
            }
        }
        for (id, cancel) in started {
            let node = self.clone();
            tokio::spawn(async move { node.render(id, cancel).await });
        }
        self.notify();
    }

    async fn render(self, id: JobId, cancel: CancellationToken) {
        let frames: Vec<i64> = self
            .inner
            .table
            .lock()
            .ok()
            .and_then(|t| t.jobs.get(&id).map(|j| (j.view.from..=j.view.to).collect()))
            .unwrap_or_default();
        let mut outcome = JobState::Completed;
        // Each frame is due a frame time after the one before it was due, not after it
        // was saved: on this process's two shared cores, sleeping a frame time from each
        // save added the process's own lateness (about a tenth of the frame time at a
        // thousand nodes) to every frame, a slowness no real node has.
        let mut due = tokio::time::Instant::now();
        for frame in frames {
            // Truncated meanwhile: the render ends after its new last frame.
            let to = self
                .inner
                .table
                .lock()
                .ok()
                .and_then(|t| t.jobs.get(&id).map(|j| j.view.to));
            if to.is_some_and(|to| frame > to) {
                break;
            }
            due += self.inner.frame_time;
            tokio::select! {
                () = cancel.cancelled() => {
                    outcome = JobState::Cancelled;
                    break;
                }
                () = tokio::time::sleep_until(due) => {}
            }
            self.update(id, |view| {
                view.outputs.push(FrameOutput {
                    frame,
                    path: format!("/simulated/{id}/frame_{frame:06}.png"),
                });
                view.frames_done += 1;
                view.current_frame = Some(frame);
            });
        }
        let mut tag = None;
        if let Ok(mut table) = self.inner.table.lock() {
            table.running = table.running.saturating_sub(1);
            table.version += 1;
            let version = table.version;
            if let Some(job) = table.jobs.get_mut(&id) {
                job.view.state = outcome;
                job.view.status = outcome.status_text().into();
                job.view.finished_at = Some(Utc::now());
                job.view.version = version;
                tag.clone_from(&job.view.tag);
            }
        }
        if let (Some(tag), JobState::Completed) = (tag, outcome) {
            if let Ok(mut f) = self.inner.finishes.lock() {
                f.insert(tag, Instant::now());
            }
        }
        self.pump();
    }

    fn update(&self, id: JobId, change: impl FnOnce(&mut JobView)) {
        if let Ok(mut table) = self.inner.table.lock() {
            table.version += 1;
            let version = table.version;
            if let Some(job) = table.jobs.get_mut(&id) {
                change(&mut job.view);
                job.view.version = version;
            }
        }
        self.notify();
    }

    fn view(&self, key: &str) -> Option<JobView> {
        let table = self.inner.table.lock().ok()?;
        let id: JobId = key.parse().ok()?;
        table.jobs.get(&id).map(|j| j.view.clone())
    }
}

async fn submit(State(node): State<SimNode>, body: axum::body::Bytes) -> Response {
    let spec = match JobSpec::from_body(&body, 1_000_000) {
        Ok(spec) => spec,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let view = {
        let Ok(mut table) = node.inner.table.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        table.version += 1;
        let alias = table.next_alias;
        table.next_alias += 1;
        let id = JobId::new();
        let view = JobView {
            id,
            pid: alias,
            state: JobState::Queued,
            status: JobState::Queued.status_text().into(),
            from: spec.range.from(),
            to: spec.range.to(),
            scene: "simulated".into(),
            engine: Engine::default(),
            format: None,
            threads: 1,
            frames_total: spec.range.len(),
            frames_done: 0,
            current_frame: None,
            current_sample: None,
            outputs: Vec::new(),
            exit_code: None,
            failure: None,
            log_tail: Vec::new(),
            log_error: None,
            submitted_at: Utc::now(),
            started_at: None,
            finished_at: None,
            blender_pid: None,
            version: table.version,
            tag: spec.tag,
        };
        table.order.push(id);
        table.queue.push_back(id);
        table.jobs.insert(
            id,
            Job {
                view: view.clone(),
                cancel: CancellationToken::new(),
            },
        );
        view
    };
    node.pump();
    (StatusCode::ACCEPTED, Json(view)).into_response()
}

async fn job(
    State(node): State<SimNode>,
    Path(key): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Response {
    if node.inner.refuses_batch.load(Ordering::Relaxed) && q.batch.is_some() {
        node.inner.batch_refused.fetch_add(1, Ordering::Relaxed);
        let problem = serde_json::json!({
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": "unknown query parameter `batch`",
        });
        return (StatusCode::BAD_REQUEST, Json(problem)).into_response();
    }
    let mut changes = node.inner.changes.subscribe();
    let now = tokio::time::Instant::now();
    let deadline = now + Duration::from_secs_f64(q.wait.unwrap_or(0.0).clamp(0.0, 60.0));
    // Progress short of the end is answered no sooner than `batch` after the request, as
    // a real node does.
    let batched =
        (now + Duration::from_secs_f64(q.batch.unwrap_or(0.0).clamp(0.0, 60.0))).min(deadline);
    loop {
        let Some(view) = node.view(&key) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let moved = q.since.is_none_or(|since| view.version > since);
        let now = tokio::time::Instant::now();
        if (moved && now >= batched) || view.state.is_terminal() || now >= deadline {
            let status = if view.state.is_terminal() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            return (status, Json(view)).into_response();
        }
        let until = if moved { batched } else { deadline };
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

async fn cancel(State(node): State<SimNode>, Path(key): Path<String>) -> Response {
    let cancelled = {
        let Ok(mut table) = node.inner.table.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let Ok(id) = key.parse::<JobId>() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        table.queue.retain(|q| *q != id);
        table.version += 1;
        let version = table.version;
        match table.jobs.get_mut(&id) {
            Some(job) => {
                job.cancel.cancel();
                if job.view.state == JobState::Queued {
                    job.view.state = JobState::Cancelled;
                    job.view.status = JobState::Cancelled.status_text().into();
                    job.view.finished_at = Some(Utc::now());
                    job.view.version = version;
                }
                true
            }
            None => false,
        }
    };
    node.notify();
    if !cancelled {
        return StatusCode::NOT_FOUND.into_response();
    }
    match node.view(&key) {
        Some(view) => Json(view).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct TruncateBody {
    to: i64,
}

/// Ends a render after frame `to`, or after the frame it renders now if that is later.
async fn truncate(
    State(node): State<SimNode>,
    Path(key): Path<String>,
    Json(body): Json<TruncateBody>,
) -> Response {
    let answer = {
        let Ok(mut table) = node.inner.table.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let Ok(id) = key.parse::<JobId>() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        table.version += 1;
        let version = table.version;
        match table.jobs.get_mut(&id) {
            None => return StatusCode::NOT_FOUND.into_response(),
            Some(job) if job.view.state.is_terminal() => {
                return StatusCode::CONFLICT.into_response()
            }
            Some(job) => {
                let rendering = job.view.current_frame.map_or(job.view.from, |f| f + 1);
                let to = body.to.max(rendering).min(job.view.to);
                job.view.to = to;
                job.view.frames_total = (to - job.view.from + 1).max(0) as u64;
                job.view.version = version;
                serde_json::json!({ "to": to })
            }
        }
    };
    node.notify();
    Json(answer).into_response()
}

async fn jobs(State(node): State<SimNode>) -> Response {
    let Ok(table) = node.inner.table.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let list: Vec<JobView> = table
        .order
        .iter()
        .filter_map(|id| table.jobs.get(id))
        .map(|j| {
            // The orchestrator reads tags and states here, not frames.
            let mut v = j.view.clone();
            v.outputs.clear();
            v
        })
        .collect();
    Json(list).into_response()
}

async fn info(State(node): State<SimNode>) -> Response {
    let (running, queued) = node
        .inner
        .table
        .lock()
        .map_or((0, 0), |t| (t.running, t.queue.len()));
    Json(NodeInfo {
        hostname: "simulated".into(),
        cores: 1,
        memory_bytes: None,
        blender_version: "SIMULATED".into(),
        corral_version: env!("CARGO_PKG_VERSION").into(),
        slots: node.inner.slots,
        running,
        queued,
        engines: Vec::new(),
        formats: Vec::new(),
        max_frames_per_job: 1_000_000,
        render_mode: "simulated".into(),
        workers: Vec::new(),
    })
    .into_response()
}
