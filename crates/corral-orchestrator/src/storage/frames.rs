//! Frames nodes upload (`PUT /api/v1/jobs/{job}/frames/{n}`): streamed into
//! `DATA/frames/{job}/partial/`, hashed as they arrive, synced, and renamed to
//! `DATA/frames/{job}/frame_NNNN.ext` only once the caller has checked the render's lease
//! again, so a frame appears under its name only complete and only from the current lease.
//! The re-check and the rename happen under the frame's lock ([`FrameStore::lock`]), so a
//! render whose lease moved on between the two cannot replace a newer upload of the frame.

use super::{append_body, io_error, sync_dir, TransferError};
use axum::body::Body;
use corral_core::render::{frame_content_type, frame_extension};
use corral_core::{BlobHash, JobId};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Locks frames are spread over: two uploads of one frame always share one; two different
/// frames rarely do, and then only wait for a rename.
const FRAME_LOCKS: usize = 64;

/// The uploaded frames under one data folder.
pub struct FrameStore {
    /// `DATA/frames`, absolute (recorded frame paths are compared with it).
    root: PathBuf,
    max_bytes: u64,
    /// Makes partial names unique, so two uploads of one frame never share a file.
    counter: AtomicU64,
    /// The partial files uploads are writing now, which the sweeper leaves alone.
    receiving: Arc<Mutex<HashSet<PathBuf>>>,
    /// Held across a frame's last lease check and its rename into place.
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// A frame received and checked, not yet under its name; removed if never placed.
pub struct Received {
    partial: PathBuf,
    target: PathBuf,
    placed: bool,
    receiving: Arc<Mutex<HashSet<PathBuf>>>,
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
        if let Ok(mut set) = self.receiving.lock() {
            set.remove(&self.partial);
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
            receiving: Arc::new(Mutex::new(HashSet::new())),
            locks: (0..FRAME_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The lock of frame `frame` of `job`: hold it from the lease's last check through
    /// [`Received::place`].
    pub async fn lock(&self, job: JobId, frame: i64) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (job.to_string(), frame).hash(&mut h);
        let i = (h.finish() % FRAME_LOCKS as u64) as usize;
        self.locks[i].lock().await
    }

    /// Removes partial frames untouched since `cutoff` that no upload is writing (a crash
    /// or a kill left them; a live upload writes at least every
    /// [`super::BODY_IDLE_TIMEOUT`] or is given up). Answers how many.
    pub(crate) async fn sweep_partials(
        &self,
        cutoff: std::time::SystemTime,
    ) -> std::io::Result<u64> {
        let mut removed = 0;
        for job in super::entries(&self.root).await? {
            if !job.file_type().await?.is_dir() {
                continue;
            }
            let partial_dir = job.path().join("partial");
            for entry in super::entries(&partial_dir).await? {
                let path = entry.path();
                if super::modified(&path).await.is_none_or(|m| m >= cutoff) {
                    continue;
                }
                // Checked and removed under the table's lock, so an upload cannot start
                // writing this name in between (names are unique per process, but a
                // restarted process may come to one again).
                let receiving = self.receiving.clone();
                let gone = tokio::task::spawn_blocking(move || {
                    let set = receiving.lock().unwrap_or_else(|p| p.into_inner());
                    !set.contains(&path) && std::fs::remove_file(&path).is_ok()
                })
                .await
                .unwrap_or(false);
                if gone {
                    removed += 1;
                }
            }
        }
        Ok(removed)
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
        let partial = partial_dir.join(format!("frame_{frame}.{}.{n}.{ext}", std::process::id()));
        // Listed before the file exists, so the sweeper never takes it.
        self.receiving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partial.clone());
        let received = Received {
            partial,
            target: self.path(job, frame, ext),
            placed: false,
            receiving: self.receiving.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_frame_is_placed_by_one_upload_at_a_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FrameStore::new(dir.path(), 1 << 20);
        let job = JobId::new();
        let held = store.lock(job, 7).await;
        let second = tokio::time::timeout(Duration::from_millis(100), store.lock(job, 7)).await;
        assert!(second.is_err(), "a second upload of frame 7 waits");
        drop(held);
        let second = tokio::time::timeout(Duration::from_secs(5), store.lock(job, 7)).await;
        assert!(second.is_ok());
    }

    #[tokio::test]
    async fn stale_partials_go_and_uploads_in_progress_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FrameStore::new(dir.path(), 1 << 20);
        let job = JobId::new();
        let bytes = b"frame".as_slice();
        let hash = BlobHash::of(bytes);
        // Received (so listed as in progress), not yet placed.
        let received = store
            .receive(job, 1, "png", &hash, Body::from(bytes.to_vec()))
            .await
            .expect("receive");
        let stale = store
            .root()
            .join(job.to_string())
            .join("partial/frame_2.1.9.png");
        std::fs::write(&stale, b"left by a crash").expect("write");
        let future = std::time::SystemTime::now() + Duration::from_secs(60);
        assert_eq!(store.sweep_partials(future).await.expect("sweep"), 1);
        assert!(!stale.exists());
        let placed = received.place().await.expect("place");
        assert_eq!(std::fs::read(placed).expect("read"), bytes);
    }
}
