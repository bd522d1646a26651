//! The node's job table: every job it was given, the FIFO queue of those waiting for a
//! slot, and the change counter that long-polling clients wait on.
//!
//! Architecture invariant: at most `slots` jobs are `running` at once; a job leaves the
//! queue only in [`Node::pump`], which checks that under the same lock that counts them.

use crate::backend::{RenderBackend, RenderMode};
use crate::cache::BlobCache;
use crate::cold::ColdBackend;
use crate::config::{NodeConfig, ShutdownPolicy};
use crate::error::ApiError;
use crate::runner;
use crate::warm::{WarmBackend, WarmSettings};
use chrono::{DateTime, Utc};
use corral_core::node_api::{Delivery, FrameOutput, JobSpec, JobView, NodeInfo, SampleProgress};
use corral_core::{Engine, FieldError, FrameRange, ImageFormat, JobId, JobState};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Lines of Blender output kept in memory per job (the whole log is on disk).
pub const LOG_TAIL_LINES: usize = 40;

/// Longest output pattern path accepted: Blender's limit is 1024 bytes, and the partial
/// folder (53 bytes), frame digits and extension are added to it.
const MAX_OUTPUT_PATH_BYTES: usize = 900;

/// A handle to the node's state; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Shared>,
}

struct Shared {
    config: NodeConfig,
    /// Runs tasks through Blender: a process per task, or a worker per slot.
    backend: Arc<dyn RenderBackend>,
    /// Uploaded scenes' files, fetched from the orchestrator (when the node has one).
    cache: Option<Arc<BlobCache>>,
    hostname: String,
    state: Mutex<Table>,
    /// Bumped after every change to any job; long-polls wait for it to move.
    changes: watch::Sender<u64>,
    /// Cancelled to kill every render (shutdown in cancel mode, or a second signal); every
    /// job's token is a child of it.
    cancel_all: CancellationToken,
    /// Cancelled once no render is left at shutdown; wakes the long-polls.
    closed: CancellationToken,
    runners: TaskTracker,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<JobId, Job>,
    /// Submission order, for `GET /jobs` and for forgetting the oldest ended jobs.
    order: VecDeque<JobId>,
    /// Tutorial-compatible numeric aliases (`pid`).
    aliases: HashMap<u64, JobId>,
    next_alias: u64,
    queue: VecDeque<JobId>,
    running: usize,
    accepting: bool,
    version: u64,
}

impl Table {
    /// Drops the ended jobs that ended longest ago beyond `keep`, so a long-lived node's
    /// memory and log folder stay bounded. Queued and running jobs are never dropped, nor
    /// is `except` (the job that just ended: its client has yet to see the end).
    fn forget_old_jobs(&mut self, keep: usize, except: JobId) -> Vec<JobId> {
        let mut ended: Vec<(DateTime<Utc>, JobId)> = self
            .jobs
            .values()
            .filter(|j| j.state.is_terminal() && j.id != except)
            .map(|j| (j.finished_at.unwrap_or(j.submitted_at), j.id))
            .collect();
        // `keep` counts `except` too when it has ended.
        let keep = keep.saturating_sub(1);
        if ended.len() <= keep {
            return Vec::new();
        }
        ended.sort();
        let forgotten: Vec<JobId> = ended[..ended.len() - keep]
            .iter()
            .map(|(_, id)| *id)
            .collect();
        for id in &forgotten {
            if let Some(job) = self.jobs.remove(id) {
                self.aliases.remove(&job.alias);
            }
        }
        self.order.retain(|id| self.jobs.contains_key(id));
        forgotten
    }
}

