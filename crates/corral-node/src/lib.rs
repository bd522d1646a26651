//! Corral's render node: serves the tutorial's node API (`POST /job`, `GET /job/{id}`, ...)
//! and runs the submitted frame ranges through Blender, at most `slots` at a time, with a
//! Blender started per task (cold) or kept running per slot (warm). Scenes come from a
//! folder the node shares with the farm, or are uploaded: fetched from the orchestrator
//! into a content-addressed cache and laid out as a workspace per render; frames are
//! written to the node's output folder, or uploaded to the orchestrator.

mod backend;
mod blend;
mod cache;
mod cold;
mod config;
mod confine;
mod deliver;
mod error;
mod host;
mod http;
mod job_log;
mod jobs;
mod runner;
mod warm;
mod workspace;

pub use blend::check_blend_file;
pub use config::{NodeConfig, RenderMode, ShutdownPolicy};
pub use http::router;
pub use jobs::Node;

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the node API on `listener` until `shutdown` completes; then stops accepting
/// jobs, cancels or finishes the running ones as `config.on_shutdown` says, and returns
/// once no Blender process is left.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls(node, listener, shutdown, None).await
}

/// [`serve`], over TLS when `tls` is given (a node that joined a farm off loopback).
pub async fn serve_tls(
    node: Node,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tls: Option<corral_http::TlsAcceptor>,
) -> std::io::Result<()> {
    let app = router(node.clone());
    let shutdown = async move {
        shutdown.await;
        node.shut_down().await;
    };
    corral_http::serve_tls(
        listener,
        app,
        shutdown,
        corral_http::ServerLimits::default(),
        tls,
    )
    .await
}
