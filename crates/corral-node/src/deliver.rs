//! Frame delivery for `"deliver": "upload"` renders: each frame Blender saves is uploaded
//! to the orchestrator (`PUT /api/v1/jobs/{job}/frames/{n}`, with the render's tag and the
//! file's SHA-256) while the next one renders, and listed in the job's `outputs` (by file
//! name) only once the orchestrator answered `201`. Transient failures (no answer, `5xx`,
//! `408`, `429`, a `422` hash mismatch in transit) are retried a few times; a `409` (the
//! render's lease moved on) stops the render; any other refusal, or retries run out, fails
//! it. The local file is removed once delivered.

use crate::jobs::Node;
use corral_client::{ClientError, FrameUpload, OrchestratorClient};
use corral_core::{BlobHash, JobId};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Attempts per frame before the render fails.
pub const ATTEMPTS: u32 = 5;

/// Wait before the second attempt; doubled before each further one.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Why delivery stopped the render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The orchestrator answered `409`: the render's lease is no longer the task's.
    LeaseMoved(String),
    /// A frame could not be delivered.
    Failed(String),
}

/// How delivery ended.
#[derive(Debug, Default)]
pub struct Delivered {
    pub frames: BTreeSet<i64>,
    pub stopped: Option<Stopped>,
}

/// Where a render's frames go, and who they are for.
#[derive(Debug, Clone)]
pub struct Destination {
    pub client: OrchestratorClient,
    /// The orchestrator's job id.
    pub job: JobId,
    /// The render's tag (`X-Corral-Render`).
    pub tag: String,
}

/// A running delivery: frames are handed to it as Blender saves them.
pub struct Delivery {
    frames: mpsc::UnboundedSender<(i64, PathBuf)>,
    task: JoinHandle<Delivered>,
}

impl Delivery {
    /// Starts delivering node job `id`'s frames to `to`. A refusal that ends the render
    /// cancels `stop` (the render's own token); `cancel` (the job's) drops what is left.
    pub fn start(
        node: Node,
        id: JobId,
        to: Destination,
        stop: CancellationToken,
        cancel: CancellationToken,
    ) -> Delivery {
        let (frames, queue) = mpsc::unbounded_channel();
        let task = tokio::spawn(deliver_all(node, id, to, queue, stop, cancel));
        Delivery { frames, task }
    }

    /// Queues a saved frame (its file, in the render's own folder).
    pub fn send(&self, frame: i64, path: PathBuf) {
        // The receiver ends only once this sender is dropped, or it panicked; then the
        // frame is not delivered and the job's verdict says so.
        let _ = self.frames.send((frame, path));
    }

    /// Waits until every queued frame was delivered or given up on.
    pub async fn finish(self) -> Delivered {
        drop(self.frames);
        self.task.await.unwrap_or_else(|e| Delivered {
            frames: BTreeSet::new(),
            stopped: Some(Stopped::Failed(format!("frame delivery broke down: {e}"))),
        })
    }
}

async fn deliver_all(
    node: Node,
    id: JobId,
    to: Destination,
    mut queue: mpsc::UnboundedReceiver<(i64, PathBuf)>,
    stop: CancellationToken,
    cancel: CancellationToken,
) -> Delivered {
    let mut done = Delivered::default();
    while let Some((frame, path)) = queue.recv().await {
        if done.stopped.is_some() || cancel.is_cancelled() {
            let _ = tokio::fs::remove_file(&path).await;
            continue;
        }
        match deliver(&node, id, &to, frame, &path, &cancel).await {
            Ok(()) => {
                let _ = tokio::fs::remove_file(&path).await;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                node.update(id, |job| {
                    job.outputs.insert(frame, name);
                    true
                });
                done.frames.insert(frame);
            }
            Err(None) => {}
            Err(Some(stopped)) => {
                let _ = tokio::fs::remove_file(&path).await;
                let why = match &stopped {
                    Stopped::LeaseMoved(why) | Stopped::Failed(why) => why.clone(),
                };
                tracing::warn!(job = %id, frame, reason = %why, "frame delivery stopped the render");
                note(&node, id, &format!("# corral: {why}"));
                done.stopped = Some(stopped);
                stop.cancel();
            }
        }
    }
    done
}

