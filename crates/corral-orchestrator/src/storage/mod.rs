//! The files the remote-farm protocol keeps on the orchestrator's disk, under its data
//! folder (`docs/remote-farm-protocol.md`): content-addressed blobs and the manifests
//! stored among them ([`blobs`]), and the frames nodes upload ([`frames`]). Request bodies
//! are streamed to disk a chunk at a time ([`append_body`]), hashed as they arrive, and
//! become visible under their final name only once complete, checked and synced. A body
//! is accepted only while the disk keeps its reserve ([`Storage::ensure_room`]); what no
//! job needs any more is collected ([`Storage::collect`], run by `workers::collector`).

pub mod blobs;
pub mod frames;

use axum::body::Body;
use corral_core::BlobHash;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

pub use blobs::BlobStore;
pub use frames::FrameStore;

/// The protocol's files under one data folder.
pub struct Storage {
    pub blobs: BlobStore,
    pub frames: FrameStore,
    data_dir: PathBuf,
    /// Free bytes the data folder keeps (`--min-free-space`).
    min_free: u64,
}

impl Storage {
    pub fn new(config: &crate::OrchestratorConfig) -> Storage {
        Storage {
            blobs: BlobStore::new(&config.data_dir, config.max_blob_bytes),
            frames: FrameStore::new(&config.data_dir, config.max_blob_bytes),
            data_dir: config.data_dir.clone(),
            min_free: config.min_free_bytes,
        }
    }

    /// Refuses a body of `len` bytes ([`TransferError::DiskFull`], a 507) when writing it
    /// would leave the data folder's file system less than its reserve, before any byte is
    /// written: a disk that fills up while uploads stream fails them half way, and leaves
    /// the database (on the same disk, by default) no room to record anything.
    pub async fn ensure_room(&self, len: u64) -> Result<(), TransferError> {
        let dir = self.data_dir.clone();
        let stat = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&dir))
            .await
            .map_err(|e| TransferError::Io(e.to_string()))?
            .map_err(|e| TransferError::Io(format!("cannot read the free space: {e}")))?;
        // Blocks an unprivileged process may use, not those kept for root. (The types are
        // the platform's: u64 here, narrower elsewhere.)
        #[allow(clippy::useless_conversion)]
        let free =
            u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
        if free < len.saturating_add(self.min_free) {
            return Err(TransferError::DiskFull {
                held: 0,
                detail: format!(
                    "{free} byte(s) free; this upload needs {len} and the farm keeps {} free (--min-free-space)",
                    self.min_free
                ),
            });
        }
        Ok(())
    }

    /// Deletes what nothing needs any more: blobs not in `live` whose last use is before
    /// `cutoff`, and unfinished uploads (of blobs and of frames) untouched since
    /// `partial_cutoff`. See `workers::collector` for how `live` and the cutoffs are made
    /// so that a blob being used right now is never taken.
    pub async fn collect(
        &self,
        live: &std::collections::HashSet<BlobHash>,
        cutoff: SystemTime,
        partial_cutoff: SystemTime,
    ) -> std::io::Result<Collected> {
        let mut collected = self.blobs.collect(live, cutoff, partial_cutoff).await?;
        collected.partials += self.frames.sweep_partials(partial_cutoff).await?;
        Ok(collected)
    }
}

/// What one collection deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub blobs: u64,
    pub bytes: u64,
    /// Unfinished uploads (blobs' and frames').
    pub partials: u64,
}

/// How long a blob no job names is kept after its last use, by default.
pub const DEFAULT_BLOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Free space the data folder keeps by default: room for the database and logs.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;
/// The longest an unfinished upload is kept untouched (less when the retention is shorter).
pub const MAX_PARTIAL_AGE: Duration = Duration::from_secs(24 * 3600);

/// When a file was last changed (its last use, for blobs: see [`BlobStore::touch`]).
pub(crate) async fn modified(path: &Path) -> Option<SystemTime> {
    tokio::fs::symlink_metadata(path)
        .await
        .ok()?
        .modified()
        .ok()
}

