//! Node health (on the leader): every round probes each node's `/info`. A node that
//! answers is up (and, when it comes up, any render it runs that no lease refers to is
//! stopped); one silent for the node timeout is down, and its tasks go back to the queue
//! atomically with that. Running tasks without progress for the stall timeout fail.

use crate::orchestrator::Orchestrator;
use crate::store::{NodeRecord, Note, RunningFilter, StopAt, StoreError};
use crate::workers::watcher;
use chrono::{DateTime, Utc};
use corral_core::ids::parse_render_tag;
use corral_core::node_api::NodeInfo;
use corral_core::orchestrator_api::NodeState;
use corral_core::{LeaseId, NodeId, NodeJobId, TaskId};
use std::collections::HashSet;
use std::time::Duration;

/// How often each node's renders are compared with the leases that refer to them.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub async fn round(o: &Orchestrator) -> Result<(), StoreError> {
    let nodes = o.store().nodes().await?;
    // Every orchestrator learns each node's secret (another may have seen it join).
    for node in &nodes {
        o.gateway()
            .remember_node(&node.url, node.secret.as_ref(), node.fingerprint.as_ref());
    }
    if !o.is_leader() {
        // What this process heard while it led says nothing once another leads.
        if let Ok(mut answered) = o.inner.answered.lock() {
            answered.clear();
        }
        return Ok(());
    }
    // A node this process has not probed yet is silent only from now on: the store's
    // `last_seen` may be up to half a node timeout old (see `seen_is_news`), and a leader
    // that just took over must not count the time it was not listening.
    if let Ok(mut answered) = o.inner.answered.lock() {
        let now = Utc::now();
        for node in &nodes {
            answered.entry(node.id.clone()).or_insert(now);
        }
    }
    // Before any probe: a node recorded as seen at this time answered at or after it.
    let probed_at = Utc::now();
    let probes = nodes.into_iter().map(|n| probe(o, n));
    let still_up: Vec<NodeId> = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect();
    if !still_up.is_empty() {
        // Only a refresh: the next round writes it again, and stalls are still looked for.
        if let Err(e) = o.store().nodes_still_up(&still_up, probed_at).await {
            tracing::warn!(nodes = still_up.len(), error = %e, "could not record probes");
        }
    }
    fail_stalled(o).await
}

/// Asks a node for `/info`; marks it up (stopping its stray renders when it comes up) or,
/// once silent for the node timeout, down. Answers the node's id when all there is to
/// write is that it is still up, for the caller to write with the round's others
/// ([`crate::store::Store::nodes_still_up`]).
pub async fn probe(o: &Orchestrator, node: NodeRecord) -> Option<NodeId> {
    let timeout = o.config().probe_interval.max(Duration::from_secs(1));
    let answer = tokio::time::timeout(timeout, o.gateway().info(&node.url)).await;
    match answer {
        Ok(Ok(info)) => {
            let now = Utc::now();
            if let Ok(mut answered) = o.inner.answered.lock() {
                answered.insert(node.id.clone(), now);
            }
            let (came_up, still_up) = match seen_is_news(o, &node, &info, now) {
                Seen::Changed => match o.store().node_seen(&node.id, &info).await {
                    Ok(came_up) => (came_up, None),
                    Err(e) => {
                        tracing::warn!(node = %node.id, error = %e, "could not record a probe");
                        return None;
                    }
                },
                Seen::Stale => (false, Some(node.id.clone())),
                Seen::Known => (false, None),
            };
            // Strays are looked for when a node comes up (or is first seen by this
            // process) and every [`SWEEP_EVERY`]: a dispatch cut short can leave a render
            // that no lease refers to on a node that never went down.
            let due = o
                .inner
                .swept
                .lock()
                .map(|mut swept| {
                    let due = came_up
                        || swept
                            .get(&node.id)
                            .is_none_or(|at| at.elapsed() >= SWEEP_EVERY);
                    if due {
                        swept.insert(node.id.clone(), std::time::Instant::now());
                    }
                    due
                })
                .unwrap_or(false);
            if came_up {
                tracing::info!(node = %node.id, slots = info.slots, "node up");
                o.wake();
            }
            if due {
                stop_strays(o, &node).await;
            }
            still_up
        }
        _ => {
            let answered = o
                .inner
                .answered
                .lock()
                .ok()
                .and_then(|a| a.get(&node.id).copied());
            let silent_since = node.last_seen.max(answered).unwrap_or(node.registered_at);
            let silent = (Utc::now() - silent_since).to_std().unwrap_or_default();
            if node.state == NodeState::Up && silent >= o.config().node_timeout {
                if let Err(e) = node_lost(o, &node.id).await {
                    tracing::warn!(node = %node.id, error = %e, "could not mark the node down");
                }
            }
            None
        }
    }
}

