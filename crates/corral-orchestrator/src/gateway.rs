//! The port to render nodes: every call the orchestrator makes to a node goes through
//! [`NodeGateway`], so what guards those calls (size caps on answers, no redirects,
//! timeouts, and each node's secret) lives in one place, and tests can put a hostile or
//! failing node behind it.

use crate::store::NodeSecret;
use async_trait::async_trait;
use corral_client::{ClientError, NodeClient};
use corral_core::node_api::{JobRequest, JobView, NodeInfo};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// Calls to render nodes, by URL.
#[async_trait]
pub trait NodeGateway: Send + Sync + 'static {
    /// `POST /job`: hands a node a render.
    async fn submit(&self, url: &str, request: &JobRequest) -> Result<JobView, ClientError>;
    /// `GET /job/{id}?wait=&since=`: the render once its version passes `since`, or at the
    /// end of `wait`.
    async fn wait(
        &self,
        url: &str,
        node_job: &str,
        since: u64,
        wait: Duration,
    ) -> Result<JobView, ClientError>;
    /// `DELETE /job/{id}`: stops a render.
    async fn cancel(&self, url: &str, node_job: &str) -> Result<JobView, ClientError>;
    /// `GET /jobs`: every render the node knows.
    async fn jobs(&self, url: &str) -> Result<Vec<JobView>, ClientError>;
    /// `GET /info`: the node's slots, Blender and machine.
    async fn info(&self, url: &str) -> Result<NodeInfo, ClientError>;
    /// `POST /job/{id}/truncate`: ends a render after frame `to` (or the frame it renders
    /// now, if later); answers the last frame it will render.
    async fn truncate(&self, url: &str, node_job: &str, to: i64) -> Result<i64, ClientError>;
    /// `GET /job/{id}/log`: a render's whole Blender log (for the dashboard). Gateways
    /// that cannot fetch logs say the node has none.
    async fn log(&self, url: &str, node_job: &str) -> Result<String, ClientError> {
        Err(ClientError::NotFound {
            url: format!("{url}/job/{node_job}/log"),
        })
    }
    /// The secret to send as `Authorization: Bearer` on calls to the node at `url` (the
    /// one it sent when it joined), or none. Gateways without credentials ignore it.
    fn remember_secret(&self, _url: &str, _secret: Option<&NodeSecret>) {}
}

/// The gateway over HTTP: one connection pool for every node, built by
/// [`corral_client::http_client`] (no redirects), with every answer read under
/// [`corral_client::MAX_NODE_ANSWER_BYTES`].
pub struct HttpGateway {
    http: reqwest::Client,
    /// Each joined node's secret by URL, learnt from the store (registration, and every
    /// health round, so orchestrators sharing a database know every node's).
    secrets: RwLock<HashMap<String, String>>,
}

impl HttpGateway {
    pub fn new() -> HttpGateway {
        HttpGateway {
            http: corral_client::http_client(),
            secrets: RwLock::new(HashMap::new()),
        }
    }

    fn client(&self, url: &str) -> Result<NodeClient, ClientError> {
        let secret = self
            .secrets
            .read()
            .ok()
            .and_then(|secrets| secrets.get(url.trim_end_matches('/')).cloned());
        Ok(NodeClient::with_http(self.http.clone(), url)?.with_bearer(secret.as_deref()))
    }
}

impl Default for HttpGateway {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl NodeGateway for HttpGateway {
    async fn submit(&self, url: &str, request: &JobRequest) -> Result<JobView, ClientError> {
        self.client(url)?.submit(request).await
    }

    async fn wait(
        &self,
        url: &str,
        node_job: &str,
        since: u64,
        wait: Duration,
    ) -> Result<JobView, ClientError> {
        self.client(url)?.wait(node_job, since, wait).await
    }

    async fn cancel(&self, url: &str, node_job: &str) -> Result<JobView, ClientError> {
        self.client(url)?.cancel(node_job).await
    }

    async fn jobs(&self, url: &str) -> Result<Vec<JobView>, ClientError> {
        self.client(url)?.jobs().await
    }

    async fn info(&self, url: &str) -> Result<NodeInfo, ClientError> {
        self.client(url)?.info().await
    }

    async fn log(&self, url: &str, node_job: &str) -> Result<String, ClientError> {
        self.client(url)?.log(node_job).await
    }

    async fn truncate(&self, url: &str, node_job: &str, to: i64) -> Result<i64, ClientError> {
        self.client(url)?.truncate(node_job, to).await
    }

    fn remember_secret(&self, url: &str, secret: Option<&NodeSecret>) {
        if let Ok(mut secrets) = self.secrets.write() {
            let url = url.trim_end_matches('/').to_string();
            match secret {
                Some(secret) => secrets.insert(url, secret.0.clone()),
                None => secrets.remove(&url),
            };
        }
    }
}