/// The entries of a folder (none when it does not exist).
pub(crate) async fn entries(dir: &Path) -> std::io::Result<Vec<tokio::fs::DirEntry>> {
    let mut read = match tokio::fs::read_dir(dir).await {
        Ok(read) => read,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    while let Some(entry) = read.next_entry().await? {
        found.push(entry);
    }
    Ok(found)
}

/// Largest blob or frame by default (a `.blend` with packed textures can be large).
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 64 << 30;

/// An upload body that sends nothing for this long is given up (what was written stays,
/// for a blob, so the upload can resume). Not a total deadline like the JSON bodies':
/// a large scene over a slow link takes as long as it takes while bytes keep coming.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an upload or a read of stored files failed; mapped to answers in [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The upload does not start where the stored part ends.
    #[error("this upload starts at byte {sent}, but the farm holds {held} byte(s) of it; continue from {held}")]
    OffsetMismatch { sent: u64, held: u64 },
    /// Another request is uploading the same blob now.
    #[error("another upload of this blob is in progress; the farm holds {held} byte(s) of it")]
    Busy { held: u64 },
    /// The bytes do not hash to the name they were sent under; nothing was kept.
    #[error("the bytes hash to {actual}, not to {expected}; nothing was kept")]
    HashMismatch {
        field: &'static str,
        expected: String,
        actual: String,
    },
    #[error("larger than the {limit} bytes this farm accepts")]
    TooLarge { limit: u64 },
    /// More bytes arrived than `Upload-Length` (or the size announced) allows.
    #[error("the body goes past the announced length of {total} bytes; nothing of it was kept")]
    TooLong { total: u64 },
    /// The disk is full; what was written before stays.
    #[error("the orchestrator's disk is full ({detail}); {held} byte(s) are held")]
    DiskFull { held: u64, detail: String },
    #[error("the request body stopped: {0}")]
    BodyBroken(String),
    #[error("the request body sent nothing for {} s", BODY_IDLE_TIMEOUT.as_secs())]
    BodyIdle,
    #[error("{0}")]
    Io(String),
}

/// The body's bytes appended to `file`, fed to `hasher`, at most `room` of them. Returns
/// how many were written. On [`TransferError::TooLong`] the bytes of this body that were
/// written are still in the file: the caller cuts it back.
pub(crate) async fn append_body(
    file: &mut tokio::fs::File,
    body: Body,
    hasher: &mut Sha256,
    room: u64,
) -> Result<u64, TransferError> {
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(BODY_IDLE_TIMEOUT, stream.next()).await {
            Err(_) => return Err(TransferError::BodyIdle),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(TransferError::BodyBroken(root_message(&e))),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let len = chunk.len() as u64;
        if written + len > room {
            return Err(TransferError::TooLong { total: room });
        }
        file.write_all(&chunk).await.map_err(io_error)?;
        hasher.update(&chunk);
        written += len;
    }
    file.flush().await.map_err(io_error)?;
    Ok(written)
}

/// A write error, told apart: a full disk is the farm's state, not a fault (the caller
/// fills in how much is held).
pub(crate) fn io_error(e: std::io::Error) -> TransferError {
    if is_disk_full(&e) {
        TransferError::DiskFull {
            held: 0,
            detail: e.to_string(),
        }
    } else {
        TransferError::Io(e.to_string())
    }
}

/// `ENOSPC` or `EDQUOT`.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// The innermost cause of a body error, cut short.
fn root_message(e: &axum::Error) -> String {
    let mut inner: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string().chars().take(200).collect()
}

/// Syncs a folder, so a rename into it survives a power cut.
pub(crate) async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

/// A file opened once, with its size and the SHA-256 of the bytes read through that same
/// open file, rewound to its start: what is served is what was hashed, even if the path
/// is replaced (renamed over) in between.
pub(crate) async fn open_hashed(path: &Path) -> std::io::Result<(tokio::fs::File, u64, BlobHash)> {
    let path = path.to_path_buf();
    let (file, size, hash) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size: u64 = 0;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        file.seek(std::io::SeekFrom::Start(0))?;
        Ok::<_, std::io::Error>((file, size, BlobHash::from_digest(&hasher.finalize())))
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok((tokio::fs::File::from_std(file), size, hash))
}

/// The SHA-256 of a file's first `len` bytes (all of it when it is shorter), read off the
/// async runtime.
pub(crate) async fn hash_prefix(path: &Path, len: u64) -> std::io::Result<Sha256> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let file = std::fs::File::open(&path)?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file).take(len);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher)
    })
    .await
    .map_err(std::io::Error::other)?
}
