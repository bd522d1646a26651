//! Reconciliation keeps the invariant "every task is queued, running on a known node under
//! a watcher, or ended", whatever stopped in between:
//!
//! - on the leader: tasks running on a node that is no longer known go back to the queue,
//!   and tasks followed by an orchestrator that stopped heartbeating are adopted;
//! - on every orchestrator: tasks it owns that nobody in this process follows (an earlier
//!   process's, or adopted) are watched again when their node accepted them, and re-queued
//!   when their dispatch was cut short (it may never have reached the node).

use crate::orchestrator::{Orchestrator, ORCHESTRATOR_TIMEOUT};
use crate::store::{Applied, Note, RunningFilter, RunningTask, StoreError};
use crate::workers::watcher;
use chrono::Utc;
use corral_core::ids::render_tag;
use corral_core::lifecycle::{Command, TaskState};
use corral_core::NodeJobId;

pub async fn round(o: &Orchestrator) -> Result<(), StoreError> {
    let store = o.store();
    if o.is_leader() {
        let orphans = store.take_back_orphans().await?;
        if !orphans.is_empty() {
            tracing::warn!(
                tasks = orphans.len(),
                "re-queued tasks running on nodes that are no longer known"
            );
            o.wake();
        }
        adopt_from_stopped_orchestrators(o).await?;
    }
    let _leasing = o.inner.leasing.lock().await;
    for task in store
        .running(RunningFilter::OwnedBy(o.id().clone()))
        .await?
    {
        if o.is_followed(&task) {
            continue;
        }
        // The list was read before this look: a watcher that ended the task since then
        // is gone, and the task is no longer running.
        let current = store.task(task.task).await?;
        let still_running = current.is_some_and(|t| {
            t.task.lease == task.lease && matches!(t.task.state, TaskState::Running(_))
        });
        if !still_running {
            continue;
        }
        if task.node_job.is_some() {
            tracing::info!(task = %task.task, node = %task.node, "watching a running task");
            let following = o.follow(&task);
            watcher::spawn(o, task, following);
            continue;
        }
        // The dispatch was cut short: the node may have the render (found by its tag),
        // or not.
        match find_render(o, &task).await {
            Some(node_job) => {
                tracing::info!(task = %task.task, node = %task.node, "found the render of a dispatch cut short");
                let command = Command::Dispatched {
                    lease: task.lease,
                    node_job: node_job.clone(),
                };
                if o.apply(task.task, command, Note::default())
                    .await?
                    .is_applied()
                {
                    let mut task = task;
                    task.node_job = Some(node_job);
                    let following = o.follow(&task);
                    watcher::spawn(o, task, following);
                }
            }
            None => {
                tracing::warn!(task = %task.task, node = %task.node, "re-queued a task whose dispatch was cut short");
                let command = Command::TakeBack { lease: task.lease };
                o.apply(task.task, command, Note::default()).await?;
            }
        }
    }
    Ok(())
}

/// The node's render of `task` under its lease, found by its tag.
async fn find_render(o: &Orchestrator, task: &RunningTask) -> Option<NodeJobId> {
    let url = task.node_url.as_deref()?;
    let tag = render_tag(task.task, task.lease);
    let renders = o.gateway().jobs(url).await.ok()?;
    renders
        .into_iter()
        .find(|r| r.tag.as_deref() == Some(tag.as_str()))
        .map(|r| NodeJobId::new(r.id.to_string()))
}

/// Takes over the tasks of orchestrators that stopped heartbeating (on SQLite, which one
/// orchestrator uses at a time, every other owner is an earlier process of this one).
async fn adopt_from_stopped_orchestrators(o: &Orchestrator) -> Result<(), StoreError> {
    let store = o.store();
    let live = if store.shared() {
        if !o.healthy_for(ORCHESTRATOR_TIMEOUT) {
            // Right after our own outage, the others' heartbeats are as stale as ours
            // was: wait until they had a chance to heartbeat again.
            return Ok(());
        }
        let since =
            Utc::now() - chrono::TimeDelta::from_std(ORCHESTRATOR_TIMEOUT).unwrap_or_default();
        store.live_orchestrators(since).await?
    } else {
        vec![o.id().clone()]
    };
    for task in store.running(RunningFilter::OwnerNotIn(live)).await? {
        let command = Command::Adopt {
            lease: task.lease,
            owner: o.id().clone(),
        };
        if let Applied::Changed(_) = o.apply(task.task, command, Note::default()).await? {
            tracing::info!(task = %task.task, from = %task.owner, "adopted a task");
        }
    }
    Ok(())
}
