//! A render node's side of the remote-farm protocol (`docs/remote-farm-protocol.md`):
//! reading a manifest and its blobs from the orchestrator the node registered with, and
//! uploading the frames it renders. Downloads and uploads stream: nothing is held whole in
//! memory, and a server that goes silent for [`TRANSFER_SILENCE`] is given up on.

use super::{read_limited, ClientError, OrchestratorClient, Pins, MAX_ORCHESTRATOR_ANSWER_BYTES};
use corral_core::{BlobHash, Manifest, Problem};
use reqwest::StatusCode;
use std::path::Path;
use std::time::Duration;

/// Longest a download or upload may go without a byte moving before it is given up on.
pub const TRANSFER_SILENCE: Duration = Duration::from_secs(60);

/// Largest manifest read: 100000 files with long paths stay well below it.
pub const MAX_MANIFEST_BYTES: usize = MAX_ORCHESTRATOR_ANSWER_BYTES;

/// How long a manifest may take to arrive.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The client for transfers to a farm whose certificate is pinned by `pins` (none: any
/// plain-HTTP farm): no total timeout (a blob may take hours), a timeout on every read
/// instead, and redirects never followed.
pub(crate) fn transfer_client(pins: &Pins) -> Result<reqwest::Client, ClientError> {
    crate::builder(pins)?
        .read_timeout(TRANSFER_SILENCE)
        .build()
        .map_err(|e| ClientError::Tls(e.to_string()))
}

/// A blob being downloaded: its bytes arrive through [`BlobDownload::chunk`], never more
/// than the limit the caller set.
pub struct BlobDownload {
    url: String,
    response: reqwest::Response,
    limit: u64,
    received: u64,
    /// The size the server announced, when it did.
    pub length: Option<u64>,
}

impl BlobDownload {
    /// The next bytes; `None` once the blob has been read whole. More bytes than the
    /// limit is [`ClientError::TooLarge`], and reading stops there.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        let chunk = self
            .response
            .chunk()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.url.clone(),
                source,
            })?;
        if let Some(bytes) = &chunk {
            self.received = self.received.saturating_add(bytes.len() as u64);
            if self.received > self.limit {
                return Err(ClientError::TooLarge {
                    url: self.url.clone(),
                    limit: usize::try_from(self.limit).unwrap_or(usize::MAX),
                });
            }
        }
        Ok(chunk)
    }

    /// Where it comes from, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A frame for `PUT /api/v1/jobs/{job}/frames/{frame}`.
#[derive(Debug, Clone, Copy)]
pub struct FrameUpload<'a> {
    /// The orchestrator's job id.
    pub job: &'a str,
    pub frame: i64,
    /// The render's tag (`X-Corral-Render`): which task and lease the frame belongs to.
    pub render_tag: &'a str,
    /// The file's SHA-256 (`X-Content-SHA256`).
    pub sha256: &'a BlobHash,
    pub content_type: &'a str,
    /// The file, read as it is sent.
    pub path: &'a Path,
    /// Its size in bytes (`Content-Length`).
    pub length: u64,
}

/// The problem of a refusal, or an error naming the status, for messages.
pub(crate) async fn refusal(url: &str, resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return ClientError::NotFound {
            url: url.to_string(),
        };
    }
    if status.is_redirection() {
        return ClientError::Redirect {
            url: url.to_string(),
            status: status.as_u16(),
            location: resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map_or_else(|| "nowhere".to_string(), |l| l.chars().take(200).collect()),
        };
    }
    let body = read_limited(url, resp, 64 * 1024).await.unwrap_or_default();
    let problem = serde_json::from_slice::<Problem>(&body).unwrap_or_else(|_| {
        Problem::new(
            status.as_u16(),
            status.canonical_reason().unwrap_or("error"),
        )
        .with_detail(
            String::from_utf8_lossy(&body)
                .chars()
                .take(500)
                .collect::<String>(),
        )
    });
    ClientError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        problem: Box::new(problem),
    }
}

