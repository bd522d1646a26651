//! Corral's orchestrator: accepts jobs (the tutorial's `/render` and the native `/api/v1`),
//! stores them (SQLite, or PostgreSQL shared by several orchestrators) before answering,
//! splits them into tasks, leases tasks to render nodes with free slots, follows each task
//! by long-polling its node, and re-queues work from nodes (or orchestrators) that fail or
//! vanish. It serves the web dashboard at `/` ([`dashboard`]).

pub mod auth;
mod config;
pub mod dashboard;
mod detail_cache;
mod error;
pub mod gateway;
mod http;
mod metrics;
mod orchestrator;
pub mod storage;
pub mod store;
mod transfer;
mod views;
mod workers;

pub use config::OrchestratorConfig;
pub use http::{router, routes, ApiDoc};
pub use orchestrator::Orchestrator;
pub use store::DatabaseUrl;

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the orchestrator on `listener` until `shutdown` completes, then stops its loops.
/// Running tasks stay leased in the database; the next start picks them up again.
pub async fn serve(
    orchestrator: Orchestrator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls(orchestrator, listener, shutdown, None).await
}

/// [`serve`], over TLS when `tls` is given (a farm reachable off loopback).
pub async fn serve_tls(
    orchestrator: Orchestrator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tls: Option<corral_http::TlsAcceptor>,
) -> std::io::Result<()> {
    let app = router(orchestrator.clone());
    let shutdown = async move {
        shutdown.await;
        orchestrator.shut_down().await;
    };
    let limits = corral_http::ServerLimits::sized_to_descriptors();
    tracing::debug!(max_connections = limits.max_connections, "connection bound");
    corral_http::serve_tls(listener, app, shutdown, limits, tls).await
}
