//! The web dashboard: its pages and assets (HTML, CSS and JavaScript modules embedded in
//! the binary, no outside request), and the media API it shows: frame thumbnails, full
//! frames and preview videos. The pages read the same API and event stream as every other
//! client; only the media is theirs.
//!
//! Frames are read where this orchestrator stored their upload, or where nodes reported
//! them when this orchestrator shares their file system and the path resolves inside
//! `--frames` ([`frames::FrameSource`], the one place that knows). Thumbnails are made once per frame and kept, like
//! preview videos, under the data folder's `media/`.

mod assets;
pub mod frames;
pub mod preview;

use crate::config::OrchestratorConfig;
use crate::error::ApiError;
use crate::orchestrator::Orchestrator;
use crate::store::JobRecord;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use corral_core::orchestrator_api::Event;
use corral_core::orchestrator_api::PreviewView;
use corral_core::TaskId;
use corral_core::{FrameRange, JobId};
use frames::{FrameSource, SharedFolder, Uploaded};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub use preview::run as run_previews;

/// Frames decoded into thumbnails at once: decoding a large EXR takes a core.
const THUMBNAIL_WORKERS: usize = 2;
/// How long a task's last progress is replayed to new subscribers (a long frame can go
/// minutes between sample reports; a render that ended is forgotten at once).
const PROGRESS_KEPT: Duration = Duration::from_secs(600);

/// Why a frame or a preview cannot be served; each becomes a problem answer in
/// [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The frame is not (yet) reported saved, or not in the job's range.
    #[error("frame {frame} of this job is not rendered")]
    NotRendered { frame: i64 },
    /// This orchestrator cannot read the frame where its node wrote it.
    #[error("{0}")]
    Unreadable(String),
    /// The file is there but is not an image this orchestrator can decode.
    #[error("cannot read the frame as an image: {0}")]
    Undecodable(String),
    #[error("no preview video: {0}")]
    NoPreview(String),
    /// A task's full Blender log cannot be had from its node.
    #[error("no log: {0}")]
    NoLog(String),
    #[error("media folder: {0}")]
    Io(String),
}

/// The dashboard's media: where frames are read from, the cache of thumbnails and videos,
/// and which previews are being made.
pub struct Media {
    source: Arc<dyn FrameSource>,
    /// `DATA/media`: one folder per job with its thumbnails, frame rate and preview.
    dir: PathBuf,
    ffmpeg: PathBuf,
    thumbnails: Semaphore,
    /// Jobs whose preview this process is making now.
    making: Mutex<HashSet<JobId>>,
    /// One FFmpeg at a time: previews are a courtesy, renders come first.
    encoder: Semaphore,
    /// The latest render progress of each task this process follows, with when it came:
    /// sent first to every new event subscriber, so a page opened mid-frame shows it.
    progress: Mutex<HashMap<TaskId, (Instant, Event)>>,
}