impl OrchestratorClient {
    /// Sends the request `make` builds to each address of the farm in turn, until one
    /// answers with success; an address that cannot be reached, or (when `try_on_404`)
    /// that lacks what is asked, passes the request to the next. Every request sent this
    /// way is idempotent. Answers the successful response with its URL.
    async fn transfer(
        &self,
        path: &str,
        segments: &[&str],
        try_on_404: bool,
        make: impl Fn(reqwest::Url) -> Result<reqwest::RequestBuilder, ClientError>,
    ) -> Result<(String, reqwest::Response), ClientError> {
        let url = self.url(path, segments)?;
        let n = self.bases.len();
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let mut target = url.clone();
            if let Ok(base) = reqwest::Url::parse(&self.bases[index]) {
                let _ = target.set_scheme(base.scheme());
                let _ = target.set_host(base.host_str());
                let _ = target.set_port(base.port());
            }
            let shown = target.to_string();
            let error = match make(target)?.headers(self.auth()).send().await {
                Err(source) => ClientError::Unreachable { url: shown, source },
                Ok(resp) if resp.status().is_success() => {
                    self.current
                        .store(index, std::sync::atomic::Ordering::Relaxed);
                    return Ok((shown, resp));
                }
                Ok(resp) => {
                    let error = refusal(&shown, resp).await;
                    if !(try_on_404 && matches!(error, ClientError::NotFound { .. })) {
                        self.current
                            .store(index, std::sync::atomic::Ordering::Relaxed);
                        return Err(error);
                    }
                    error
                }
            };
            last = Some(error);
        }
        Err(last.unwrap_or_else(|| ClientError::BadUrl(url.to_string())))
    }

    /// `GET /api/v1/manifests/{id}`: the manifest, checked by every rule of the protocol
    /// (paths, root, hashes) and against its id (the SHA-256 of its canonical form), so a
    /// server cannot hand a node another workspace than the one it was told to render.
    pub async fn manifest(&self, id: &BlobHash) -> Result<Manifest, ClientError> {
        let (url, resp) = self
            .transfer("/api/v1/manifests", &[id.as_str()], true, |u| {
                Ok(self.http.get(u).timeout(MANIFEST_TIMEOUT))
            })
            .await?;
        let body = read_limited(&url, resp, MAX_MANIFEST_BYTES).await?;
        let manifest = Manifest::from_body(&body).map_err(|e| ClientError::Decode {
            url: url.clone(),
            message: format!("not a valid manifest: `{}` {}", e.field, e.message),
        })?;
        let actual = manifest.id();
        if &actual != id {
            return Err(ClientError::Decode {
                url,
                message: format!("the manifest's content is {actual}, not {id}"),
            });
        }
        Ok(manifest)
    }

    /// `GET /api/v1/blobs/{hash}`: starts a download of at most `limit` bytes (a larger
    /// announced size is refused before any byte is read). The caller checks the hash of
    /// what arrives.
    pub async fn blob(&self, hash: &BlobHash, limit: u64) -> Result<BlobDownload, ClientError> {
        let (url, response) = self
            .transfer("/api/v1/blobs", &[hash.as_str()], true, |u| {
                Ok(self.transfer.clone().get(u))
            })
            .await?;
        let length = response.content_length();
        if length.is_some_and(|len| len > limit) {
            return Err(ClientError::TooLarge {
                url,
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            });
        }
        Ok(BlobDownload {
            url,
            response,
            limit,
            received: 0,
            length,
        })
    }

    /// `PUT /api/v1/jobs/{job}/frames/{frame}` with the frame's file as the body (read as
    /// it is sent), `X-Corral-Render`, `X-Content-SHA256` and `Content-Type`. `Ok` once
    /// the orchestrator stored it (`201`); its refusals (`409`: the render's lease moved
    /// on; `422`: the bytes did not hash to the header) are [`ClientError::Status`].
    pub async fn upload_frame(&self, frame: &FrameUpload<'_>) -> Result<(), ClientError> {
        let number = frame.frame.to_string();
        self.transfer(
            "/api/v1/jobs",
            &[frame.job, "frames", &number],
            false,
            |u| {
                let file = std::fs::File::open(frame.path)
                    .map(tokio::fs::File::from_std)
                    .map_err(|source| ClientError::File {
                        path: frame.path.display().to_string(),
                        source,
                    })?;
                let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
                Ok(self
                    .transfer
                    .clone()
                    .put(u)
                    .header("X-Corral-Render", frame.render_tag)
                    .header("X-Content-SHA256", frame.sha256.as_str())
                    .header(reqwest::header::CONTENT_TYPE, frame.content_type)
                    .header(reqwest::header::CONTENT_LENGTH, frame.length)
                    .body(body))
            },
        )
        .await
        .map(|_| ())
    }
}