/// What a probe's answer adds to what the store knows of the node.
enum Seen {
    /// The node is not recorded as up, or what it reports changed: written at once.
    Changed,
    /// Only its recorded `last_seen` is older than half the node timeout (so another
    /// orchestrator taking over the probes would see a live node as live).
    Stale,
    /// Nothing: the answer is kept in memory only (the orchestrator's `answered` map).
    Known,
}

/// What a probe's answer says that the store does not know yet.
fn seen_is_news(o: &Orchestrator, node: &NodeRecord, info: &NodeInfo, now: DateTime<Utc>) -> Seen {
    let write_every = (o.config().node_timeout / 2).max(Duration::from_secs(1));
    let changed = node.last_seen.is_none()
        || node.state != NodeState::Up
        || node.slots != info.slots as u64
        || node.hostname.as_deref() != Some(info.hostname.as_str())
        || node.blender_version.as_deref() != Some(info.blender_version.as_str())
        || node.cores != Some(info.cores as u64)
        || node.memory_bytes != info.memory_bytes
        || node.max_frames != crate::store::max_frames_of(info);
    let stale = node
        .last_seen
        .is_some_and(|seen| (now - seen).to_std().unwrap_or_default() >= write_every);
    if changed {
        Seen::Changed
    } else if stale {
        Seen::Stale
    } else {
        Seen::Known
    }
}

/// Marks a node down and takes its tasks back (one transaction).
pub async fn node_lost(o: &Orchestrator, node: &NodeId) -> Result<(), StoreError> {
    let Some(changes) = o.store().node_lost(node).await? else {
        return Ok(());
    };
    if let Ok(mut swept) = o.inner.swept.lock() {
        swept.remove(node);
    }
    tracing::warn!(node = %node, tasks = changes.len(), "node down; its tasks are re-queued");
    o.wake();
    Ok(())
}

/// Stops renders a node runs for this farm that no running lease refers to: left over
/// from before a partition, a node loss, or an orchestrator restart. A render is this
/// farm's when its tag names a task and lease ([`render_tag`]); it is current only when
/// that task is running on this node under that lease. Renders without such a tag were
/// not sent by an orchestrator and are left alone.
async fn stop_strays(o: &Orchestrator, node: &NodeRecord) {
    let Ok(renders) = o.gateway().jobs(&node.url).await else {
        return;
    };
    // This node's only: a sweep of a thousand nodes reading every running task each
    // would read a million rows every sweep.
    let running = o
        .store()
        .running(RunningFilter::OnNode(node.id.clone()))
        .await;
    let current: HashSet<(TaskId, LeaseId)> = match running {
        Ok(running) => running.into_iter().map(|t| (t.task, t.lease)).collect(),
        Err(_) => return,
    };
    let strays: Vec<StopAt> = renders
        .into_iter()
        .filter(|r| !r.state.is_terminal())
        .filter(|r| {
            r.tag
                .as_deref()
                .and_then(parse_render_tag)
                .is_some_and(|key| !current.contains(&key))
        })
        .map(|r| StopAt {
            node: node.id.clone(),
            url: node.url.clone(),
            node_job: NodeJobId::new(r.id.to_string()),
        })
        .collect();
    if !strays.is_empty() {
        tracing::info!(node = %node.id, count = strays.len(), "stopping stray renders");
        o.stop_renders(strays).await;
    }
}

/// Fails running tasks whose node reported nothing for the stall timeout.
async fn fail_stalled(o: &Orchestrator) -> Result<(), StoreError> {
    let stall = o.config().stall_timeout;
    let Ok(before) = chrono::TimeDelta::from_std(stall).map(|d| Utc::now() - d) else {
        return Ok(());
    };
    for task in o
        .store()
        .running(RunningFilter::StalledSince(before))
        .await?
    {
        let reason = format!("no progress on {} for {}s", task.node, stall.as_secs());
        // Failing the attempt stops its render on the node.
        watcher::fail(o, &task, reason, Note::default()).await;
    }
    Ok(())
}