impl Media {
    pub fn new(config: &OrchestratorConfig) -> Media {
        Media {
            source: Arc::new(Uploaded::new(
                crate::storage::FrameStore::new(&config.data_dir, config.max_blob_bytes)
                    .root()
                    .to_path_buf(),
                SharedFolder::new(config.frames_dir.clone()),
            )),
            dir: config.data_dir.join("media"),
            ffmpeg: config.ffmpeg.clone(),
            thumbnails: Semaphore::new(THUMBNAIL_WORKERS),
            making: Mutex::new(HashSet::new()),
            encoder: Semaphore::new(1),
            progress: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a task's latest progress event (or forgets it, when `event` is `None`).
    pub(crate) fn note_progress(&self, task: TaskId, event: Option<Event>) {
        if let Ok(mut map) = self.progress.lock() {
            match event {
                Some(event) => {
                    map.insert(task, (Instant::now(), event));
                }
                None => {
                    map.remove(&task);
                }
            }
            // A follower that vanished without saying so leaves nothing behind for long.
            map.retain(|_, (at, _)| at.elapsed() < PROGRESS_KEPT);
        }
    }

    /// The progress events worth sending a new subscriber.
    pub fn progress_snapshot(&self) -> Vec<Event> {
        self.progress
            .lock()
            .map(|map| {
                map.values()
                    .filter(|(at, _)| at.elapsed() < PROGRESS_KEPT)
                    .map(|(_, e)| e.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn job_dir(&self, job: JobId) -> PathBuf {
        self.dir.join(job.to_string())
    }

    /// Remembers the frame rate a submission named, for the job's preview. Kept beside
    /// the preview (not in the database): only the orchestrator that made the video needs it.
    pub async fn remember_fps(&self, job: JobId, fps: f64) -> Result<(), MediaError> {
        let dir = self.job_dir(job);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| MediaError::Io(e.to_string()))?;
        tokio::fs::write(dir.join("fps"), fps.to_string())
            .await
            .map_err(|e| MediaError::Io(e.to_string()))
    }

    /// The job's frame rate: what its submission named, else 24.
    pub async fn fps(&self, job: JobId) -> f64 {
        tokio::fs::read_to_string(self.job_dir(job).join("fps"))
            .await
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| corral_core::orchestrator_api::FPS_RANGE.contains(f))
            .unwrap_or(preview::DEFAULT_FPS)
    }

    /// The local file of a frame the job's node reported saved.
    pub(crate) async fn frame_file(
        &self,
        o: &Orchestrator,
        job: JobId,
        frame: i64,
    ) -> Result<PathBuf, ApiError> {
        let not_rendered = || ApiError::Media(MediaError::NotRendered { frame });
        let range = FrameRange::new(frame, frame).map_err(|_| not_rendered())?;
        let record = o
            .store()
            .frames(job, range)
            .await?
            .into_iter()
            .next()
            .ok_or_else(not_rendered)?;
        Ok(self.source.local_path(job, &record).await?)
    }
}

/// The dashboard's pages, assets and media routes (the media routes under `/api/v1`).
pub fn router() -> Router<Orchestrator> {
    Router::new()
        .route("/", get(assets::page))
        .route("/jobs", get(assets::page))
        .route("/jobs/{id}", get(assets::page))
        .route("/nodes", get(assets::page))
        .route("/submit", get(assets::page))
        .route("/ui/{file}", get(assets::asset))
        .route(
            "/api/v1/jobs/{id}/frames/{frame}/thumbnail",
            get(frame_thumbnail),
        )
        .route("/api/v1/jobs/{id}/frames/{frame}/image", get(frame_image))
        .route("/api/v1/jobs/{id}/preview", get(job_preview))
        .route("/api/v1/jobs/{id}/preview.mp4", get(job_preview_video))
        .route("/api/v1/jobs/{id}/tasks/{index}/log", get(task_log))
}

async fn find_job(o: &Orchestrator, id: &str) -> Result<JobRecord, ApiError> {
    let not_found = || ApiError::JobNotFound(id.chars().take(64).collect());
    let job_id: JobId = id.parse().map_err(|_| not_found())?;
    o.store().job(job_id).await?.ok_or_else(not_found)
}

fn parse_frame(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().map_err(|_| {
        ApiError::InvalidField(corral_core::FieldError::new(
            "frame",
            "must be a whole frame number",
        ))
    })
}

/// A cached file's bytes as an answer, streamed.
async fn file_response(path: &std::path::Path, content_type: &str) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| MediaError::Unreadable(format!("cannot open the file: {e}")))?;
    let len = file.metadata().await.ok().map(|m| m.len());
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            // Frames never change under their names; thumbnails are made from them.
            (header::CACHE_CONTROL, "private, max-age=3600".to_string()),
        ],
        body,
    )
        .into_response();
    if let Some(len) = len {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    Ok(response)
}

/// A rendered frame's thumbnail (PNG, at most 320×240): made once from the frame, EXR
/// tone-mapped and 16-bit frames brought to 8 bits, then served from the cache.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/frames/{frame}/thumbnail",
    params(("id" = String, Path), ("frame" = i64, Path)),
    responses((status = 200, description = "PNG", content_type = "image/png"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json"), (status = 422, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn frame_thumbnail(
    State(o): State<Orchestrator>,
    Path((id, frame)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = find_job(&o, &id).await?;
    let frame = parse_frame(&frame)?;
    let media = &o.inner.media;
    let cached = media
        .job_dir(job.id())
        .join("thumbs")
        .join(format!("{frame}.png"));
    if !tokio::fs::try_exists(&cached).await.unwrap_or(false) {
        let source = media.frame_file(&o, job.id(), frame).await?;
        let _permit = media
            .thumbnails
            .acquire()
            .await
            .map_err(|e| MediaError::Io(e.to_string()))?;
        // Another request may have made it while this one waited.
        if !tokio::fs::try_exists(&cached).await.unwrap_or(false) {
            let target = cached.clone();
            tokio::task::spawn_blocking(move || frames::make_thumbnail(&source, &target))
                .await
                .map_err(|e| MediaError::Io(e.to_string()))??;
        }
    }
    file_response(&cached, "image/png").await
}

/// A rendered frame as its node wrote it, with its format's content type.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/frames/{frame}/image",
    params(("id" = String, Path), ("frame" = i64, Path)),
    responses((status = 200, description = "the frame file"), (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn frame_image(
    State(o): State<Orchestrator>,
    Path((id, frame)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = find_job(&o, &id).await?;
    let frame = parse_frame(&frame)?;
    let path = o.inner.media.frame_file(&o, job.id(), frame).await?;
    file_response(&path, frames::content_type(&path)).await
}

/// The job's preview video: none until the job completes, then being made, ready (at
/// `preview.mp4`) or unavailable with a note saying why.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/preview", params(("id" = String, Path)),
    responses((status = 200, body = PreviewView), (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn job_preview(
    State(o): State<Orchestrator>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<PreviewView>, ApiError> {
    let job = find_job(&o, &id).await?;
    Ok(Json(preview::status(&o, &job).await))
}

/// The job's preview video (H.264 MP4 at the scene's frame rate), once made.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/preview.mp4", params(("id" = String, Path)),
    responses((status = 200, description = "MP4", content_type = "video/mp4"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn job_preview_video(
    State(o): State<Orchestrator>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let job = find_job(&o, &id).await?;
    let view = preview::status(&o, &job).await;
    let path = preview::video_path(&o.inner.media, job.id());
    if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        let why = view
            .note
            .unwrap_or_else(|| format!("the preview is {}", preview::state_name(view.state)));
        return Err(MediaError::NoPreview(why).into());
    }
    file_response(&path, "video/mp4").await
}

/// A task's whole Blender log, fetched from the node that ran its latest attempt (nodes
/// keep their renders' logs; the orchestrator keeps only the last lines). The render is
/// found among the node's by the tag the dispatcher gave it.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/tasks/{index}/log",
    params(("id" = String, Path), ("index" = u64, Path, description = "the task's position in its job, from 0")),
    responses((status = 200, description = "the log", content_type = "text/plain"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn task_log(
    State(o): State<Orchestrator>,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = find_job(&o, &id).await?;
    let index: u64 = index.parse().map_err(|_| {
        ApiError::InvalidField(corral_core::FieldError::new(
            "index",
            "must be a task's position, from 0",
        ))
    })?;
    let no_log = |why: String| ApiError::Media(MediaError::NoLog(why));
    let task = o
        .store()
        .tasks(job.id(), index, 1)
        .await?
        .into_iter()
        .next()
        .filter(|t| u64::from(t.task.index) == index)
        .ok_or_else(|| no_log(format!("the job has no task {index}")))?;
    let node_id = task
        .task
        .last_node
        .clone()
        .ok_or_else(|| no_log("the task has not run yet".into()))?;
    let node = o.store().node(&node_id).await?.ok_or_else(|| {
        no_log(format!(
            "the node `{node_id}` that ran it is no longer known"
        ))
    })?;
    let renders = o
        .gateway()
        .jobs(&node.url)
        .await
        .map_err(|e| no_log(format!("the node `{node_id}` did not answer: {e}")))?;
    let render = renders
        .into_iter()
        .filter(|r| {
            r.tag
                .as_deref()
                .and_then(corral_core::ids::parse_render_tag)
                .is_some_and(|(t, _)| t == task.task.id)
        })
        .max_by_key(|r| r.submitted_at)
        .ok_or_else(|| no_log(format!("the node `{node_id}` no longer keeps this render")))?;
    let text = o
        .gateway()
        .log(&node.url, &render.id.to_string())
        .await
        .map_err(|e| no_log(format!("the node `{node_id}` did not send the log: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}
