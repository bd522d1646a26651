//! Typed HTTP clients for Corral's APIs: [`NodeClient`] for a render node (used by the
//! orchestrator and tests) and [`OrchestratorClient`] for an orchestrator's `/api/v1` (used
//! by nodes to register and by the `corral` command line). Errors separate "could not reach
//! it" from "it said no", because the orchestrator treats the first as a node problem and
//! the second as a task problem, and the command line explains them differently.

mod client_transfer;
mod node_transfer;
mod pin;

pub use client_transfer::{BlobState, FrameDownload, UploadStep};
pub use node_transfer::{BlobDownload, FrameUpload, MAX_MANIFEST_BYTES, TRANSFER_SILENCE};
pub use pin::Pins;

use corral_core::node_api::{JobRequest, JobView, NodeInfo};
use corral_core::orchestrator_api::{
    Event, FramePage, FrameView, JobDetail, JobPage, JobState, JobSummary, NodeView, SubmitJob,
    TaskPage, TaskView,
};
use corral_core::Problem;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, reset, timed out, DNS failure, or a server whose
    /// certificate is not the one pinned.
    #[error("{url} is unreachable: {}", transport_cause(source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered 404.
    #[error("{url}: not found")]
    NotFound { url: String },
    /// The server refused the request (4xx other than 404) or failed (5xx).
    #[error("{url} answered {status}: {}", problem.detail.as_deref().unwrap_or(&problem.title))]
    Status {
        url: String,
        status: u16,
        problem: Box<Problem>,
    },
    /// The answer was not what the API promises.
    #[error("{url} sent an answer that is not valid JSON for this API: {message}")]
    Decode { url: String, message: String },
    /// The answer was larger than the caller allows; reading stopped at the limit.
    #[error("{url} sent an answer larger than {limit} bytes; it was not read")]
    TooLarge { url: String, limit: usize },
    /// A file this side was to send could not be read.
    #[error("cannot read `{path}`: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The server answered with a redirect, which Corral never follows: a node or farm
    /// that sends one elsewhere is not the server it claims to be.
    #[error("{url} answered {status} (a redirect to {location}); redirects are not followed")]
    Redirect {
        url: String,
        status: u16,
        location: String,
    },
    #[error("invalid server address `{0}`")]
    BadUrl(String),
    /// The TLS client for a pinned certificate could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Why a request got no answer, in one phrase: a pinned certificate's refusal in its own
