//! The files the remote-farm protocol keeps on the orchestrator's disk, under its data
//! folder (`docs/remote-farm-protocol.md`): content-addressed blobs and the manifests
//! stored among them ([`blobs`]), and the frames nodes upload ([`frames`]). Request bodies
//! are streamed to disk a chunk at a time ([`append_body`]), hashed as they arrive, and
//! become visible under their final name only once complete, checked and synced.

pub mod blobs;
pub mod frames;

use axum::body::Body;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub use blobs::BlobStore;
pub use frames::FrameStore;

/// The protocol's files under one data folder.
pub struct Storage {
    pub blobs: BlobStore,
    pub frames: FrameStore,
}

impl Storage {
    pub fn new(config: &crate::OrchestratorConfig) -> Storage {
        Storage {
            blobs: BlobStore::new(&config.data_dir, config.max_blob_bytes),
            frames: FrameStore::new(&config.data_dir, config.max_blob_bytes),
        }
    }
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