/// One job and everything observed about it.
pub(crate) struct Job {
    pub id: JobId,
    pub alias: u64,
    pub spec: JobSpec,
    /// Canonical path of the scene Blender renders; for an uploaded scene (`manifest`),
    /// empty until its workspace is laid out.
    pub scene: PathBuf,
    pub state: JobState,
    pub outputs: BTreeMap<i64, String>,
    pub current_frame: Option<i64>,
    pub current_sample: Option<SampleProgress>,
    pub exit_code: Option<i32>,
    pub failure: Option<String>,
    pub log_tail: VecDeque<String>,
    pub log_error: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub blender_pid: Option<u32>,
    pub version: u64,
    pub cancel: CancellationToken,
    /// The last frame whose file Blender reported written.
    pub last_saved: Option<i64>,
    /// While a cold Blender runs: the last frame of the range it was started with, and
    /// its render's stop token. A Blender started for more than the (truncated) range is
    /// stopped with it once the range's last frame is saved.
    pub stop_at_end: Option<(i64, CancellationToken)>,
    /// The render was stopped after the last frame of its truncated range: its end is
    /// not a cancellation.
    pub stopped_at_end: bool,
}

impl Job {
    pub fn threads(&self, default: u32) -> u32 {
        self.spec.threads.unwrap_or(default)
    }

    /// Stops a cold render that saved the last frame of its truncated range (it would go
    /// on to the end of the range it was started with).
    pub(crate) fn stop_if_past_end(&mut self) {
        let end = self.spec.range.to();
        if let (Some((started_to, stop)), Some(saved)) = (&self.stop_at_end, self.last_saved) {
            if end < *started_to && saved >= end && !self.stopped_at_end {
                self.stopped_at_end = true;
                stop.cancel();
            }
        }
    }

    fn view(&self, default_threads: u32) -> JobView {
        JobView {
            id: self.id,
            pid: self.alias,
            state: self.state,
            status: self.state.status_text().to_string(),
            from: self.spec.range.from(),
            to: self.spec.range.to(),
            scene: match &self.spec.manifest {
                Some(manifest) if self.scene.as_os_str().is_empty() => {
                    format!("manifest:{manifest}")
                }
                _ => self.scene.display().to_string(),
            },
            engine: self.spec.engine,
            format: self.spec.format,
            threads: self.threads(default_threads),
            frames_total: self.spec.range.len(),
            frames_done: self.outputs.len() as u64,
            current_frame: self.current_frame,
            current_sample: self.current_sample,
            outputs: self
                .outputs
                .iter()
                .map(|(&frame, path)| FrameOutput {
                    frame,
                    path: path.clone(),
                })
                .collect(),
            exit_code: self.exit_code,
            failure: self.failure.clone(),
            log_tail: self.log_tail.iter().cloned().collect(),
            log_error: self.log_error.clone(),
            submitted_at: self.submitted_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            blender_pid: self.blender_pid,
            version: self.version,
            tag: self.spec.tag.clone(),
        }
    }
}