/// words, else the innermost error (`Connection refused`, not reqwest's wrapper).
pub fn transport_cause(e: &reqwest::Error) -> String {
    if let Some(why) = pin_refusal(e) {
        return why;
    }
    let mut inner: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// When the server presented a certificate other than the one pinned: the refusal, in
/// words a person can act on.
pub fn pin_refusal(e: &reqwest::Error) -> Option<String> {
    let mut inner: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = inner {
        if let Some(pin::Refusal(why)) = pin::refusal(err) {
            return Some(why);
        }
        // An I/O error's `source` skips the error it wraps (rustls's, here): descend
        // into the wrapped error itself.
        inner = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|wrapped| wrapped as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

impl ClientError {
    /// True when the server could not be reached at all (as opposed to answering no).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

/// A client for one render node's API (`POST /job`, `GET /job/{id}`, ...).
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    base: String,
    /// The node's secret, sent as `Authorization: Bearer` (a node that joined a farm
    /// answers only its orchestrator).
    bearer: Option<String>,
}

/// `Authorization: Bearer TOKEN`, or no header.
fn bearer_headers(token: Option<&str>) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
    }
    headers
}

/// How long a plain request may take; long-polls add their wait on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read from a render node. A node's answers are a job view (a log tail of
/// bounded lines and one output path per saved frame of a chunk), a job list or its info;
/// anything larger is a broken or hostile node, and reading it would let the node choose
/// how much of the orchestrator's memory it takes.
pub const MAX_NODE_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Largest answer the command line reads from an orchestrator.
pub const MAX_ORCHESTRATOR_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The one way Corral builds an HTTP client: short connect timeout, and redirects never
/// followed (a redirect from a node would make the orchestrator send a task, and echo the
/// answer of, any address the node names).
pub fn http_client() -> reqwest::Client {
    builder(&Pins::none())
        .and_then(|b| b.build().map_err(|e| ClientError::Tls(e.to_string())))
        // Building fails only when the TLS backend cannot initialise, which is a broken
        // installation, not an input: the default client has the same policy but for
        // timeouts, so fall back to it rather than fail every request.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// [`http_client`] that accepts only a server whose certificate `pins` names (with no
/// pins, the same as [`http_client`]). A failure is an error, never a client without the
/// pin.
pub fn http_client_pinned(pins: &Pins) -> Result<reqwest::Client, ClientError> {
    builder(pins)?
        .build()
        .map_err(|e| ClientError::Tls(e.to_string()))
}

/// What every client of Corral's shares: timeouts, no redirects, and the pins.
pub(crate) fn builder(pins: &Pins) -> Result<reqwest::ClientBuilder, ClientError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if pins.is_empty() {
        return Ok(builder);
    }
    let config = pins
        .tls_config()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    // A pinned client never speaks plain HTTP: its token must not cross the network
    // readable because an address said http://.
    Ok(builder.use_preconfigured_tls(config).https_only(true))
}

impl NodeClient {
    /// A client for the node at `base` (e.g. `http://10.0.0.5:3000`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        Self::with_http(http_client(), base)
    }

    /// Shares one connection pool between many node clients (build it with
    /// [`http_client`], so redirects are not followed).
    pub fn with_http(http: reqwest::Client, base: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(base));
        }
        Ok(NodeClient {
            http,
            base,
            bearer: None,
        })
    }

    /// Sends `secret` as `Authorization: Bearer` on every call.
    pub fn with_bearer(mut self, secret: Option<&str>) -> Self {
        self.bearer = secret.map(str::to_string);
        self
    }

    fn auth(&self) -> reqwest::header::HeaderMap {
        bearer_headers(self.bearer.as_deref())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn submit(&self, req: &JobRequest) -> Result<JobView, ClientError> {
        let url = format!("{}/job", self.base);
        let resp = self
            .http
            .post(&url)
            .json(req)
            .timeout(REQUEST_TIMEOUT)
            .headers(self.auth())
            .send()
            .await;
        decode(&url, resp, MAX_NODE_ANSWER_BYTES).await
    }

    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        let url = format!("{}/job/{id}", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .headers(self.auth())
            .send()
            .await;
        decode(&url, resp, MAX_NODE_ANSWER_BYTES).await
    }

    /// Long-polls job `id` until its version passes `since` or `wait` runs out.
    /// `GET /job/{id}?wait=&since=[&batch=]`: the render once its version passes `since`
    /// (progress short of its end no sooner than `batch` after asking), or at the end of
    /// `wait`.
    pub async fn wait(
        &self,
        id: &str,
        since: u64,
        wait: Duration,
        batch: Duration,
    ) -> Result<JobView, ClientError> {
        let mut url = format!(
            "{}/job/{id}?wait={}&since={since}",
            self.base,
            wait.as_secs_f64()
        );
        // Only when asked: a node of an earlier version refuses a parameter it does not
        // know.
        if !batch.is_zero() {
            url.push_str(&format!("&batch={}", batch.as_secs_f64()));
        }
        let resp = self
            .http
            .get(&url)
            .timeout(wait + REQUEST_TIMEOUT)
            .headers(self.auth())
            .send()
            .await;
        decode(&url, resp, MAX_NODE_ANSWER_BYTES).await
    }

    pub async fn cancel(&self, id: &str) -> Result<JobView, ClientError> {
        let url = format!("{}/job/{id}", self.base);
        let resp = self
            .http
            .delete(&url)
            .timeout(REQUEST_TIMEOUT)
            .headers(self.auth())
            .send()
            .await;
        decode(&url, resp, MAX_NODE_ANSWER_BYTES).await
    }

    /// `POST /job/{id}/truncate`: ends the render after frame `to`, or after the frame it
    /// is rendering when that is later; answers the render's last frame from now on. A
    /// render that has ended, or has no frame left to give up, is a `409`
    /// ([`ClientError::Status`]).
    pub async fn truncate(&self, id: &str, to: i64) -> Result<i64, ClientError> {
        let url = format!("{}/job/{id}/truncate", self.base);
        let resp = self
            .http
            .post(&url)
            .json(&corral_core::node_api::TruncateRequest { to: Some(to) })
            .timeout(REQUEST_TIMEOUT)
            .headers(self.auth())
            .send()
            .await;
        decode::<corral_core::node_api::TruncateAnswer>(&url, resp, MAX_NODE_ANSWER_BYTES)
            .await
            .map(|answer| answer.to)
    }

    pub async fn jobs(&self) -> Result<Vec<JobView>, ClientError> {
        let url = format!("{}/jobs", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .headers(self.auth())
            .send()
            .await;
        decode(&url, resp, MAX_NODE_ANSWER_BYTES).await
    }

    pub async fn info(&self) -> Result<NodeInfo, ClientError> {
        let url = format!("{}/info", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .headers(self.auth())
            .send()
            .await;
        decode(&url, resp, MAX_NODE_ANSWER_BYTES).await
    }

    /// `GET /job/{id}/log`: the render's whole Blender log (at most
    /// [`MAX_NODE_ANSWER_BYTES`]).
    pub async fn log(&self, id: &str) -> Result<String, ClientError> {
        let url = format!("{}/job/{id}/log", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .headers(self.auth())
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(ClientError::Redirect {
                url,
                status: status.as_u16(),
                location: "elsewhere".into(),
            });
        }
        let body = read_limited(&url, resp, MAX_NODE_ANSWER_BYTES).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound { url });
        }
        if !status.is_success() {
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                problem: Box::new(Problem::new(status.as_u16(), "the node refused")),
            });
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// Turns a response into `T`, or into the error that says what went wrong. At most
/// `limit` bytes of the body are read: a larger answer is [`ClientError::TooLarge`], found
/// from its `Content-Length` before reading or by counting while it streams.
pub async fn decode<T: DeserializeOwned>(
    url: &str,
    resp: Result<reqwest::Response, reqwest::Error>,
    limit: usize,
) -> Result<T, ClientError> {
    let resp = resp.map_err(|source| ClientError::Unreachable {
        url: url.to_string(),
        source,
    })?;
    let status = resp.status();
    if status.is_redirection() {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map_or_else(|| "nowhere".to_string(), |l| l.chars().take(200).collect());
        return Err(ClientError::Redirect {
            url: url.to_string(),
            status: status.as_u16(),
            location,
        });
    }
    let body = read_limited(url, resp, limit).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(ClientError::NotFound {
            url: url.to_string(),
        });
    }
    if status.is_client_error() || status.is_server_error() {
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
        return Err(ClientError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            problem: Box::new(problem),
        });
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
        url: url.to_string(),
        message: e.to_string(),
    })
}

