//! Corral's orchestrator: accepts jobs (the tutorial's `/render` and the native `/api/v1`),
//! stores them in SQLite before answering, splits them into tasks, leases tasks to render
//! nodes with free slots, follows each task by long-polling its node, and re-queues work
//! from nodes that fail or vanish.

mod config;
mod error;
mod http;
mod metrics;
mod scheduler;
pub mod store;
mod views;

pub use config::OrchestratorConfig;
pub use http::{router, ApiDoc};
pub use scheduler::Orchestrator;

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the orchestrator on `listener` until `shutdown` completes, then stops its loops.
/// Running tasks stay leased in the database; the next start picks them up again.
pub async fn serve(
    orchestrator: Orchestrator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(orchestrator.clone());
    corral_http::serve(listener, app, async move {
        shutdown.await;
        orchestrator.shut_down().await;
    })
    .await
}
