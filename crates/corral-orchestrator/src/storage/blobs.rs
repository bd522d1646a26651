//! The blob store: files named by their SHA-256 in `DATA/blobs/ab/abcdef...`, uploads in
//! progress in `DATA/blobs/partial/abcdef...`. An upload may come in parts (resumable
//! `PUT` with `Upload-Offset`); a blob appears under its name only once all its bytes hash
//! to that name, synced to disk, so a reader never sees a half or a wrong blob.
//!
//! A blob's modification time is its last use: every request that finds it there (`HEAD`,
//! `missing`, a `PUT` of it, a manifest or a job naming it) sets it to now, under
//! [`BlobStore::in_use`], and the collector deletes only blobs no job names whose last use
//! is older than the retention, each under [`BlobStore::collect`]'s exclusive hold.

use super::{append_body, hash_prefix, io_error, sync_dir, TransferError};
use axum::body::Body;
use corral_core::BlobHash;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a `PUT` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The blob is complete (now, or it was already).
    Complete,
    /// A part was stored; the farm holds this many bytes.
    Part { held: u64 },
}

/// The blobs under one data folder.
pub struct BlobStore {
    /// `DATA/blobs`.
    root: PathBuf,
    max_bytes: u64,
    /// Blobs being uploaded now: one writer per partial file, or two uploads would
    /// interleave their bytes.
    uploading: Mutex<HashSet<BlobHash>>,
    /// Makes the temporary names of small whole writes (manifests) unique.
    counter: AtomicU64,
    /// Requests that find blobs and touch them (then maybe record a job naming them) hold
    /// it shared; the collector holds it exclusively to read which blobs jobs name, and
    /// again around each deletion, so a blob is never deleted between being found and
    /// being touched or named.
    gc: tokio::sync::RwLock<()>,
}

/// Proof that the holder may touch blobs: the collector is not deleting one now. Held
/// only briefly (never across an upload body), since the collector waits for it.
pub struct InUse<'a>(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>);

/// Removes a blob from the uploads in progress when its request ends, however it ends.
struct Uploading<'a> {
    store: &'a BlobStore,
    hash: BlobHash,
}

impl Drop for Uploading<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.store.uploading.lock() {
            set.remove(&self.hash);
        }
    }
}

impl BlobStore {
    pub fn new(data_dir: &Path, max_bytes: u64) -> BlobStore {
        BlobStore {
            root: data_dir.join("blobs"),
            max_bytes,
            uploading: Mutex::new(HashSet::new()),
            counter: AtomicU64::new(0),
            gc: tokio::sync::RwLock::new(()),
        }
    }