/// Reads a response body, stopping (and dropping the connection) past `limit` bytes.
async fn read_limited(
    url: &str,
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::TooLarge {
        url: url.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
}

/// A client for an orchestrator's native API (`/api/v1`). It may know several addresses
/// of one farm (orchestrators sharing a database): a request that cannot reach one tries
/// the next, and the one that answered is tried first from then on.
#[derive(Debug, Clone)]
pub struct OrchestratorClient {
    http: reqwest::Client,
    /// For blobs and frames: no total timeout, a read timeout instead; same pins.
    transfer: reqwest::Client,
    bases: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    /// The token sent as `Authorization: Bearer` (a client token for people; for a node,
    /// its join token until the orchestrator hands it its own credential). Shared by
    /// clones, so the node's transfers use the credential once registration set it.
    bearer: Arc<std::sync::RwLock<Option<String>>>,
}

/// What `corral up` announces at [`LOCAL_FARM_PATH`] besides the orchestrator's API: the
/// folders its in-process nodes use, so `corral submit` can name a scene relative to the
/// scenes folder and say where frames land. A farm of separate machines has no such route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalFarm {
    /// Canonical folder per-job scenes are confined to (the nodes' `scenes_root`).
    pub scenes: String,
    /// Canonical folder the nodes write frames under.
    pub output: String,
    /// Render nodes in the local farm.
    pub nodes: u32,
    /// Blender threads per node (0: every core).
    pub threads: u32,
}

/// A job with every task and frame (the API pages them; [`OrchestratorClient::full_job`]
/// reads every page).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FullJob {
    #[serde(flatten)]
    pub job: JobSummary,
    pub tasks: Vec<TaskView>,
    pub frames: Vec<FrameView>,
}