/// Uploads one frame, retrying transient failures. `Err(None)`: the job was cancelled.
async fn deliver(
    node: &Node,
    id: JobId,
    to: &Destination,
    frame: i64,
    path: &std::path::Path,
    cancel: &CancellationToken,
) -> Result<(), Option<Stopped>> {
    let job = to.job.to_string();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let content_type = corral_core::render::frame_content_type(&name);
    let mut wait = FIRST_RETRY;
    let mut attempt = 1;
    loop {
        // Hashed again on every attempt: a 422 may mean the file changed under us.
        let file = path.to_path_buf();
        let (sha256, length) = tokio::task::spawn_blocking(move || hash_file(&file))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|why| {
                Some(Stopped::Failed(format!(
                    "frame {frame} could not be delivered: cannot read `{name}`: {why}"
                )))
            })?;
        let upload = FrameUpload {
            job: &job,
            frame,
            render_tag: &to.tag,
            sha256: &sha256,
            content_type,
            path,
            length,
        };
        let answer = tokio::select! {
            () = cancel.cancelled() => return Err(None),
            answer = to.client.upload_frame(&upload) => answer,
        };
        let error = match answer {
            Ok(()) => {
                tracing::debug!(job = %id, frame, bytes = length, "frame delivered");
                return Ok(());
            }
            Err(ClientError::Status {
                status: 409,
                problem,
                ..
            }) => {
                return Err(Some(Stopped::LeaseMoved(format!(
                    "the orchestrator refused frame {frame} (409: {}); the render's lease moved on, so it was stopped",
                    problem.detail.as_deref().unwrap_or(&problem.title)
                ))))
            }
            Err(e) => e,
        };
        if !transient(&error) || attempt >= ATTEMPTS {
            return Err(Some(Stopped::Failed(format!(
                "frame {frame} could not be delivered after {attempt} attempt(s): {error}"
            ))));
        }
        note(
            node,
            id,
            &format!(
                "# corral: frame {frame}: upload attempt {attempt} failed ({error}); retrying"
            ),
        );
        tokio::select! {
            () = cancel.cancelled() => return Err(None),
            () = tokio::time::sleep(wait) => {}
        }
        wait *= 2;
        attempt += 1;
    }
}

/// Failures worth another attempt: no answer, or an answer that says "not now".
fn transient(error: &ClientError) -> bool {
    match error {
        ClientError::Unreachable { .. } => true,
        ClientError::Status { status, .. } => {
            matches!(status, 408 | 422 | 429 | 500 | 502 | 503 | 504 | 507)
        }
        _ => false,
    }
}

/// The SHA-256 and size of a file, read in pieces.
fn hash_file(path: &std::path::Path) -> Result<(BlobHash, u64), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((BlobHash::from_digest(&hasher.finalize()), total))
}

/// A line in the job's log tail (delivery does not write the Blender log file).
fn note(node: &Node, id: JobId, line: &str) {
    node.update(id, |job| {
        crate::runner::push_tail(&mut job.log_tail, line);
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hash_like_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.png");
        std::fs::write(&path, vec![7u8; 600_000]).unwrap();
        let (hash, len) = hash_file(&path).unwrap();
        assert_eq!(len, 600_000);
        assert_eq!(hash, BlobHash::of(&vec![7u8; 600_000]));
    }

    #[test]
    fn only_not_now_answers_are_retried() {
        let status = |status| ClientError::Status {
            url: "u".into(),
            status,
            problem: Box::new(corral_core::Problem::new(status, "x")),
        };
        for s in [500, 503, 507, 422, 429] {
            assert!(transient(&status(s)), "{s}");
        }
        for s in [400, 401, 403, 413, 409] {
            assert!(!transient(&status(s)), "{s}");
        }
        assert!(!transient(&ClientError::NotFound { url: "u".into() }));
    }
}
