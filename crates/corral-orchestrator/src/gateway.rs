//! The port to render nodes: every call the orchestrator makes to a node goes through
//! [`NodeGateway`], so what guards those calls (size caps on answers, no redirects,
//! timeouts, and each node's secret) lives in one place, and tests can put a hostile or
//! failing node behind it.

use crate::store::NodeSecret;
use async_trait::async_trait;
use corral_client::{ClientError, NodeClient};
use corral_core::node_api::{JobRequest, JobView, NodeInfo};
use corral_core::tls::Fingerprint;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// Calls to render nodes, by URL.
#[async_trait]
pub trait NodeGateway: Send + Sync + 'static {
    /// `POST /job`: hands a node a render.
    async fn submit(&self, url: &str, request: &JobRequest) -> Result<JobView, ClientError>;
    /// `GET /job/{id}?wait=&since=[&batch=]`: the render once its version passes `since`
    /// (progress short of its end no sooner than `batch` after asking), or at the end of
    /// `wait`.
    async fn wait(
        &self,
        url: &str,
        node_job: &str,
        since: u64,
        wait: Duration,
        batch: Duration,
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
    /// How to call the node at `url`: the secret to send as `Authorization: Bearer` (the
    /// one it sent when it joined) and the fingerprint of the certificate it serves HTTPS
    /// with, each when it has one. Gateways without credentials ignore them.
    fn remember_node(&self, _url: &str, _secret: Option<&NodeSecret>, _tls: Option<&Fingerprint>) {}
}

/// The gateway over HTTP: one connection pool for every plain-HTTP node, built by
/// [`corral_client::http_client`], and one for each node certificate pinned, built by
/// [`corral_client::http_client_pinned`] (no redirects either way), with every answer read
/// under [`corral_client::MAX_NODE_ANSWER_BYTES`].
pub struct HttpGateway {
    http: reqwest::Client,
    /// Each joined node's secret and certificate fingerprint by URL, learnt from the store
    /// (registration, and every health round, so orchestrators sharing a database know
    /// every node's).
    nodes: RwLock<HashMap<String, Access>>,
    /// A client per pinned certificate: it accepts that certificate and no other.
    pinned: RwLock<HashMap<Fingerprint, reqwest::Client>>,
}

/// What a call to one node carries.
#[derive(Debug, Clone, Default)]
struct Access {
    secret: Option<String>,
    tls: Option<Fingerprint>,
}

impl HttpGateway {
    pub fn new() -> HttpGateway {
        HttpGateway {
            http: corral_client::http_client(),
            nodes: RwLock::new(HashMap::new()),
            pinned: RwLock::new(HashMap::new()),
        }
    }

    fn client(&self, url: &str) -> Result<NodeClient, ClientError> {
        let access = self
            .nodes
            .read()
            .ok()
            .and_then(|nodes| nodes.get(url.trim_end_matches('/')).cloned())
            .unwrap_or_default();
        let http = match access.tls {
            Some(fp) => self.pinned_client(fp)?,
            None => self.http.clone(),
        };
        Ok(NodeClient::with_http(http, url)?.with_bearer(access.secret.as_deref()))
    }

    fn pinned_client(&self, fp: Fingerprint) -> Result<reqwest::Client, ClientError> {
        if let Some(client) = self.pinned.read().ok().and_then(|p| p.get(&fp).cloned()) {
            return Ok(client);
        }
        let client = corral_client::http_client_pinned(&corral_client::Pins(vec![fp]))?;
        if let Ok(mut pinned) = self.pinned.write() {
            pinned.insert(fp, client.clone());
        }
        Ok(client)
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
        batch: Duration,
    ) -> Result<JobView, ClientError> {
        self.client(url)?.wait(node_job, since, wait, batch).await
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

    fn remember_node(&self, url: &str, secret: Option<&NodeSecret>, tls: Option<&Fingerprint>) {
        let access = Access {
            secret: secret.map(|s| s.0.clone()),
            tls: tls.copied(),
        };
        let url = url.trim_end_matches('/').to_string();
        let Ok(mut nodes) = self.nodes.write() else {
            return;
        };
        let before = if access.secret.is_none() && access.tls.is_none() {
            nodes.remove(&url)
        } else {
            nodes.insert(url, access.clone())
        };
        // A certificate no node uses any more (a node that made a new one, or left) drops
        // its client; checked only when this node's certificate changed, since this runs
        // for every node on every heartbeat and health round.
        let old = before
            .and_then(|b| b.tls)
            .filter(|old| access.tls != Some(*old));
        if let Some(old) = old {
            if !nodes.values().any(|a| a.tls == Some(old)) {
                if let Ok(mut pinned) = self.pinned.write() {
                    pinned.remove(&old);
                }
            }
        }
    }
}