/// Longest line read from an event stream: an event is a few hundred bytes; a server that
/// sends more without a line break is not a Corral farm.
pub const MAX_EVENT_LINE_BYTES: usize = 1024 * 1024;

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Server-Sent Events from an orchestrator, read one [`Event`] at a time.
pub struct EventStream {
    url: String,
    body: ByteStream,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the server closed the stream (it is shutting down).
    /// Lines that are not a Corral event (comments, keep-alives) are skipped.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if let Some(data) = line.strip_prefix(b"data:") {
                    if let Ok(event) = serde_json::from_slice::<Event>(data.trim_ascii()) {
                        return Some(Ok(event));
                    }
                }
            }
            if self.buf.len() > MAX_EVENT_LINE_BYTES {
                return Some(Err(ClientError::TooLarge {
                    url: self.url.clone(),
                    limit: MAX_EVENT_LINE_BYTES,
                }));
            }
            match self.body.next().await? {
                Ok(chunk) => self.buf.extend_from_slice(&chunk),
                Err(source) => {
                    return Some(Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        source,
                    }))
                }
            }
        }
    }
}

/// Where `corral up` serves [`LocalFarm`].
pub const LOCAL_FARM_PATH: &str = "/api/v1/local-farm";

impl OrchestratorClient {
    pub fn new(base: &str) -> Result<Self, ClientError> {
        Self::with_bases(&[base.to_string()])
    }

    /// A client for a farm reachable at any of `bases`, tried in order.
    pub fn with_bases(bases: &[String]) -> Result<Self, ClientError> {
        Self::pinned(bases, &Pins::none())
    }

    /// [`OrchestratorClient::with_bases`] for a farm whose certificate is one of `pins`
    /// (its `https://` addresses are accepted only with that certificate).
    pub fn pinned(bases: &[String], pins: &Pins) -> Result<Self, ClientError> {
        let mut checked = Vec::with_capacity(bases.len());
        for base in bases {
            let base = base.trim_end_matches('/').to_string();
            if !(base.starts_with("http://") || base.starts_with("https://"))
                || reqwest::Url::parse(&base).is_err()
            {
                return Err(ClientError::BadUrl(base));
            }
            checked.push(base);
        }
        if checked.is_empty() {
            return Err(ClientError::BadUrl(String::new()));
        }
        if !pins.is_empty() {
            if let Some(plain) = checked.iter().find(|b| !b.starts_with("https://")) {
                return Err(ClientError::Tls(format!(
                    "{plain} is plain HTTP, but a certificate fingerprint was given: a pinned farm is reached over https://"
                )));
            }
        }
        Ok(OrchestratorClient {
            http: http_client_pinned(pins)?,
            transfer: node_transfer::transfer_client(pins)?,
            bases: Arc::new(checked),
            current: Arc::new(AtomicUsize::new(0)),
            bearer: Arc::new(std::sync::RwLock::new(None)),
        })
    }

    /// Sends `token` as `Authorization: Bearer` on every request from now on (every clone
    /// of this client too).
    pub fn set_token(&self, token: Option<String>) {
        if let Ok(mut bearer) = self.bearer.write() {
            *bearer = token;
        }
    }

    /// The `Authorization` header for the current token, if any.
    pub(crate) fn auth(&self) -> reqwest::header::HeaderMap {
        let bearer = self.bearer.read().ok().and_then(|b| b.clone());
        bearer_headers(bearer.as_deref())
    }

    /// The address requests go to first (the last one that answered).
    pub fn base(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.bases.len();
        &self.bases[i]
    }

    /// Every address of the farm, in the order given.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// `base` + `/api/v1/...` + `segments`, each segment percent-encoded, so an id typed by
    /// a user (`../metrics`, `a?b`) stays one path segment and names nothing.
    fn url(&self, path: &str, segments: &[&str]) -> Result<reqwest::Url, ClientError> {
        let base = self.base();
        let mut url = reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|_| ClientError::BadUrl(base.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| ClientError::BadUrl(base.to_string()))?
            .extend(segments);
        Ok(url)
    }

