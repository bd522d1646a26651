//! Typed HTTP clients for Corral's APIs: [`NodeClient`] for a render node (used by the
//! orchestrator and tests). Errors separate "could not reach it" from "it said no", because
//! the orchestrator treats the first as a node problem and the second as a task problem.

use corral_core::node_api::{JobRequest, JobView, NodeInfo};
use corral_core::Problem;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, reset, timed out, DNS failure.
    #[error("{url} is unreachable: {source}")]
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
    #[error("invalid server address `{0}`")]
    BadUrl(String),
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
}

/// How long a plain request may take; long-polls add their wait on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl NodeClient {
    /// A client for the node at `base` (e.g. `http://10.0.0.5:3000`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|_| ClientError::BadUrl(base.to_string()))?;
        Self::with_http(http, base)
    }

    /// Shares one connection pool between many node clients.
    pub fn with_http(http: reqwest::Client, base: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(base));
        }
        Ok(NodeClient { http, base })
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
            .send()
            .await;
        decode(&url, resp).await
    }

    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        let url = format!("{}/job/{id}", self.base);
        let resp = self.http.get(&url).timeout(REQUEST_TIMEOUT).send().await;
        decode(&url, resp).await
    }

    /// Long-polls job `id` until its version passes `since` or `wait` runs out.
    pub async fn wait(&self, id: &str, since: u64, wait: Duration) -> Result<JobView, ClientError> {
        let url = format!(
            "{}/job/{id}?wait={}&since={since}",
            self.base,
            wait.as_secs_f64()
        );
        let resp = self
            .http
            .get(&url)
            .timeout(wait + REQUEST_TIMEOUT)
            .send()
            .await;
        decode(&url, resp).await
    }

    pub async fn cancel(&self, id: &str) -> Result<JobView, ClientError> {
        let url = format!("{}/job/{id}", self.base);
        let resp = self.http.delete(&url).timeout(REQUEST_TIMEOUT).send().await;
        decode(&url, resp).await
    }

    pub async fn jobs(&self) -> Result<Vec<JobView>, ClientError> {
        let url = format!("{}/jobs", self.base);
        let resp = self.http.get(&url).timeout(REQUEST_TIMEOUT).send().await;
        decode(&url, resp).await
    }

    pub async fn info(&self) -> Result<NodeInfo, ClientError> {
        let url = format!("{}/info", self.base);
        let resp = self.http.get(&url).timeout(REQUEST_TIMEOUT).send().await;
        decode(&url, resp).await
    }
}

/// Turns a response into `T`, or into the error that says what went wrong.
pub async fn decode<T: DeserializeOwned>(
    url: &str,
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, ClientError> {
    let resp = resp.map_err(|source| ClientError::Unreachable {
        url: url.to_string(),
        source,
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Unreachable {
            url: url.to_string(),
            source,
        })?;
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

/// A client for an orchestrator's native API (`/api/v1`).
#[derive(Debug, Clone)]
pub struct OrchestratorClient {
    http: reqwest::Client,
    base: String,
}

impl OrchestratorClient {
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|_| ClientError::BadUrl(base.to_string()))?;
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(base));
        }
        Ok(OrchestratorClient { http, base })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Announces a render node reachable at `node_url` (also its heartbeat).
    pub async fn register_node(
        &self,
        node_url: &str,
    ) -> Result<corral_core::orchestrator_api::NodeView, ClientError> {
        let url = format!("{}/api/v1/nodes", self.base);
        let body = corral_core::orchestrator_api::RegisterNode {
            url: Some(node_url.to_string()),
        };
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        decode(&url, resp).await
    }
}
