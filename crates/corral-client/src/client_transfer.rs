//! The artist's side of the remote-farm protocol (`docs/remote-farm-protocol.md`): asking
//! which blobs the farm lacks, uploading them resumably (streamed from the file, never
//! whole in memory), posting the manifest, and downloading rendered frames. Every call goes
//! to the one orchestrator the client is talking to, never failing over: blobs live in
//! that orchestrator's data folder only, so a scene must be uploaded to, and its job sent
//! to, the same one.

use super::node_transfer::refusal;
use super::{decode, ClientError, OrchestratorClient, MAX_ORCHESTRATOR_ANSWER_BYTES};
use corral_core::manifest::{ManifestCreated, MissingBlobs, MissingQuery, MAX_MISSING_QUERY};
use corral_core::{BlobHash, Manifest};
use futures_util::StreamExt;
use reqwest::StatusCode;
use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncSeekExt;

/// How long a small request of this module (a question, a manifest) may take.
const QUESTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What the farm holds of a blob (`HEAD /api/v1/blobs/{H}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Complete, of this size.
    Complete(u64),
    /// Not complete: this many bytes of an upload are held (0 when none).
    Partial(u64),
}

/// How one `PUT` of a blob ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadStep {
    /// `201`: the blob is complete and its hash checked.
    Complete,
    /// `204`: a part was stored; go on from this offset.
    Partial(u64),
}

/// A frame being downloaded: its bytes arrive through [`FrameDownload::chunk`].
pub struct FrameDownload {
    url: String,
    response: reqwest::Response,
    /// `X-Content-SHA256`: what the bytes must hash to.
    pub sha256: BlobHash,
    /// The frame's type (`Content-Type`), for its file's extension.
    pub content_type: String,
}

impl FrameDownload {
    /// The next bytes; `None` once the frame has been read whole.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        self.response
            .chunk()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.url.clone(),
                source,
            })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl OrchestratorClient {
    /// `POST /api/v1/blobs/missing`: those of `hashes` the farm lacks, in the order asked
    /// (asked in batches of the protocol's limit).
    pub async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>, ClientError> {
        let mut missing = Vec::new();
        for batch in hashes.chunks(MAX_MISSING_QUERY) {
            let url = self.url("/api/v1/blobs/missing", &[])?;
            let body = MissingQuery {
                hashes: batch.to_vec(),
            };
            let resp = self
                .http
                .post(url.clone())
                .json(&body)
                .timeout(QUESTION_TIMEOUT)
                .headers(self.auth())
                .send()
                .await;
            let answer: MissingBlobs =
                decode(url.as_str(), resp, MAX_ORCHESTRATOR_ANSWER_BYTES).await?;
            missing.extend(answer.missing);
        }
        Ok(missing)
    }

    /// `HEAD /api/v1/blobs/{hash}`: whether the blob is complete, or how much of an upload
    /// the farm holds.
    pub async fn blob_state(&self, hash: &BlobHash) -> Result<BlobState, ClientError> {
        let url = self.url("/api/v1/blobs", &[hash.as_str()])?;
        let resp = self
            .http
            .head(url.clone())
            .timeout(QUESTION_TIMEOUT)
            .headers(self.auth())
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        match resp.status() {
            StatusCode::OK => Ok(BlobState::Complete(
                header_u64(&resp, "content-length").unwrap_or(0),
            )),
            // A 404 without `Upload-Offset` is not this protocol's answer.
            StatusCode::NOT_FOUND => match header_u64(&resp, "upload-offset") {
                Some(offset) => Ok(BlobState::Partial(offset)),
                None => Err(ClientError::Decode {
                    url: url.to_string(),
                    message: "a 404 without Upload-Offset".into(),
                }),
            },
            _ => Err(refusal(url.as_str(), resp).await),
        }
    }

    /// `PUT /api/v1/blobs/{hash}` with the bytes of `path` from `offset` to its end
    /// (`total` bytes in all), streamed from the file; `sent` is told of every chunk read
    /// for sending (a progress bar). A refusal is [`ClientError::Status`] (`409`: the farm
    /// holds another offset, ask [`Self::blob_state`]); a lost connection is
    /// [`ClientError::Unreachable`], after which the upload resumes from `HEAD`.
    pub async fn upload_blob(
        &self,
        hash: &BlobHash,
        path: &Path,
        offset: u64,
        total: u64,
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<UploadStep, ClientError> {
        let url = self.url("/api/v1/blobs", &[hash.as_str()])?;
        let file_error = |source| ClientError::File {
            path: path.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(file_error)?;
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(file_error)?;
        let length = total.saturating_sub(offset);
        // Never more than the announced length, even if the file grew meanwhile: the farm
        // refuses a body longer than `Upload-Length` allows.
        let limited = tokio::io::AsyncReadExt::take(file, length);
        let stream = tokio_util::io::ReaderStream::new(limited).inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                sent(bytes.len() as u64);
            }
        });
        let resp = self
            .transfer
            .clone()
            .put(url.clone())
            .header("Upload-Offset", offset)
            .header("Upload-Length", total)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream))
            .headers(self.auth())
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        match resp.status() {
            StatusCode::CREATED => Ok(UploadStep::Complete),
            StatusCode::NO_CONTENT => match header_u64(&resp, "upload-offset") {
                Some(next) => Ok(UploadStep::Partial(next)),
                None => Err(ClientError::Decode {
                    url: url.to_string(),
                    message: "a 204 without Upload-Offset".into(),
                }),
            },
            _ => Err(refusal(url.as_str(), resp).await),
        }
    }

    /// `POST /api/v1/manifests`: the manifest's id once the farm stored it. A `409` (a
    /// blob is not complete on the farm) is [`ClientError::Status`].
    pub async fn create_manifest(&self, manifest: &Manifest) -> Result<BlobHash, ClientError> {
        let url = self.url("/api/v1/manifests", &[])?;
        let resp = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(manifest.canonical_json())
            .timeout(QUESTION_TIMEOUT)
            .headers(self.auth())
            .send()
            .await;
        let created: ManifestCreated =
            decode(url.as_str(), resp, MAX_ORCHESTRATOR_ANSWER_BYTES).await?;
        Ok(created.id)
    }

    /// `GET /api/v1/jobs/{job}/frames/{frame}`: starts a frame's download. With
    /// `if_not`, the hash of a copy held already: `None` when the farm's frame is that
    /// one (`304`), so nothing is downloaded.
    pub async fn frame(
        &self,
        job: &str,
        frame: i64,
        if_not: Option<&BlobHash>,
    ) -> Result<Option<FrameDownload>, ClientError> {
        let number = frame.to_string();
        let url = self.url("/api/v1/jobs", &[job, "frames", &number])?;
        let mut req = self.transfer.clone().get(url.clone());
        if let Some(hash) = if_not {
            req = req.header(reqwest::header::IF_NONE_MATCH, format!("\"{hash}\""));
        }
        let resp =
            req.headers(self.auth())
                .send()
                .await
                .map_err(|source| ClientError::Unreachable {
                    url: url.to_string(),
                    source,
                })?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => {
                let text = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let sha256 = text("x-content-sha256")
                    .and_then(|h| BlobHash::parse("X-Content-SHA256", &h).ok())
                    .ok_or_else(|| ClientError::Decode {
                        url: url.to_string(),
                        message: "a frame without a valid X-Content-SHA256".into(),
                    })?;
                let content_type = text("content-type").unwrap_or_default();
                Ok(Some(FrameDownload {
                    url: url.to_string(),
                    response: resp,
                    sha256,
                    content_type,
                }))
            }
            _ => Err(refusal(url.as_str(), resp).await),
        }
    }
}