    /// Sends a request built by `make` for each address in turn until one is reached.
    /// A request that may have arrived (a timeout after sending) is tried elsewhere only
    /// when `idempotent`: a second submission of a job must not follow a first that was
    /// stored.
    async fn send<T: DeserializeOwned>(
        &self,
        url: reqwest::Url,
        idempotent: bool,
        make: impl Fn(reqwest::Url) -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let mut target = url.clone();
            if let Ok(base) = reqwest::Url::parse(&self.bases[index]) {
                let _ = target.set_scheme(base.scheme());
                let _ = target.set_host(base.host_str());
                let _ = target.set_port(base.port());
            }
            let answer = decode(
                target.as_str(),
                make(target.clone()).headers(self.auth()).send().await,
                MAX_ORCHESTRATOR_ANSWER_BYTES,
            )
            .await;
            match answer {
                Err(ClientError::Unreachable { url, source })
                    if n > 1 && (idempotent || source.is_connect()) =>
                {
                    last = Some(ClientError::Unreachable { url, source });
                }
                answer => {
                    self.current.store(index, Ordering::Relaxed);
                    return answer;
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::BadUrl(url.to_string())))
    }

    async fn get<T: DeserializeOwned>(&self, url: reqwest::Url) -> Result<T, ClientError> {
        self.send(url, true, |u| self.http.get(u).timeout(REQUEST_TIMEOUT))
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        url: reqwest::Url,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<T, ClientError> {
        self.send(url, idempotent, |u| {
            let req = self.http.post(u).timeout(timeout);
            match body {
                Some(body) => req.json(body),
                None => req,
            }
        })
        .await
    }

    /// Announces a render node reachable at `node_url` (also its heartbeat), with the
    /// secret the orchestrator is to send on its calls to the node, and the fingerprint of
    /// the certificate the node serves HTTPS with, if any. Under a join token the answer
    /// carries the node's own credential ([`NodeView::credential`]), for the caller to
    /// [`set_token`](Self::set_token).
    pub async fn register_node(
        &self,
        node_url: &str,
        secret: Option<&str>,
        tls: Option<&corral_core::tls::Fingerprint>,
    ) -> Result<NodeView, ClientError> {
        let url = self.url("/api/v1/nodes", &[])?;
        let body = corral_core::orchestrator_api::RegisterNode {
            url: Some(node_url.to_string()),
            secret: secret.map(str::to_string),
            fingerprint: tls.map(|fp| fp.to_string()),
        };
        // Registering twice is harmless: it is also the heartbeat.
        self.post(url, Some(&body), REQUEST_TIMEOUT, true).await
    }

    /// Submits a job; the answer comes once it is stored.
    pub async fn submit(&self, job: &SubmitJob) -> Result<JobSummary, ClientError> {
        let url = self.url("/api/v1/jobs", &[])?;
        self.post(url, Some(job), REQUEST_TIMEOUT, false).await
    }

    /// A page of jobs, newest first, optionally only those in `state`.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, ClientError> {
        let mut url = self.url("/api/v1/jobs", &[])?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(state) = state {
                query.append_pair("state", state.as_str());
            }
            query
                .append_pair("offset", &offset.to_string())
                .append_pair("limit", &limit.to_string());
        }
        self.get(url).await
    }

    /// A job with its tasks and frames. An unknown id is [`ClientError::NotFound`].
    pub async fn job(&self, id: &str) -> Result<JobDetail, ClientError> {
        self.get(self.url("/api/v1/jobs", &[id])?).await
    }

    /// A page of a job's tasks.
    pub async fn tasks(&self, id: &str, offset: u64, limit: u64) -> Result<TaskPage, ClientError> {
        let mut url = self.url("/api/v1/jobs", &[id, "tasks"])?;
        url.query_pairs_mut()
            .append_pair("offset", &offset.to_string())
            .append_pair("limit", &limit.to_string());
        self.get(url).await
    }

    /// A page of a job's frames, from its first frame + `offset`.
    pub async fn frames(
        &self,
        id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<FramePage, ClientError> {
        let mut url = self.url("/api/v1/jobs", &[id, "frames"])?;
        url.query_pairs_mut()
            .append_pair("offset", &offset.to_string())
            .append_pair("limit", &limit.to_string());
        self.get(url).await
    }

    /// A job with every task and frame, read page by page.
    pub async fn full_job(&self, id: &str) -> Result<FullJob, ClientError> {
        let detail = self.job(id).await?;
        let mut tasks = detail.tasks;
        while (tasks.len() as u64) < detail.job.tasks_total {
            let page = self.tasks(id, tasks.len() as u64, 500).await?;
            if page.tasks.is_empty() {
                break;
            }
            tasks.extend(page.tasks);
        }
        let mut frames = Vec::new();
        while (frames.len() as u64) < detail.job.frames_total {
            let page = self.frames(id, frames.len() as u64, 5000).await?;
            if page.frames.is_empty() {
                break;
            }
            frames.extend(page.frames);
        }
        Ok(FullJob {
            job: detail.job,
            tasks,
            frames,
        })
    }

    /// The farm's event stream (`GET /api/v1/events`): every job, task, frame and node
    /// change from now on, as it is committed.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let url = self.url("/api/v1/events", &[])?;
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let target = match reqwest::Url::parse(&self.bases[index]) {
                Ok(base) => base.join("/api/v1/events").unwrap_or_else(|_| url.clone()),
                Err(_) => url.clone(),
            };
            let resp = self
                .http
                .get(target.clone())
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .headers(self.auth())
                .send()
                .await;
            match resp {
                Ok(resp) if resp.status().is_success() => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(EventStream {
                        url: target.to_string(),
                        body: Box::pin(resp.bytes_stream()),
                        buf: Vec::new(),
                    });
                }
                Ok(resp) => {
                    // Not an event stream: decode says what it was instead.
                    return match decode::<serde_json::Value>(
                        target.as_str(),
                        Ok(resp),
                        MAX_ORCHESTRATOR_ANSWER_BYTES,
                    )
                    .await
                    {
                        Err(e) => Err(e),
                        Ok(_) => Err(ClientError::Decode {
                            url: target.to_string(),
                            message: "not an event stream".into(),
                        }),
                    };
                }
                Err(source) => {
                    last = Some(ClientError::Unreachable {
                        url: target.to_string(),
                        source,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::BadUrl(url.to_string())))
    }

    /// Cancels a job; answers once its running tasks were stopped on their nodes.
    pub async fn cancel(&self, id: &str) -> Result<JobSummary, ClientError> {
        self.job_action(id, "cancel").await
    }

    /// Puts a failed or cancelled job's unfinished tasks back in the queue.
    pub async fn requeue(&self, id: &str) -> Result<JobSummary, ClientError> {
        self.job_action(id, "requeue").await
    }

    pub async fn pause(&self, id: &str) -> Result<JobSummary, ClientError> {
        self.job_action(id, "pause").await
    }

    pub async fn resume(&self, id: &str) -> Result<JobSummary, ClientError> {
        self.job_action(id, "resume").await
    }

    async fn job_action(&self, id: &str, action: &str) -> Result<JobSummary, ClientError> {
        let url = self.url("/api/v1/jobs", &[id, action])?;
        // A cancel waits for nodes to kill their Blender processes: allow for slow nodes.
        self.post(url, None::<&()>, REQUEST_TIMEOUT * 6, false)
            .await
    }

    /// Every render node the orchestrator knows.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.get(self.url("/api/v1/nodes", &[])?).await
    }

    /// The local farm's folders when the server is `corral up`; `None` for any other
    /// orchestrator (the route does not exist there).
    pub async fn local_farm(&self) -> Result<Option<LocalFarm>, ClientError> {
        match self.get(self.url(LOCAL_FARM_PATH, &[])?).await {
            Ok(farm) => Ok(Some(farm)),
            Err(ClientError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_path_segment() {
        let client = OrchestratorClient::new("http://127.0.0.1:4000/").unwrap();
        let url = client.url("/api/v1/jobs", &["../../metrics"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:4000/api/v1/jobs/..%2F..%2Fmetrics"
        );
        let url = client.url("/api/v1/jobs", &["a?b#c", "cancel"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:4000/api/v1/jobs/a%3Fb%23c/cancel"
        );
    }

    #[test]
    fn several_bases_are_kept_in_order() {
        let bases = ["http://a:4000/".to_string(), "http://b:4000".to_string()];
        let client = OrchestratorClient::with_bases(&bases).unwrap();
        assert_eq!(client.bases(), ["http://a:4000", "http://b:4000"]);
        assert_eq!(client.base(), "http://a:4000");
        assert!(OrchestratorClient::with_bases(&[]).is_err());
        assert!(OrchestratorClient::with_bases(&["http://a".into(), "b".into()]).is_err());
    }

    #[test]
    fn bad_bases_are_refused() {
        assert!(OrchestratorClient::new("localhost:4000").is_err());
        assert!(OrchestratorClient::new("http://").is_err());
        assert!(OrchestratorClient::new("http://h:4000").is_ok());
    }
}
