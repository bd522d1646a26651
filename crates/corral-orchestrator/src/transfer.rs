//! The remote-farm protocol's HTTP side (`docs/remote-farm-protocol.md`): blobs
//! (`/api/v1/blobs/...`: which are missing, resumable uploads, downloads), manifests
//! (`/api/v1/manifests`), and frames nodes upload and artists download
//! (`/api/v1/jobs/{id}/frames/{frame}`). Every header and path segment is checked here,
//! before any byte is stored; the files themselves are [`crate::storage`]'s.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::orchestrator::Orchestrator;
use crate::storage::blobs::PutOutcome;
use crate::store::TokenKind;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_core::ids::parse_render_tag;
use corral_core::lifecycle::TaskState;
use corral_core::manifest::{Manifest, ManifestCreated, MissingBlobs, MissingQuery};
use corral_core::render::frame_extension;
use corral_core::{BlobHash, FieldError, JobId, LeaseId, TaskId};
use corral_http::{LargeJsonBody, PathId};

/// Largest manifest accepted or served (the most a node reads).
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// Largest `POST /api/v1/blobs/missing` body: 10000 quoted hashes and their commas.
const MAX_MISSING_BODY: usize = 1 << 20;

pub const UPLOAD_OFFSET: &str = "upload-offset";
pub const UPLOAD_LENGTH: &str = "upload-length";
pub const CONTENT_SHA256: &str = "x-content-sha256";
pub const CORRAL_RENDER: &str = "x-corral-render";

/// The protocol's routes (merged into [`crate::router`]).
pub fn router() -> Router<Orchestrator> {
    Router::new()
        .route("/api/v1/blobs/missing", post(missing_blobs))
        .route(
            "/api/v1/blobs/{hash}",
            get(get_blob).head(head_blob).put(put_blob),
        )
        .route("/api/v1/manifests", post(create_manifest))
        .route("/api/v1/manifests/{id}", get(get_manifest))
        .route(
            "/api/v1/jobs/{id}/frames/{frame}",
            get(get_frame).put(put_frame),
        )
}

/// A path segment as a blob hash; a bad one is a 400 naming `field`.
fn hash_in_path(field: &str, raw: &str) -> Result<BlobHash, ApiError> {
    let shown: String = raw.chars().take(80).collect();
    Ok(BlobHash::parse(field, &shown)?)
}

/// A header holding a whole number of bytes; `None` when absent.
fn byte_count(headers: &HeaderMap, name: &str, shown: &str) -> Result<Option<u64>, FieldError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| FieldError::new(shown, "must be a whole number of bytes"))
}

/// The hashes among those asked about that the farm lacks, in the order asked.
#[utoipa::path(post, path = "/api/v1/blobs/missing", request_body = MissingQuery,
    responses((status = 200, body = MissingBlobs),
              (status = 400, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn missing_blobs(
    State(o): State<Orchestrator>,
    LargeJsonBody(body): LargeJsonBody<MAX_MISSING_BODY>,
) -> Result<Json<MissingBlobs>, ApiError> {
    let query = MissingQuery::from_body(&body)?;
    // Those present are used now: a client that was told "not missing" goes on to name
    // them in a manifest, and the collector must not take them in between.
    let blobs = &o.storage().blobs;
    let missing = blobs.touch(&blobs.in_use().await, &query.hashes).await;
    Ok(Json(MissingBlobs { missing }))
}

/// `200` with `Content-Length` when the blob is complete; `404` with `Upload-Offset` (the
/// bytes of an unfinished upload held, 0 when none) otherwise.
#[utoipa::path(head, path = "/api/v1/blobs/{hash}", params(("hash" = String, Path)),
    responses((status = 200), (status = 404), (status = 400)))]
pub async fn head_blob(
    State(o): State<Orchestrator>,
    PathId(raw): PathId,
) -> Result<Response, ApiError> {
    let hash = hash_in_path("hash", &raw)?;
    let blobs = &o.storage().blobs;
    // Found here counts as a use, as for `missing`.
    blobs
        .touch(&blobs.in_use().await, std::slice::from_ref(&hash))
        .await;
    match blobs.size(&hash).await {
        Some(size) => Ok((
            StatusCode::OK,
            [
                (header::CONTENT_LENGTH, HeaderValue::from(size)),
                (
                    header::HeaderName::from_static(CONTENT_SHA256),
                    header_value(hash.as_str()),
                ),
            ],
        )
            .into_response()),
        None => {
            let held = blobs.held(&hash).await;
            Err(ApiError::BlobNotFound {
                hash,
                held: Some(held),
            })
        }
    }
}

