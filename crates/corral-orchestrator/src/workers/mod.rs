//! The orchestrator's background workers, each a loop that ends on the one shutdown token:
//!
//! - [`membership`]: heartbeats this orchestrator and holds (or waits for) the dispatcher's
//!   lease;
//! - [`dispatcher`]: on the leader, leases queued tasks to free node slots and hands each
//!   to its node;
//! - [`watcher`]: one per task this orchestrator follows, long-polling its node;
//! - [`health`]: on the leader, probes nodes, marks silent ones down, stops stray renders
//!   and fails stalled tasks;
//! - [`reconciler`]: keeps "every task is queued, running on a known node under a watcher,
//!   or ended", adopting what a stopped orchestrator followed;
//! - [`collector`]: deletes uploaded blobs no job needs and stale unfinished uploads.

pub mod collector;
pub mod dispatcher;
pub mod health;
pub mod membership;
pub mod reconciler;
pub mod watcher;

use crate::orchestrator::Orchestrator;
use std::future::Future;
use std::time::Duration;

/// Starts every periodic worker.
pub(crate) fn spawn_all(o: &Orchestrator) {
    spawn_loop(o, "membership", Duration::from_secs(1), |o| async move {
        membership::round(&o).await
    });
    spawn_loop(o, "reconciler", Duration::from_secs(1), |o| async move {
        reconciler::round(&o).await
    });
    spawn_loop(o, "health", o.config().probe_interval, |o| async move {
        health::round(&o).await
    });
    let every = collector::interval(o.config().blob_retention);
    spawn_loop(o, "collector", every, |o| async move {
        collector::round(&o).await
    });
    let d = o.clone();
    o.inner
        .workers
        .spawn(async move { dispatcher::run(d).await });
    // The dashboard's preview videos, made as jobs complete.
    let p = o.clone();
    o.inner
        .workers
        .spawn(async move { crate::dashboard::run_previews(p).await });
}

/// Runs `round` every `every` until shutdown, logging a failed round and carrying on.
fn spawn_loop<F, Fut>(o: &Orchestrator, name: &'static str, every: Duration, round: F)
where
    F: Fn(Orchestrator) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), crate::store::StoreError>> + Send,
{
    let o2 = o.clone();
    o.inner.workers.spawn(async move {
        let o = o2;
        loop {
            if let Err(e) = round(o.clone()).await {
                tracing::warn!(worker = name, error = %e, "round failed");
            }
            tokio::select! {
                () = o.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
}
