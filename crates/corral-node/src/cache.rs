//! The node's content-addressed cache of uploaded scenes' files (`DATA/cache/`): blobs
//! named by their SHA-256 (`cache/ab/abcdef...`), fetched from the orchestrator when a job
//! needs one it lacks, checked against their hash and size as the bytes arrive (written
//! to `cache/partial/` and renamed into place only once they match), and evicted
//! least-recently-used beyond `--cache-size`.
//!
//! Architecture invariant: a blob a workspace uses is never evicted; a workspace holds a
//! [`Pinned`] for every blob it links to until it is removed. A cached blob is read-only
//! and remembered with its size and modification time: one found changed (a render that
//! wrote through a hard link, a disk that lost it) is dropped and fetched again, never
//! served.

use corral_client::{ClientError, OrchestratorClient};
use corral_core::BlobHash;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// The cache and the orchestrator it fetches from.
pub struct BlobCache {
    dir: PathBuf,
    partial: PathBuf,
    limit: u64,
    client: OrchestratorClient,
    state: Mutex<CacheState>,
    /// Names partial downloads apart.
    downloads: AtomicU64,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<BlobHash, Entry>,
    /// Bytes of every entry.
    total: u64,
    /// Bumped on every use; an entry's `last_used` orders eviction.
    clock: u64,
}

struct Entry {
    size: u64,
    /// The file's modification time when it was checked in: a file found with another
    /// one was changed after its hash was checked.
    modified: Option<SystemTime>,
    last_used: u64,
    /// Workspaces using it.
    pins: u32,
}

/// What [`BlobCache::pin_all`] did, for the job's log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FetchStats {
    pub cached: usize,
    pub fetched: usize,
    pub fetched_bytes: u64,
}

/// Blobs held for a workspace: none of them is evicted until this is dropped.
pub struct Pinned {
    cache: Arc<BlobCache>,
    hashes: Vec<BlobHash>,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let mut state = self.cache.lock();
        for hash in &self.hashes {
            if let Some(entry) = state.entries.get_mut(hash) {
                entry.pins = entry.pins.saturating_sub(1);
            }
        }
        self.cache.evict(&mut state);
    }
}

fn modified(meta: &std::fs::Metadata) -> Option<SystemTime> {
    meta.modified().ok()
}