/// A complete blob's bytes, streamed, with `Content-Length` and `X-Content-SHA256`.
#[utoipa::path(get, path = "/api/v1/blobs/{hash}", params(("hash" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream"),
              (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn get_blob(
    State(o): State<Orchestrator>,
    PathId(raw): PathId,
) -> Result<Response, ApiError> {
    let hash = hash_in_path("hash", &raw)?;
    let Some((file, size)) = o.storage().blobs.open(&hash).await else {
        return Err(ApiError::BlobNotFound { hash, held: None });
    };
    Ok(stream_file(file, size, "application/octet-stream", &hash))
}

/// A file's bytes as an answer, streamed, with its length and hash.
pub(crate) fn stream_file(
    file: tokio::fs::File,
    size: u64,
    content_type: &str,
    hash: &BlobHash,
) -> Response {
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (
        [
            (header::CONTENT_TYPE, header_value(content_type)),
            (header::CONTENT_LENGTH, HeaderValue::from(size)),
            (
                header::HeaderName::from_static(CONTENT_SHA256),
                header_value(hash.as_str()),
            ),
        ],
        body,
    )
        .into_response()
}

/// A header value from text this module made (hex, a content type): always valid.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Stores the bytes of blob `hash` from `Upload-Offset` (default 0) of `Upload-Length`
/// (required), streamed to disk: `201` once the blob is complete and its hash checked,
/// `204` with `Upload-Offset` after a part.
#[utoipa::path(put, path = "/api/v1/blobs/{hash}", params(("hash" = String, Path),
        ("Upload-Offset" = Option<u64>, Header), ("Upload-Length" = u64, Header)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201), (status = 204),
              (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 409, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 413, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 422, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 507, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn put_blob(
    State(o): State<Orchestrator>,
    PathId(raw): PathId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let hash = hash_in_path("hash", &raw)?;
    let offset = byte_count(&headers, UPLOAD_OFFSET, "Upload-Offset")?.unwrap_or(0);
    let total = byte_count(&headers, UPLOAD_LENGTH, "Upload-Length")?.ok_or_else(|| {
        FieldError::new("Upload-Length", "required: the blob's whole size in bytes")
    })?;
    let blobs = &o.storage().blobs;
    if total > blobs.max_bytes() {
        return Err(crate::storage::TransferError::TooLarge {
            limit: blobs.max_bytes(),
        }
        .into());
    }
    if offset > total {
        return Err(FieldError::new("Upload-Offset", "must not be past Upload-Length").into());
    }
    if let Some(len) = byte_count(&headers, header::CONTENT_LENGTH.as_str(), "Content-Length")? {
        if offset.saturating_add(len) > total {
            return Err(FieldError::new(
                "Upload-Length",
                "Upload-Offset plus the body's Content-Length go past it",
            )
            .into());
        }
    }
    if blobs.size(&hash).await.is_none() {
        o.storage().ensure_room(total - offset).await?;
    }
    match blobs.put(&hash, offset, total, body).await? {
        PutOutcome::Complete => Ok(StatusCode::CREATED.into_response()),
        PutOutcome::Part { held } => Ok((
            StatusCode::NO_CONTENT,
            [(
                header::HeaderName::from_static(UPLOAD_OFFSET),
                HeaderValue::from(held),
            )],
        )
            .into_response()),
    }
}

/// Stores a manifest whose every blob the farm holds complete, as a blob named by its
/// canonical form's hash: `201 {"id": M}`; `409` listing `missing` blobs otherwise.
#[utoipa::path(post, path = "/api/v1/manifests", request_body = Manifest,
    responses((status = 201, body = ManifestCreated),
              (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 409, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 507, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn create_manifest(
    State(o): State<Orchestrator>,
    LargeJsonBody(body): LargeJsonBody<MAX_MANIFEST_BYTES>,
) -> Result<Response, ApiError> {
    let manifest = Manifest::from_body(&body)?;
    let blobs = &o.storage().blobs;
    // From the check to the manifest stored, the collector takes none of them; all are
    // used now, so a job naming the manifest finds them for the retention at least.
    let in_use = blobs.in_use().await;
    let missing = blobs.touch(&in_use, &manifest.hashes()).await;
    if !missing.is_empty() {
        return Err(ApiError::MissingBlobs(missing));
    }
    // A size that is not its blob's would fail every node that fetches it.
    for (i, file) in manifest.files.iter().enumerate() {
        if let Some(size) = blobs.size(&file.hash).await {
            if size != file.size {
                return Err(FieldError::new(
                    format!("files[{i}].size"),
                    format!("is {}, but its blob holds {size} bytes", file.size),
                )
                .into());
            }
        }
    }
    let canonical = manifest.canonical_json();
    let id = BlobHash::of(&canonical);
    o.storage().ensure_room(canonical.len() as u64).await?;
    blobs.put_bytes(&in_use, &id, &canonical).await?;
    drop(in_use);
    tracing::info!(manifest = %id, files = manifest.files.len(), root = %manifest.root, "manifest stored");
    let mut response = (
        StatusCode::CREATED,
        Json(ManifestCreated { id: id.clone() }),
    )
        .into_response();
    response.headers_mut().insert(
        header::LOCATION,
        header_value(&format!("/api/v1/manifests/{id}")),
    );
    Ok(response)
}

/// A stored manifest, in its canonical form.
#[utoipa::path(get, path = "/api/v1/manifests/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Manifest),
              (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn get_manifest(
    State(o): State<Orchestrator>,
    PathId(raw): PathId,
) -> Result<Response, ApiError> {
    let id = hash_in_path("manifest", &raw)?;
    let bytes = load_manifest(&o, &id)
        .await?
        .ok_or(ApiError::ManifestNotFound(id))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The canonical bytes of manifest `id`, when the farm holds a blob of that name that is a
/// manifest (any other blob is not one, even if a job names it).
pub(crate) async fn load_manifest(
    o: &Orchestrator,
    id: &BlobHash,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(bytes) = o
        .storage()
        .blobs
        .read(id, MAX_MANIFEST_BYTES as u64)
        .await
        .or_else(|e| match e {
            // Too large to be a manifest: not one.
            crate::storage::TransferError::TooLarge { .. } => Ok(None),
            other => Err(other),
        })?
    else {
        return Ok(None);
    };
    match Manifest::from_body(&bytes) {
        Ok(m) if m.canonical_json() == bytes => Ok(Some(bytes)),
        _ => Ok(None),
    }
}

/// A job and a frame number from the path: an id that is no job is a 404, a frame that is
/// no whole number a 400 naming `frame`.
async fn job_and_frame(
    o: &Orchestrator,
    path: Result<axum::extract::Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<(JobId, i64), ApiError> {
    let axum::extract::Path((id, frame)) =
        path.map_err(|_| ApiError::JobNotFound("(not UTF-8)".into()))?;
    let not_found = || ApiError::JobNotFound(id.chars().take(64).collect());
    let job: JobId = id.parse().map_err(|_| not_found())?;
    let frame: i64 = frame
        .parse()
        .map_err(|_| FieldError::new("frame", "must be a whole frame number"))?;
    o.store().job(job).await?.ok_or_else(not_found)?;
    Ok((job, frame))
}

/// A required text header.
fn text_header<'h>(headers: &'h HeaderMap, name: &str, shown: &str) -> Result<&'h str, FieldError> {
    headers
        .get(name)
        .ok_or_else(|| FieldError::new(shown, "required"))?
        .to_str()
        .map_err(|_| FieldError::new(shown, "must be visible ASCII"))
}

/// Refuses an upload unless task `task` is of `job`, covers `frame`, and is running under
/// `lease` now: a render that lost its lease (re-dispatched, taken back, cancelled) must
/// not overwrite the frames of the render that holds it.
async fn check_lease(
    o: &Orchestrator,
    job: JobId,
    frame: i64,
    task: TaskId,
    lease: LeaseId,
    node: Option<&str>,
) -> Result<(), ApiError> {
    let refuse = |why: String| Err(ApiError::FrameRefused(why));
    let Some(record) = o.store().task(task).await? else {
        return refuse(format!("there is no task {task}"));
    };
    let t = &record.task;
    if t.job != job {
        return refuse(format!("task {task} is not a task of job {job}"));
    }
    if !t.range.contains(frame) {
        return refuse(format!(
            "task {task} renders frames {}, not frame {frame}",
            t.range
        ));
    }
    let TaskState::Running(running) = &t.state else {
        return refuse(format!(
            "the lease of task {task} moved on: frame {frame} under lease {lease} is no longer wanted"
        ));
    };
    if t.lease != lease {
        return refuse(format!(
            "the lease of task {task} moved on: frame {frame} under lease {lease} is no longer wanted"
        ));
    }
    // A node's credential delivers only its own renders: task and lease ids are small
    // numbers, and another node of the job could otherwise replace this one's frames.
    if let Some(node) = node {
        if running.node.as_str() != node {
            return refuse(format!("task {task} is not rendered by node `{node}`"));
        }
    }
    Ok(())
}

/// A node delivers frame `frame` of job `id`: headers `X-Corral-Render` (the render's tag,
/// `corral:{task}:{lease}`), `X-Content-SHA256` and `Content-Type` (a frame format). The
/// body is streamed to disk and hashed; the frame is renamed into place (`201`) only if it
/// hashes right (`422` otherwise) and the tag's lease is still the task's (`409`).
#[utoipa::path(put, path = "/api/v1/jobs/{id}/frames/{frame}",
    params(("id" = String, Path), ("frame" = i64, Path), ("X-Corral-Render" = String, Header),
           ("X-Content-SHA256" = String, Header)),
    request_body(content = Vec<u8>, content_type = "image/png"),
    responses((status = 201),
              (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 409, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 413, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 422, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 507, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn put_frame(
    State(o): State<Orchestrator>,
    path: Result<axum::extract::Path<(String, String)>, axum::extract::rejection::PathRejection>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (job, frame) = job_and_frame(&o, path).await?;
    // Only jobs on uploaded scenes take frames here (a shared-folder job's frames are in
    // the nodes' folder): nothing would ever record or remove files sent for others.
    let uploaded = o
        .store()
        .job(job)
        .await?
        .is_some_and(|j| j.render.manifest.is_some());
    if !uploaded {
        return Err(ApiError::FrameRefused(format!(
            "job {job} renders a shared-folder scene: its frames are not uploaded"
        )));
    }
    // A node's credential delivers only that node's renders (see `check_lease`).
    let node = caller.and_then(|axum::Extension(c)| (c.kind == TokenKind::Node).then_some(c.name));
    let tag = text_header(&headers, CORRAL_RENDER, "X-Corral-Render")?;
    let (task, lease) = parse_render_tag(tag).ok_or_else(|| {
        FieldError::new(
            "X-Corral-Render",
            "must be the render's tag, corral:{task}:{lease}",
        )
    })?;
    let hash = BlobHash::parse(
        "X-Content-SHA256",
        text_header(&headers, CONTENT_SHA256, "X-Content-SHA256")?,
    )?;
    let content_type = text_header(&headers, header::CONTENT_TYPE.as_str(), "Content-Type")?;
    let ext = frame_extension(content_type).ok_or_else(|| {
        FieldError::new(
            "Content-Type",
            "must be a frame format's type (image/png, image/jpeg, image/x-exr, ...)",
        )
    })?;
    let frames = &o.storage().frames;
    if let Some(len) = byte_count(&headers, header::CONTENT_LENGTH.as_str(), "Content-Length")? {
        if len > frames.max_bytes() {
            return Err(crate::storage::TransferError::TooLarge {
                limit: frames.max_bytes(),
            }
            .into());
        }
    }
    check_lease(&o, job, frame, task, lease, node.as_deref()).await?;
    // A stale render is told so (409) before it is told to wait for space.
    let announced = byte_count(&headers, header::CONTENT_LENGTH.as_str(), "Content-Length")?;
    o.storage().ensure_room(announced.unwrap_or(0)).await?;
    let received = frames.receive(job, frame, ext, &hash, body).await?;
    // Again now that the bytes are in: the lease may have moved on while they streamed.
    // Checked and renamed under the frame's lock, so a render whose lease moved on between
    // the two cannot put its frame over the newer render's (which waits for the lock, and
    // renames after).
    let _frame_lock = frames.lock(job, frame).await;
    check_lease(&o, job, frame, task, lease, node.as_deref()).await?;
    let stored = received.place().await?;
    tracing::debug!(%job, frame, task = %task, path = %stored.display(), "frame uploaded");
    Ok(StatusCode::CREATED.into_response())
}

/// A rendered frame's bytes (uploaded, or in the shared folder), with `X-Content-SHA256`
/// and `ETag` (its hash); `If-None-Match` with that tag answers `304`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/frames/{frame}",
    params(("id" = String, Path), ("frame" = i64, Path)),
    responses((status = 200, content_type = "image/png"), (status = 304),
              (status = 400, body = corral_core::Problem, content_type = "application/problem+json"),
              (status = 404, body = corral_core::Problem, content_type = "application/problem+json")))]
pub async fn get_frame(
    State(o): State<Orchestrator>,
    path: Result<axum::extract::Path<(String, String)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (job, frame) = job_and_frame(&o, path).await?;
    let path = o.inner.media.frame_file(&o, job, frame).await?;
    let unreadable = |e: std::io::Error| {
        crate::dashboard::MediaError::Unreadable(format!("cannot read the frame: {e}"))
    };
    // Hashed through the file served (its size the bytes hashed), never by path again: a
    // frame may be replaced by a newer upload between two opens.
    let (file, size, hash) = crate::storage::open_hashed(&path)
        .await
        .map_err(unreadable)?;
    let etag = format!("\"{hash}\"");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, header_value(&etag))],
        )
            .into_response());
    }
    let content_type = crate::dashboard::frames::content_type(&path);
    let mut response = stream_file(file, size, content_type, &hash);
    response
        .headers_mut()
        .insert(header::ETAG, header_value(&etag));
    Ok(response)
}