    /// Holds off the collector while the caller finds, touches and maybe names blobs.
    pub async fn in_use(&self) -> InUse<'_> {
        InUse(self.gc.read().await)
    }

    /// Held by the collector while it reads which blobs jobs name (so a job recorded under
    /// [`BlobStore::in_use`] is either seen or its blobs touched after the read).
    pub(crate) async fn exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gc.write().await
    }

    /// Marks each of `hashes` the farm holds complete as used now; answers those it does
    /// not hold, in the order given.
    pub async fn touch(&self, _in_use: &InUse<'_>, hashes: &[BlobHash]) -> Vec<BlobHash> {
        let paths: Vec<PathBuf> = hashes.iter().map(|h| self.path(h)).collect();
        let now = std::time::SystemTime::now();
        let found = tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|p| set_modified(p, now))
                .collect::<Vec<bool>>()
        })
        .await
        .unwrap_or_default();
        hashes
            .iter()
            .enumerate()
            .filter(|(i, _)| !found.get(*i).copied().unwrap_or(false))
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// Deletes the complete blobs not in `live` whose last use is before `cutoff` (and
    /// marks those in `live` used now, so a blob starts ageing only once no job names
    /// it), and unfinished uploads untouched since `partial_cutoff` that no request is
    /// writing.
    pub(crate) async fn collect(
        &self,
        live: &HashSet<BlobHash>,
        cutoff: std::time::SystemTime,
        partial_cutoff: std::time::SystemTime,
    ) -> std::io::Result<super::Collected> {
        let mut done = super::Collected::default();
        let now = std::time::SystemTime::now();
        for dir in super::entries(&self.root).await? {
            let name = dir.file_name();
            let Some(prefix) = name.to_str() else {
                continue;
            };
            if prefix.len() != 2 || !dir.file_type().await?.is_dir() {
                continue;
            }
            for entry in super::entries(&dir.path()).await? {
                let Some(hash) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| BlobHash::parse("hash", n).ok())
                else {
                    continue;
                };
                if live.contains(&hash) {
                    let path = entry.path();
                    let _ = tokio::task::spawn_blocking(move || set_modified(&path, now)).await;
                    continue;
                }
                if super::modified(&entry.path())
                    .await
                    .is_none_or(|m| m >= cutoff)
                {
                    continue;
                }
                // Again under the exclusive hold: a request may have touched it since.
                let _gc = self.gc.write().await;
                let path = entry.path();
                let Ok(meta) = tokio::fs::symlink_metadata(&path).await else {
                    continue;
                };
                if meta.modified().is_ok_and(|m| m < cutoff) {
                    tokio::fs::remove_file(&path).await?;
                    done.blobs += 1;
                    done.bytes += meta.len();
                    tracing::debug!(blob = %hash, bytes = meta.len(), "blob collected");
                }
            }
        }
        for entry in super::entries(&self.partial_dir()).await? {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // An upload in progress is never swept: claimed here as a `PUT` would, so one
            // arriving now waits its turn (a 409 with the offset held).
            let _claim = match BlobHash::parse("hash", name) {
                Ok(hash) => match self.start_upload(&hash) {
                    Some(claim) => Some(claim),
                    None => continue,
                },
                // A manifest's temporary file (`.HASH.PID.N`): written and renamed at once.
                Err(_) => None,
            };
            if super::modified(&path)
                .await
                .is_some_and(|m| m < partial_cutoff)
            {
                tokio::fs::remove_file(&path).await?;
                done.partials += 1;
                tracing::debug!(partial = %path.display(), "stale unfinished upload removed");
            }
        }
        Ok(done)
    }

    /// The largest blob accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn path(&self, hash: &BlobHash) -> PathBuf {
        self.root.join(hash.prefix()).join(hash.as_str())
    }

    fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    fn partial(&self, hash: &BlobHash) -> PathBuf {
        self.partial_dir().join(hash.as_str())
    }

    /// The size of a complete blob; `None` when the farm does not hold it whole.
    pub async fn size(&self, hash: &BlobHash) -> Option<u64> {
        match tokio::fs::symlink_metadata(self.path(hash)).await {
            Ok(meta) if meta.is_file() => Some(meta.len()),
            _ => None,
        }
    }

    /// How many bytes of an unfinished upload are held (0 when none).
    pub async fn held(&self, hash: &BlobHash) -> u64 {
        tokio::fs::symlink_metadata(self.partial(hash))
            .await
            .map_or(0, |m| m.len())
    }

    /// A complete blob, opened, with its size.
    pub async fn open(&self, hash: &BlobHash) -> Option<(tokio::fs::File, u64)> {
        let file = tokio::fs::File::open(self.path(hash)).await.ok()?;
        let meta = file.metadata().await.ok()?;
        meta.is_file().then_some((file, meta.len()))
    }

    /// A complete blob's bytes, when it holds at most `limit` of them.
    pub async fn read(
        &self,
        hash: &BlobHash,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, TransferError> {
        let Some(size) = self.size(hash).await else {
            return Ok(None);
        };
        if size > limit {
            return Err(TransferError::TooLarge { limit });
        }
        match tokio::fs::read(self.path(hash)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TransferError::Io(e.to_string())),
        }
    }

    /// Stores `bytes` (small, and hashing to `hash`: the caller computed it) whole, or
    /// marks it used now when the farm holds it.
    pub async fn put_bytes(
        &self,
        in_use: &InUse<'_>,
        hash: &BlobHash,
        bytes: &[u8],
    ) -> Result<(), TransferError> {
        if self
            .touch(in_use, std::slice::from_ref(hash))
            .await
            .is_empty()
        {
            return Ok(());
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .partial_dir()
            .join(format!(".{hash}.{}.{n}", std::process::id()));
        let result = async {
            tokio::fs::create_dir_all(self.partial_dir()).await?;
            let mut file = tokio::fs::File::create(&tmp).await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
            file.sync_all().await?;
            self.place(&tmp, hash).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map_err(|e| match io_error(e) {
            TransferError::DiskFull { detail, .. } => TransferError::DiskFull { held: 0, detail },
            other => other,
        })
    }

    /// Renames a complete, synced file into place as `hash`.
    async fn place(&self, from: &Path, hash: &BlobHash) -> std::io::Result<()> {
        let dir = self.root.join(hash.prefix());
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(from, self.path(hash)).await?;
        sync_dir(&dir).await
    }

    /// Marks `hash` as being uploaded; `None` when another request uploads it now.
    fn start_upload(&self, hash: &BlobHash) -> Option<Uploading<'_>> {
        // A poisoned table only means a request panicked while holding it.
        let mut set = self.uploading.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(hash.clone()).then(|| Uploading {
            store: self,
            hash: hash.clone(),
        })
    }

    /// Stores the part of blob `hash` (of `total` bytes) that starts at `offset`, streamed
    /// from `body`. When the last byte arrives, the whole is hashed: a blob that is not its
    /// name is dropped ([`TransferError::HashMismatch`]), else it is renamed into place.
    pub async fn put(
        &self,
        hash: &BlobHash,
        offset: u64,
        total: u64,
        body: Body,
    ) -> Result<PutOutcome, TransferError> {
        if total > self.max_bytes {
            return Err(TransferError::TooLarge {
                limit: self.max_bytes,
            });
        }
        {
            let in_use = self.in_use().await;
            if self
                .touch(&in_use, std::slice::from_ref(hash))
                .await
                .is_empty()
            {
                // Uploading a blob the farm has is harmless: its bytes are not even read.
                return Ok(PutOutcome::Complete);
            }
        }
        let _guard = match self.start_upload(hash) {
            Some(guard) => guard,
            None => {
                return Err(TransferError::Busy {
                    held: self.held(hash).await,
                })
            }
        };
        let held = self.held(hash).await;
        if offset != held {
            return Err(TransferError::OffsetMismatch { sent: offset, held });
        }
        if offset > total {
            return Err(TransferError::TooLong { total });
        }
        if offset > 0 {
            tracing::debug!(blob = %hash, offset, total, "blob upload resumed");
        }
        let partial = self.partial(hash);
        let mut hasher = if offset > 0 {
            hash_prefix(&partial, offset)
                .await
                .map_err(|e| TransferError::Io(e.to_string()))?
        } else {
            Sha256::new()
        };
        tokio::fs::create_dir_all(self.partial_dir())
            .await
            .map_err(io_error)?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .await
            .map_err(io_error)?;
        let written = append_body(&mut file, body, &mut hasher, total - offset).await;
        let written = match written {
            Ok(n) => n,
            Err(TransferError::TooLong { .. }) => {
                // Refused as a whole: the partial goes back to what it was.
                let _ = file.set_len(offset).await;
                return Err(TransferError::TooLong { total });
            }
            Err(TransferError::DiskFull { detail, .. }) => {
                // Whatever reached the file stays: the client resumes from there.
                let _ = file.sync_data().await;
                let held = self.held(hash).await;
                return Err(TransferError::DiskFull { held, detail });
            }
            Err(e) => {
                let _ = file.sync_data().await;
                return Err(e);
            }
        };
        if let Err(e) = file.sync_data().await {
            return Err(match io_error(e) {
                TransferError::DiskFull { detail, .. } => TransferError::DiskFull {
                    held: offset,
                    detail,
                },
                other => other,
            });
        }
        drop(file);
        let held = offset + written;
        if held < total {
            return Ok(PutOutcome::Part { held });
        }
        let actual = BlobHash::from_digest(&hasher.finalize());
        if &actual != hash {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(TransferError::HashMismatch {
                field: "hash",
                expected: hash.to_string(),
                actual: actual.to_string(),
            });
        }
        let in_use = self.in_use().await;
        self.place(&partial, hash).await.map_err(io_error)?;
        // Used now: the rename kept the time of the last write.
        self.touch(&in_use, std::slice::from_ref(hash)).await;
        tracing::debug!(blob = %hash, bytes = total, "blob stored");
        Ok(PutOutcome::Complete)
    }
}