impl BlobCache {
    /// Opens the cache in `dir` (created if missing): downloads an earlier run left
    /// unfinished are removed, the blobs there are taken in (least recently used first by
    /// their modification time), and the cache is trimmed to `limit` bytes.
    pub fn open(
        dir: &Path,
        limit: u64,
        client: OrchestratorClient,
    ) -> std::io::Result<Arc<BlobCache>> {
        let partial = dir.join("partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial)?;
        }
        std::fs::create_dir_all(&partial)?;
        let mut found = Vec::new();
        for fan in std::fs::read_dir(dir)?.flatten() {
            let name = fan.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !fan.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for file in std::fs::read_dir(fan.path())?.flatten() {
                let Some(hash) = file
                    .file_name()
                    .to_str()
                    .and_then(|n| BlobHash::parse("hash", n).ok())
                else {
                    continue;
                };
                let Ok(meta) = file.path().symlink_metadata() else {
                    continue;
                };
                if meta.is_file() && hash.prefix() == name {
                    found.push((modified(&meta), hash, meta.len()));
                }
            }
        }
        found.sort();
        let mut state = CacheState::default();
        for (modified, hash, size) in found {
            state.clock += 1;
            state.total += size;
            state.entries.insert(
                hash,
                Entry {
                    size,
                    modified,
                    last_used: state.clock,
                    pins: 0,
                },
            );
        }
        let cache = Arc::new(BlobCache {
            dir: dir.to_path_buf(),
            partial,
            limit,
            client,
            state: Mutex::new(state),
            downloads: AtomicU64::new(0),
        });
        {
            let mut state = cache.lock();
            cache.evict(&mut state);
        }
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // Every update is a few assignments: a panic between them leaves nothing half done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The orchestrator blobs and manifests come from.
    pub fn client(&self) -> &OrchestratorClient {
        &self.client
    }

    /// Where blob `hash` is kept.
    pub fn path(&self, hash: &BlobHash) -> PathBuf {
        self.dir.join(hash.prefix()).join(hash.as_str())
    }

    /// Bytes held.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Makes sure every blob of `blobs` (hash and size, as the manifest says) is in the
    /// cache, fetching those that are not, and pins them all. Stops (dropping what it
    /// fetched halfway) when `cancel` fires.
    pub async fn pin_all(
        self: &Arc<Self>,
        blobs: &[(BlobHash, u64)],
        cancel: &CancellationToken,
    ) -> Result<(Pinned, FetchStats), String> {
        let mut pinned = Pinned {
            cache: Arc::clone(self),
            hashes: Vec::with_capacity(blobs.len()),
        };
        let mut stats = FetchStats::default();
        for (hash, size) in blobs {
            if self.try_pin(hash, *size)? {
                stats.cached += 1;
            } else {
                tokio::select! {
                    () = cancel.cancelled() => return Err("cancelled while fetching the scene".into()),
                    fetched = self.fetch(hash, *size) => fetched?,
                }
                stats.fetched += 1;
                stats.fetched_bytes += size;
            }
            pinned.hashes.push(hash.clone());
        }
        Ok((pinned, stats))
    }

    /// Pins `hash` if it is cached and unchanged; false if it must be fetched.
    fn try_pin(&self, hash: &BlobHash, size: u64) -> Result<bool, String> {
        let meta = self.path(hash).symlink_metadata().ok();
        let mut state = self.lock();
        let Some(entry) = state.entries.get(hash) else {
            return Ok(false);
        };
        if entry.size != size {
            return Err(format!(
                "the manifest says blob {hash} is {size} bytes, but it is {}",
                entry.size
            ));
        }
        let intact = meta
            .as_ref()
            .is_some_and(|m| m.is_file() && m.len() == entry.size && modified(m) == entry.modified);
        if !intact {
            tracing::warn!(blob = %hash, "a cached blob changed or vanished; fetching it again");
            // One in use keeps its entry (and its pins): the fetched copy replaces the
            // file under it, and the workspaces that use it keep their own links.
            if entry.pins == 0 {
                let _ = std::fs::remove_file(self.path(hash));
                if let Some(entry) = state.entries.remove(hash) {
                    state.total = state.total.saturating_sub(entry.size);
                }
            }
            return Ok(false);
        }
        state.clock += 1;
        let clock = state.clock;
        if let Some(entry) = state.entries.get_mut(hash) {
            entry.last_used = clock;
            entry.pins += 1;
        }
        Ok(true)
    }

    /// Downloads `hash` (exactly `size` bytes) into the cache and pins it.
    async fn fetch(&self, hash: &BlobHash, size: u64) -> Result<(), String> {
        let n = self.downloads.fetch_add(1, Ordering::Relaxed);
        let partial = self.partial.join(format!("{hash}.{n}"));
        let result = self.download(hash, size, &partial).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    async fn download(&self, hash: &BlobHash, size: u64, partial: &Path) -> Result<(), String> {
        let describe = |e: ClientError| match e {
            ClientError::NotFound { .. } => format!("blob {hash} is not on the orchestrator (404)"),
            ClientError::TooLarge { .. } => {
                format!("blob {hash} is larger than the manifest's {size} bytes")
            }
            other => format!("cannot fetch blob {hash}: {other}"),
        };
        let mut download = self.client.blob(hash, size).await.map_err(describe)?;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(partial)
            .await
            .map_err(|e| format!("cannot write into the cache: {e}"))?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = download.chunk().await.map_err(describe)? {
            hasher.update(&chunk);
            received += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write into the cache: {e}"))?;
        }
        if received != size {
            return Err(format!(
                "blob {hash} came with {received} bytes, not the manifest's {size}"
            ));
        }
        let actual = BlobHash::from_digest(&hasher.finalize());
        if &actual != hash {
            return Err(format!(
                "blob {hash} came with other content (its bytes hash to {actual})"
            ));
        }
        // On disk before it is trusted: the cache is not checked again after a crash.
        file.sync_all()
            .await
            .map_err(|e| format!("cannot write into the cache: {e}"))?;
        drop(file);
        tokio::fs::set_permissions(partial, std::fs::Permissions::from_mode(0o444))
            .await
            .map_err(|e| format!("cannot write into the cache: {e}"))?;
        let target = self.path(hash);
        if let Some(fan) = target.parent() {
            tokio::fs::create_dir_all(fan)
                .await
                .map_err(|e| format!("cannot write into the cache: {e}"))?;
        }
        tokio::fs::rename(partial, &target)
            .await
            .map_err(|e| format!("cannot write into the cache: {e}"))?;
        let meta = tokio::fs::symlink_metadata(&target).await.ok();
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        let previous = state.entries.insert(
            hash.clone(),
            Entry {
                size,
                modified: meta.as_ref().and_then(modified),
                last_used: clock,
                pins: 1,
            },
        );
        match previous {
            // Fetched twice at once (two jobs wanted it): one entry, both pins.
            Some(previous) => {
                if let Some(entry) = state.entries.get_mut(hash) {
                    entry.pins += previous.pins;
                }
            }
            None => state.total += size,
        }
        self.evict(&mut state);
        Ok(())
    }

    /// Removes the least recently used blobs no workspace uses until the cache holds at
    /// most its limit (pinned blobs may keep it above).
    fn evict(&self, state: &mut CacheState) {
        if state.total <= self.limit {
            return;
        }
        let mut unpinned: Vec<(u64, BlobHash)> = state
            .entries
            .iter()
            .filter(|(_, e)| e.pins == 0)
            .map(|(h, e)| (e.last_used, h.clone()))
            .collect();
        unpinned.sort();
        for (_, hash) in unpinned {
            if state.total <= self.limit {
                break;
            }
            match std::fs::remove_file(self.path(&hash)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(blob = %hash, error = %e, "cannot evict a cached blob");
                    continue;
                }
            }
            if let Some(entry) = state.entries.remove(&hash) {
                state.total = state.total.saturating_sub(entry.size);
                tracing::debug!(blob = %hash, bytes = entry.size, "evicted from the cache");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> OrchestratorClient {
        // Never reached: these tests only use what is cached.
        OrchestratorClient::new("http://127.0.0.1:9").unwrap()
    }

    fn put(dir: &Path, content: &[u8]) -> BlobHash {
        let hash = BlobHash::of(content);
        std::fs::create_dir_all(dir.join(hash.prefix())).unwrap();
        std::fs::write(dir.join(hash.prefix()).join(hash.as_str()), content).unwrap();
        hash
    }

    #[tokio::test]
    async fn the_least_recently_used_unpinned_blobs_are_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let a = put(dir.path(), b"aaaa");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = put(dir.path(), b"bbbb");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let c = put(dir.path(), b"cccc");
        std::fs::create_dir_all(dir.path().join("partial")).unwrap();
        std::fs::write(dir.path().join("partial/leftover"), b"x").unwrap();

        let cache = BlobCache::open(dir.path(), 12, client()).unwrap();
        assert_eq!(cache.total(), 12);
        assert!(!dir.path().join("partial/leftover").exists());
        let never = CancellationToken::new();
        // `a` is the oldest; using it makes `b` the least recently used.
        let (pinned_a, stats) = cache.pin_all(&[(a.clone(), 4)], &never).await.unwrap();
        assert_eq!(stats.cached, 1);
        let (pinned_c, _) = cache.pin_all(&[(c.clone(), 4)], &never).await.unwrap();
        {
            let mut state = cache.lock();
            state.total += 8; // as if 8 more bytes had arrived
            cache.evict(&mut state);
            state.total -= 8;
        }
        assert!(!cache.path(&b).exists(), "b was the least recently used");
        assert!(cache.path(&a).exists() && cache.path(&c).exists());
        // Pinned blobs stay even when the cache is over its limit...
        {
            let mut state = cache.lock();
            state.total += 100;
            cache.evict(&mut state);
            state.total -= 100;
        }
        assert!(cache.path(&a).exists() && cache.path(&c).exists());
        // ...and go once nothing uses them.
        drop(pinned_a);
        {
            let mut state = cache.lock();
            state.total += 100;
            cache.evict(&mut state);
            state.total = state.total.saturating_sub(100);
        }
        assert!(!cache.path(&a).exists());
        assert!(cache.path(&c).exists(), "still pinned");
        drop(pinned_c);
    }

    #[tokio::test]
    async fn a_changed_blob_is_not_served_and_a_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = put(dir.path(), b"aaaa");
        let cache = BlobCache::open(dir.path(), 1 << 20, client()).unwrap();
        let err = cache.try_pin(&a, 5).unwrap_err();
        assert!(err.contains("5 bytes"), "{err}");
        // Rewritten in place (a later modification time): dropped, to be fetched again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(cache.path(&a), b"AAAA").unwrap();
        assert_eq!(cache.try_pin(&a, 4), Ok(false));
        assert!(!cache.path(&a).exists());
        assert_eq!(cache.total(), 0);
    }
}