impl Node {
    /// A node with `config`; in warm mode its workers start now. Must be called within a
    /// Tokio runtime.
    pub fn new(config: NodeConfig) -> Self {
        let (changes, _) = watch::channel(0);
        let backend: Arc<dyn RenderBackend> = match (config.render_mode, &config.warm_driver) {
            (RenderMode::Warm, Some(driver)) => Arc::new(WarmBackend::start(WarmSettings {
                blender: config.blender.clone(),
                driver: driver.clone(),
                slots: config.slots,
                recycle_after_frames: config.recycle_after_frames,
                recycle_above_bytes: (config.recycle_above_mb > 0)
                    .then(|| config.recycle_above_mb.saturating_mul(1_000_000)),
            })),
            (RenderMode::Warm, None) => {
                tracing::warn!("no warm driver script was written; rendering cold");
                Arc::new(ColdBackend::new(config.blender.clone()))
            }
            (RenderMode::Cold, _) => Arc::new(ColdBackend::new(config.blender.clone())),
        };
        sweep_render_folders(&config);
        let cache = config.orchestrator.clone().and_then(|client| {
            BlobCache::open(&config.cache_dir(), config.cache_size, client)
                .map_err(|e| {
                    tracing::error!(error = %e, dir = %config.cache_dir().display(), "cannot open the blob cache; uploaded scenes will be refused");
                })
                .ok()
        });
        Node {
            inner: Arc::new(Shared {
                config,
                backend,
                cache,
                hostname: crate::host::hostname(),
                state: Mutex::new(Table {
                    accepting: true,
                    next_alias: 1,
                    ..Table::default()
                }),
                changes,
                cancel_all: CancellationToken::new(),
                closed: CancellationToken::new(),
                runners: TaskTracker::new(),
            }),
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub(crate) fn backend(&self) -> &dyn RenderBackend {
        self.inner.backend.as_ref()
    }

    pub(crate) fn cache(&self) -> Option<&Arc<BlobCache>> {
        self.inner.cache.as_ref()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table as it was between two whole
        // updates (each update is a few field assignments), so keep serving it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Accepts a validated job: resolves its scene, queues it, and starts it if a slot is
    /// free.
    pub fn submit(&self, spec: JobSpec) -> Result<JobView, ApiError> {
        let scene = match &spec.manifest {
            // Fetched and laid out when the job starts.
            Some(_) if self.inner.cache.is_some() => PathBuf::new(),
            Some(_) => {
                return Err(FieldError::new(
                    "manifest",
                    "this node cannot fetch uploaded scenes: it has no orchestrator (start it with --orchestrator URL)",
                )
                .into())
            }
            None => self.resolve_scene(spec.scene.as_deref())?,
        };
        match spec.deliver {
            Delivery::Local => self.check_output(&spec.output)?,
            Delivery::Upload if self.inner.config.orchestrator.is_none() => {
                return Err(FieldError::new(
                    "deliver",
                    "this node has no orchestrator to upload frames to (start it with --orchestrator URL)",
                )
                .into())
            }
            Delivery::Upload if spec.tag.is_none() => {
                return Err(FieldError::new(
                    "tag",
                    "required with `deliver: upload`: frames are uploaded under the render's tag (X-Corral-Render)",
                )
                .into())
            }
            // Frames go to the node's outbox, then to the orchestrator: nothing is
            // written under --output.
            Delivery::Upload => {}
        }
        let view = {
            let mut table = self.table();
            if !table.accepting {
                return Err(ApiError::ShuttingDown);
            }
            if table.queue.len() >= self.inner.config.max_queued {
                return Err(ApiError::QueueFull(table.queue.len()));
            }
            table.version += 1;
            let alias = table.next_alias;
            table.next_alias += 1;
            let job = Job {
                id: JobId::new(),
                alias,
                spec,
                scene,
                state: JobState::Queued,
                outputs: BTreeMap::new(),
                current_frame: None,
                current_sample: None,
                exit_code: None,
                failure: None,
                log_tail: VecDeque::new(),
                log_error: None,
                submitted_at: Utc::now(),
                started_at: None,
                finished_at: None,
                blender_pid: None,
                version: table.version,
                cancel: self.inner.cancel_all.child_token(),
                last_saved: None,
                stop_at_end: None,
                stopped_at_end: false,
            };
            let id = job.id;
            let view = job.view(self.inner.config.threads);
            table.aliases.insert(alias, id);
            table.order.push_back(id);
            table.queue.push_back(id);
            table.jobs.insert(id, job);
            view
        };
        tracing::info!(job = %view.id, pid = view.pid, frames = %format!("{}-{}", view.from, view.to), "job accepted");
        self.notify();
        self.pump();
        Ok(view)
    }

    /// Finds the scene file for a job: the node's default, or a path under `--scenes`
    /// that must exist and must not lead out of it (symbolic links included).
    fn resolve_scene(&self, requested: Option<&str>) -> Result<PathBuf, ApiError> {
        let config = &self.inner.config;
        let invalid = |msg: String| ApiError::InvalidField(FieldError::new("scene", msg));
        let path = match (requested, &config.scenes_root, &config.default_scene) {
            (Some(rel), Some(root), _) => {
                let joined = root.join(rel);
                let canonical = joined
                    .canonicalize()
                    .map_err(|e| invalid(format!("scene `{rel}` cannot be opened: {e}")))?;
                if !canonical.starts_with(root) {
                    return Err(invalid(format!(
                        "scene `{rel}` leads outside the node's scenes folder"
                    )));
                }
                canonical
            }
            (Some(_), None, _) => {
                return Err(invalid(
                    "this node takes no per-job scenes (start it with --scenes DIR)".into(),
                ))
            }
            (None, _, Some(default)) => default.canonicalize().map_err(|e| {
                invalid(format!(
                    "the node's default scene `{}` cannot be opened: {e}",
                    default.display()
                ))
            })?,
            (None, _, None) => {
                return Err(invalid(
                    "required: this node has no default scene (--blend)".into(),
                ))
            }
        };
        if !path.is_file() {
            return Err(invalid(format!("`{}` is not a file", path.display())));
        }
        crate::blend::check_blend_file(&path)
            .map_err(|why| invalid(format!("`{}` {why}", path.display())))?;
        Ok(path)
    }

    /// Checks that a job's output pattern lands inside `--output` (symbolic links followed)
    /// and that the whole path
    /// Blender writes (with the partial folder, frame digits and extension) stays within
    /// Blender's 1024-byte path limit, which it would otherwise cut silently.
    fn check_output(&self, output: &str) -> Result<(), ApiError> {
        let output_dir = &self.inner.config.output_dir;
        let full = output_dir.join(output);
        if !full.starts_with(output_dir) || full.parent().is_none_or(|p| !p.starts_with(output_dir))
        {
            return Err(
                FieldError::new("output", "must stay inside the node's output folder").into(),
            );
        }
        // Symbolic links already in the output folder must not lead the frames out of it.
        if let Some(dir) = full.parent() {
            crate::confine::check_output_dir(output_dir, dir)
                .map_err(|why| FieldError::new("output", why))?;
        }
        if full.as_os_str().len() > MAX_OUTPUT_PATH_BYTES {
            return Err(FieldError::new(
                "output",
                format!(
                    "the full output path would be {} bytes; at most {MAX_OUTPUT_PATH_BYTES}",
                    full.as_os_str().len()
                ),
            )
            .into());
        }
        Ok(())
    }

    /// Starts queued jobs while slots are free.
    fn pump(&self) {
        let mut table = self.table();
        while table.running < self.inner.config.slots {
            let Some(id) = table.queue.pop_front() else {
                break;
            };
            table.version += 1;
            let version = table.version;
            let Some(job) = table.jobs.get_mut(&id) else {
                continue;
            };
            job.state = JobState::Running;
            job.started_at = Some(Utc::now());
            job.version = version;
            table.running += 1;
            let node = self.clone();
            self.inner
                .runners
                .spawn(async move { runner::run_job(node, id).await });
        }
        drop(table);
        self.notify();
    }

    fn notify(&self) {
        self.inner.changes.send_modify(|v| *v += 1);
    }

    /// Applies `change` to job `id` and wakes long-polls if it returns true.
    pub(crate) fn update(&self, id: JobId, change: impl FnOnce(&mut Job) -> bool) {
        let changed = {
            let mut table = self.table();
            table.version += 1;
            let version = table.version;
            match table.jobs.get_mut(&id) {
                Some(job) => {
                    let changed = change(job);
                    if changed {
                        job.version = version;
                    }
                    changed
                }
                None => false,
            }
        };
        if changed {
            self.notify();
        }
    }

    /// Reads job `id` under the lock.
    pub(crate) fn with_job<T>(&self, id: JobId, read: impl FnOnce(&Job) -> T) -> Option<T> {
        self.table().jobs.get(&id).map(read)
    }

    /// Records the end of a running job and frees its slot.
    pub(crate) fn finish(&self, id: JobId, end: impl FnOnce(&mut Job)) {
        {
            let mut table = self.table();
            table.version += 1;
            let version = table.version;
            table.running = table.running.saturating_sub(1);
            if let Some(job) = table.jobs.get_mut(&id) {
                end(job);
                debug_assert!(job.state.is_terminal());
                job.finished_at = Some(Utc::now());
                job.current_sample = None;
                job.blender_pid = None;
                job.version = version;
            }
            self.forget_old_jobs(&mut table, id);
        }
        self.notify();
        self.pump();
    }

    /// Forgets the ended jobs beyond `--keep-jobs` (but `just_ended`) and their logs.
    fn forget_old_jobs(&self, table: &mut Table, just_ended: JobId) {
        for old in table.forget_old_jobs(self.inner.config.keep_jobs, just_ended) {
            let _ = std::fs::remove_file(crate::runner::log_path(self, old));
        }
    }

    /// Looks a job up by its UUID or by its tutorial-compatible numeric alias.
    pub fn find(&self, key: &str) -> Result<JobId, ApiError> {
        let table = self.table();
        let id = match key.parse::<u64>() {
            Ok(alias) => table.aliases.get(&alias).copied(),
            Err(_) => key.parse::<JobId>().ok(),
        };
        id.filter(|id| table.jobs.contains_key(id))
            .ok_or_else(|| ApiError::JobNotFound(key.chars().take(64).collect()))
    }

    pub fn view(&self, id: JobId) -> Option<JobView> {
        let threads = self.inner.config.threads;
        self.with_job(id, |job| job.view(threads))
    }

    pub fn list(&self) -> Vec<JobView> {
        let table = self.table();
        let threads = self.inner.config.threads;
        table
            .order
            .iter()
            .filter_map(|id| table.jobs.get(id))
            .map(|job| job.view(threads))
            .collect()
    }

    /// Waits until job `id`'s version passes `since`, `timeout` runs out, or the node shuts
    /// down; then returns its view. Progress short of the end is answered no sooner than
    /// `batch` after the call (the end at once), so a watcher of a render saving many frames
    /// a second gets them a few at a time instead of one answer each.
    pub async fn wait_for_change(
        &self,
        id: JobId,
        since: u64,
        timeout: Duration,
        batch: Duration,
    ) -> Option<JobView> {
        let mut changes = self.inner.changes.subscribe();
        let now = tokio::time::Instant::now();
        let deadline = now + timeout;
        let batched = (now + batch).min(deadline);
        loop {
            // Every change to any job wakes every waiter: look at the version alone
            // before building (cloning) a whole view.
            let (version, ended) = self.with_job(id, |j| (j.version, j.state.is_terminal()))?;
            let moved = version > since;
            if ended || (moved && tokio::time::Instant::now() >= batched) {
                return self.view(id);
            }
            let until = if moved { batched } else { deadline };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return self.view(id) },
                () = tokio::time::sleep_until(until) => if !moved { return self.view(id) },
                () = self.inner.closed.cancelled() => return self.view(id),
            }
        }
    }

    /// Cancels a job: a queued one is dropped from the queue, a running one has its
    /// Blender process group killed (the runner records the end). Ended jobs are left as
    /// they are.
    pub fn cancel(&self, id: JobId) {
        let mut dequeued = false;
        {
            let mut table = self.table();
            if let Some(pos) = table.queue.iter().position(|q| *q == id) {
                table.queue.remove(pos);
                dequeued = true;
            }
            if let Some(job) = table.jobs.get(&id) {
                job.cancel.cancel();
            }
        }
        if dequeued {
            self.update(id, |job| {
                job.state = JobState::Cancelled;
                job.failure = Some("cancelled before it started".into());
                job.finished_at = Some(Utc::now());
                true
            });
            self.forget_old_jobs(&mut self.table(), id);
            tracing::info!(job = %id, "queued job cancelled");
        }
    }

    /// Makes job `id` end after frame `to`, or after the frame it is rendering now when
    /// that is later (never before its first frame); answers its last frame from now on.
    /// A queued job simply starts with the shorter range. A running one renders on to
    /// its new end and completes: a warm worker is told to stop before the next frame, a
    /// cold Blender is stopped once it saved the new last frame. `409` when the job has
    /// ended or has saved every frame of its range.
    pub fn truncate(&self, id: JobId, to: i64) -> Result<i64, ApiError> {
        let end = {
            let mut table = self.table();
            table.version += 1;
            let version = table.version;
            let job = table
                .jobs
                .get_mut(&id)
                .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
            if job.state.is_terminal() {
                return Err(ApiError::Conflict(format!(
                    "the render has ended ({}); there is nothing left to truncate",
                    job.state
                )));
            }
            let range = job.spec.range;
            if job.last_saved >= Some(range.to()) {
                return Err(ApiError::Conflict(format!(
                    "every frame of the render ({range}) is rendered already"
                )));
            }
            // The frame being rendered now: the last one Blender started (or saved, when
            // its output names no frame); the first of the range before it starts.
            let now = job
                .current_frame
                .max(job.last_saved)
                .unwrap_or(range.from());
            let end = to.max(now).clamp(range.from(), range.to());
            if end < range.to() {
                job.spec.range = FrameRange::new(range.from(), end).map_err(|e| {
                    ApiError::Internal(format!("cannot truncate {range} to {end}: {e}"))
                })?;
                job.version = version;
                job.stop_if_past_end();
            }
            end
        };
        tracing::info!(job = %id, to, end, "render truncated");
        self.notify();
        Ok(end)
    }

    pub fn info(&self) -> NodeInfo {
        let config = &self.inner.config;
        let table = self.table();
        NodeInfo {
            hostname: self.inner.hostname.clone(),
            cores: crate::host::cores(),
            memory_bytes: crate::host::memory_bytes(),
            blender_version: config.blender_version.clone(),
            corral_version: env!("CARGO_PKG_VERSION").to_string(),
            slots: config.slots,
            running: table.running,
            queued: table.queue.len(),
            engines: Engine::ALL.to_vec(),
            formats: ImageFormat::ALL.to_vec(),
            max_frames_per_job: config.max_frames,
            render_mode: self.inner.backend.mode().name().to_string(),
            workers: self.inner.backend.workers(),
        }
    }

    /// Kills every running render now (a second SIGTERM/SIGINT during a `finish`
    /// shutdown).
    pub fn cancel_running(&self) {
        self.inner.cancel_all.cancel();
    }

    pub fn is_accepting(&self) -> bool {
        self.table().accepting
    }

    /// Stops taking jobs, cancels the queue, then cancels or waits out the running jobs
    /// (per the shutdown policy) and returns when no Blender process is left.
    pub async fn shut_down(&self) {
        let queued: Vec<JobId> = {
            let mut table = self.table();
            table.accepting = false;
            table.queue.iter().copied().collect()
        };
        tracing::info!(
            queued = queued.len(),
            policy = ?self.inner.config.on_shutdown,
            "shutting down"
        );
        for id in queued {
            self.cancel(id);
        }
        if self.inner.config.on_shutdown == ShutdownPolicy::Cancel {
            self.inner.cancel_all.cancel();
        }
        self.inner.runners.close();
        self.inner.runners.wait().await;
        // No task runs any more: end the Blender processes kept between tasks.
        self.inner.backend.shut_down().await;
        // Only now, with every end recorded, wake long-polls so they answer the final
        // state and the HTTP server's graceful shutdown is not held up by them.
        self.inner.closed.cancel();
        tracing::info!("all renders ended");
    }
}

/// Removes the workspaces and undelivered frames an earlier run left (a render that was
/// running when the node was killed): nothing refers to them any more.
fn sweep_render_folders(config: &NodeConfig) {
    for dir in [config.workspaces_dir(), config.outbox_dir()] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed what an earlier run left"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot clear"),
        }
    }
}
