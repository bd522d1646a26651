//! Frames nodes upload (`PUT /api/v1/jobs/{job}/frames/{n}`): streamed into
//! `DATA/frames/{job}/partial/`, hashed as they arrive, synced, and renamed to
//! `DATA/frames/{job}/frame_NNNN.ext` only once the caller has checked the render's lease
//! again, so a frame appears under its name only complete and only from the current lease.

use super::{append_body, io_error, sync_dir, TransferError};
use axum::body::Body;
use corral_core::render::{frame_content_type, frame_extension};
use corral_core::{BlobHash, JobId};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The uploaded frames under one data folder.
pub struct FrameStore {
    /// `DATA/frames`, absolute (recorded frame paths are compared with it).
    root: PathBuf,
    max_bytes: u64,
    /// Makes partial names unique, so two uploads of one frame never share a file.
    counter: AtomicU64,
}

/// A frame received and checked, not yet under its name; removed if never placed.
pub struct Received {
    partial: PathBuf,
    target: PathBuf,
    placed: bool,
}

impl Received {
    /// Renames the frame into place (replacing an earlier upload of it) and syncs the
    /// folder.
    pub async fn place(mut self) -> Result<PathBuf, TransferError> {
        tokio::fs::rename(&self.partial, &self.target)
            .await
            .map_err(io_error)?;
        self.placed = true;
        if let Some(dir) = self.target.parent() {
            sync_dir(dir).await.map_err(io_error)?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

impl FrameStore {
    pub fn new(data_dir: &Path, max_bytes: u64) -> FrameStore {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        FrameStore {
            root: data_dir.join("frames"),
            max_bytes,
            counter: AtomicU64::new(0),
        }
    }

    /// `DATA/frames`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where frame `frame` of `job` is kept: `frame_0001.png` (Blender's four digits, its
    /// `-001` for negative frames).
    pub fn path(&self, job: JobId, frame: i64, ext: &str) -> PathBuf {
        self.root
            .join(job.to_string())
            .join(format!("frame_{frame:04}.{ext}"))
    }

    /// The path to record for a frame a node reported delivered under the file name
    /// `reported`: the file its upload was stored as (the same content type, so the same
    /// extension, as the node sent by that name).
    pub fn recorded_path(&self, job: JobId, frame: i64, reported: &str) -> String {
        let ext = frame_extension(frame_content_type(reported)).unwrap_or("bin");
        self.path(job, frame, ext).to_string_lossy().into_owned()
    }

    /// Streams a frame's bytes (at most [`FrameStore::max_bytes`]) into the job's partial
    /// folder and checks they hash to `expected`; a frame that does not is dropped.
    pub async fn receive(
        &self,
        job: JobId,
        frame: i64,
        ext: &str,
        expected: &BlobHash,
        body: Body,
    ) -> Result<Received, TransferError> {
        let partial_dir = self.root.join(job.to_string()).join("partial");
        tokio::fs::create_dir_all(&partial_dir)
            .await
            .map_err(io_error)?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let received = Received {
            partial: partial_dir.join(format!("frame_{frame}.{}.{n}.{ext}", std::process::id())),
            target: self.path(job, frame, ext),
            placed: false,
        };
        let mut file = tokio::fs::File::create(&received.partial)
            .await
            .map_err(io_error)?;
        let mut hasher = Sha256::new();
        match append_body(&mut file, body, &mut hasher, self.max_bytes).await {
            Ok(_) => {}
            Err(TransferError::TooLong { .. }) => {
                return Err(TransferError::TooLarge {
                    limit: self.max_bytes,
                })
            }
            Err(e) => return Err(e),
        }
        // Synced before it can be renamed into place: a frame under its name is whole.
        file.sync_all().await.map_err(io_error)?;
        drop(file);
        let actual = BlobHash::from_digest(&hasher.finalize());
        if &actual != expected {
            return Err(TransferError::HashMismatch {
                field: "X-Content-SHA256",
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(received)
    }
}