/// Sets a complete blob's time of last use; false when there is no such file. Blocking.
fn set_modified(path: &Path, when: std::time::SystemTime) -> bool {
    let set = || -> std::io::Result<()> {
        // Opened for reading only: the owner may set the times of a file it cannot write.
        let file = std::fs::File::open(path)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a file"));
        }
        file.set_modified(when)
    };
    set().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn old() -> SystemTime {
        SystemTime::now() - Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn a_blob_touched_while_the_collector_waits_is_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = BlobStore::new(dir.path(), 1 << 20);
        let (kept, gone) = (b"named just now".as_slice(), b"unused".as_slice());
        let (h_kept, h_gone) = (BlobHash::of(kept), BlobHash::of(gone));
        {
            let in_use = store.in_use().await;
            store.put_bytes(&in_use, &h_kept, kept).await.expect("put");
            store.put_bytes(&in_use, &h_gone, gone).await.expect("put");
        }
        for h in [&h_kept, &h_gone] {
            assert!(set_modified(&store.path(h), old()));
        }
        // A request found `kept` (old, named by no job) and is about to touch it: the
        // collector, run now, waits for it before deleting anything, then sees the touch.
        let in_use = store.in_use().await;
        let cutoff = SystemTime::now() - Duration::from_secs(60);
        let none = HashSet::new();
        let collect = store.collect(&none, cutoff, cutoff);
        let touch = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let missing = store.touch(&in_use, std::slice::from_ref(&h_kept)).await;
            drop(in_use);
            missing
        };
        let (collected, missing) = tokio::join!(collect, touch);
        assert!(missing.is_empty());
        assert_eq!(collected.expect("collect").blobs, 1);
        assert!(
            store.size(&h_kept).await.is_some(),
            "the touched blob stays"
        );
        assert!(store.size(&h_gone).await.is_none(), "the unused one goes");
    }

    #[tokio::test]
    async fn live_blobs_stay_and_start_ageing_from_the_last_round_that_saw_them_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = BlobStore::new(dir.path(), 1 << 20);
        let bytes = b"a scene".as_slice();
        let hash = BlobHash::of(bytes);
        store
            .put_bytes(&store.in_use().await, &hash, bytes)
            .await
            .expect("put");
        assert!(set_modified(&store.path(&hash), old()));
        let cutoff = SystemTime::now() - Duration::from_secs(60);
        let live: HashSet<BlobHash> = [hash.clone()].into();
        let done = store.collect(&live, cutoff, cutoff).await.expect("collect");
        assert_eq!(done.blobs, 0);
        // Marked used by the round: with no job naming it any more, it is not yet due.
        let done = store
            .collect(&HashSet::new(), cutoff, cutoff)
            .await
            .expect("collect");
        assert_eq!(done.blobs, 0);
        assert!(store.size(&hash).await.is_some());
    }
}
