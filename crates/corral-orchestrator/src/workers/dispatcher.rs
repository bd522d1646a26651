//! The dispatcher (on the leader only): each round reads the free node slots and the
//! queue's head, fails jobs no node may run any more, asks the scheduling policy
//! ([`corral_core::schedule::assign`]) which task goes where, leases those in one
//! transaction fenced by the dispatcher's lease, and hands each leased task to its node.

use crate::orchestrator::{AtWork, Following, Orchestrator};
use crate::store::{Note, RunningTask, StoreError};
use crate::workers::watcher;
use corral_client::ClientError;
use corral_core::ids::render_tag;
use corral_core::lifecycle::Command;
use corral_core::node_api::{Delivery, JobRequest};
use corral_core::schedule::{self, NodeSlots, QueuedTask, RenderAtWork};
use corral_core::{JobId, NodeId, NodeJobId, TaskId};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Rounds run when woken (new work, a free slot, a new node) and at least this often.
const IDLE_ROUND: Duration = Duration::from_secs(1);

pub async fn run(o: Orchestrator) {
    loop {
        tokio::select! {
            () = o.inner.shutdown.cancelled() => return,
            () = o.inner.wake.notified() => {}
            () = tokio::time::sleep(IDLE_ROUND) => {}
        }
        if let Err(e) = round(&o).await {
            tracing::warn!(error = %e, "dispatch round failed");
        }
    }
}

/// One round; does nothing unless this orchestrator holds the dispatcher's lease.
pub async fn round(o: &Orchestrator) -> Result<(), StoreError> {
    let Some(fence) = o.fence() else {
        return Ok(());
    };
    trim_overlong(o).await?;
    let store = o.store();
    // Only the nodes with room: a round of a busy farm of a thousand nodes finds a few.
    let room = store.free_slots().await?;
    let free: usize = room.nodes.iter().map(|(_, f)| *f as usize).sum();
    // Most rounds (woken by every task's end) find the farm full: skip the queue then.
    if free == 0 {
        return Ok(());
    }
    // A window of the queue's head: enough candidates to fill every free slot even when
    // some are blocklisted on some nodes.
    let window = (free as u64 * 16).clamp(64, 1000);
    let queued = store.queue_head(window).await?;
    forget_frame_times(o, &queued);
    if queued.is_empty() {
        // Nothing waits, yet slots are idle: take the unstarted tails of running renders.
        return steal_tails(o, &room.nodes).await;
    }
    let mut blocked: HashMap<JobId, HashSet<NodeId>> = HashMap::new();
    for (job, node) in store.blocklist(o.config().blocklist_after).await? {
        blocked.entry(job).or_default().insert(node);
    }
    let unrunnable = if blocked.is_empty() {
        HashSet::new()
    } else {
        fail_unrunnable(o, &queued, &store.nodes().await?, &blocked).await?
    };
    let tasks: Vec<QueuedTask> = queued
        .into_iter()
        .filter(|t| !unrunnable.contains(&t.job_id))
        .collect();
    let jobs: HashSet<JobId> = tasks.iter().map(|t| t.job_id).collect();
    let slots: Vec<NodeSlots> = {
        // Looked up under the lock, not copied: it holds a time per node of every job at
        // work. Watchers record frame times under it; it is not held across an await.
        let frame_ms = o.inner.frame_ms.lock().ok();
        room.nodes
            .into_iter()
            .map(|(node_id, free)| NodeSlots {
                blocked_jobs: blocked
                    .iter()
                    .filter(|(_, nodes)| nodes.contains(&node_id))
                    .map(|(job, _)| *job)
                    .collect(),
                frame_ms: jobs
                    .iter()
                    .filter_map(|job| {
                        let ms = frame_ms.as_ref()?.get(&(*job, node_id.clone()))?;
                        Some((*job, *ms))
                    })
                    .collect(),
                max_frames: room.max_frames.get(&node_id).copied(),
                node_id,
                free: free as usize,
            })
            .collect()
    };
    let farm_slots = room.farm as usize;
    let assignments = schedule::assign(&tasks, &slots, farm_slots, o.config().task_length_ms());
    if assignments.is_empty() {
        return Ok(());
    }
    // Followers are registered under the same lock reconciliation takes, so it never
    // mistakes a lease made here for an abandoned one.
    let leasing = o.inner.leasing.lock().await;
    let leased = store.lease(&assignments, &fence).await?;
    for task in leased {
        let following = o.follow(&task);
        tracing::info!(task = %task.task, node = %task.node, frames = %task.range, "dispatching");
        let d = o.clone();
        o.inner
            .workers
            .spawn(async move { dispatch(d, task, following).await });
    }
    drop(leasing);
    Ok(())
}

/// Gives idle slots the unstarted tails of running renders ([`schedule::pick_tails`]):
/// each such render's node is asked to stop after the frames it keeps, and the frames
/// after the one it will stop at become a queued task (cut under the render's lease),
/// which the next round hands out, sized to the nodes that take it.
async fn steal_tails(o: &Orchestrator, idle_nodes: &[(NodeId, u64)]) -> Result<(), StoreError> {
    let at_work: HashMap<TaskId, AtWork> = o
        .inner
        .at_work
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let renders: Vec<RenderAtWork> = at_work.iter().map(|(task, a)| a.now(*task)).collect();
    // Each idle slot's frame time for the work at hand: its node's for the job at work.
    // With renders of several jobs at work, a frame time of one job says nothing of
    // another's frames: the slots then count at the renders' mean speed.
    let jobs: HashSet<JobId> = at_work.values().map(|a| a.job).collect();
    let only_job = (jobs.len() == 1)
        .then(|| jobs.iter().next().copied())
        .flatten();
    let idle: Vec<Option<f64>> = {
        let frame_ms = o.inner.frame_ms.lock().ok();
        idle_nodes
            .iter()
            .flat_map(|(node, free)| {
                let ms = only_job.and_then(|job| {
                    frame_ms
                        .as_ref()
                        .and_then(|m| m.get(&(job, node.clone())).copied())
                });
                std::iter::repeat_n(ms, *free as usize)
            })
            .collect()
    };
    let picks: Vec<(TaskId, AtWork, i64)> = schedule::pick_tails(&renders, &idle)
        .into_iter()
        .filter_map(|(task, keep_to)| Some((task, at_work.get(&task)?.clone(), keep_to)))
        .collect();
    cut_tails(o, picks).await
}

/// Drops the measured frame times of jobs with nothing queued (in this window of the
/// queue) and nothing at work here: they size no piece any more.
fn forget_frame_times(o: &Orchestrator, queued: &[QueuedTask]) {
    let mut live: HashSet<JobId> = queued.iter().map(|t| t.job_id).collect();
    if let Ok(at_work) = o.inner.at_work.lock() {
        live.extend(at_work.values().map(|a| a.job));
    }
    if let Ok(mut frame_ms) = o.inner.frame_ms.lock() {
        frame_ms.retain(|(job, _), _| live.contains(job));
    }
}

/// Cuts the renders of farm-sized tasks that reach past the target task length at their
/// measured frame time ([`schedule::pick_overlong`]): their first pieces are an even share
/// of the job, sized before any frame time was known. Each render is asked once.
async fn trim_overlong(o: &Orchestrator) -> Result<(), StoreError> {
    let picks: Vec<(TaskId, AtWork, i64)> = {
        let Ok(mut at_work) = o.inner.at_work.lock() else {
            return Ok(());
        };
        let renders: Vec<RenderAtWork> = at_work
            .iter()
            .filter(|(_, a)| !a.trimmed && a.frame_ms.is_some())
            .map(|(task, a)| a.now(*task))
            .collect();
        schedule::pick_overlong(&renders, o.config().task_length_ms())
            .into_iter()
            .filter_map(|(task, keep_to)| {
                let a = at_work.get_mut(&task)?;
                a.trimmed = true;
                Some((task, a.clone(), keep_to))
            })
            .collect()
    };
    if picks.is_empty() {
        return Ok(());
    }
    cut_tails(o, picks).await
}

/// Cuts each render after its `keep_to`, and wakes the dispatcher for the cut-off tails.
async fn cut_tails(o: &Orchestrator, picks: Vec<(TaskId, AtWork, i64)>) -> Result<(), StoreError> {
    // Every node at once: with hundreds of idle slots at a job's end, asking one node
    // after another would leave the last ones idle for hundreds of round trips.
    let picks = picks
        .into_iter()
        .map(|(task, render, keep_to)| steal_tail(o, task, render, keep_to));
    let mut cut = false;
    let mut failed = None;
    for stolen in futures_util::future::join_all(picks).await {
        match stolen {
            Ok(stolen) => cut |= stolen,
            Err(e) => failed = Some(e),
        }
    }
    // The tails already cut are handed out even when another cut could not be recorded.
    if cut {
        o.wake();
    }
    failed.map_or(Ok(()), Err)
}

/// Takes the frames after `keep_to` off one running render; answers whether it did.
async fn steal_tail(
    o: &Orchestrator,
    task: TaskId,
    render: AtWork,
    keep_to: i64,
) -> Result<bool, StoreError> {
    // The node first: it says which frame it will really stop after.
    let end = match o
        .gateway()
        .truncate(&render.url, &render.node_job, keep_to)
        .await
    {
        Ok(end) if end < render.to => end,
        Ok(_) => return Ok(false),
        Err(e) => {
            tracing::debug!(task = %task, error = %e, "the node kept its tail");
            return Ok(false);
        }
    };
    let command = Command::Cut {
        lease: Some(render.lease),
        keep_to: end,
    };
    if !o.apply(task, command, Note::default()).await?.is_applied() {
        return Ok(false);
    }
    tracing::info!(task = %task, keep_to = end, to = render.to, "took the unstarted tail of a running render");
    if let Ok(mut at_work) = o.inner.at_work.lock() {
        if let Some(a) = at_work.get_mut(&task) {
            a.to = end;
        }
    }
    Ok(true)
}

/// Fails the jobs whose every known node is blocklisted: they can never finish. Giving up
/// one queued task fails the job, and the lifecycle cancels the rest with it.
async fn fail_unrunnable(
    o: &Orchestrator,
    queued: &[QueuedTask],
    nodes: &[crate::store::NodeRecord],
    blocked: &HashMap<JobId, HashSet<NodeId>>,
) -> Result<HashSet<JobId>, StoreError> {
    let mut unrunnable = HashSet::new();
    if nodes.is_empty() {
        return Ok(unrunnable);
    }
    for task in queued {
        let Some(blocked_nodes) = blocked.get(&task.job_id) else {
            continue;
        };
        let all_blocked = nodes.iter().all(|n| blocked_nodes.contains(&n.id));
        if all_blocked && unrunnable.insert(task.job_id) {
            let reason = format!(
                "no node is left to run it: all {} node(s) failed {} of its tasks",
                nodes.len(),
                o.config().blocklist_after
            );
            tracing::warn!(job = %task.job_id, "{reason}");
            o.apply(task.task_id, Command::GiveUp { reason }, Note::default())
                .await?;
        }
    }
    Ok(unrunnable)
}

/// Hands a leased task to its node, then watches it there.
pub(crate) async fn dispatch(o: Orchestrator, mut task: RunningTask, following: Following) {
    let Some(url) = task.node_url.clone() else {
        take_back(&o, &task).await;
        return;
    };
    let request = JobRequest {
        from: Some(task.range.from()),
        to: Some(task.range.to()),
        scene: task.render.scene.clone(),
        engine: Some(task.render.engine.blender_name().to_string()),
        format: task.render.format.map(|f| f.blender_name().to_string()),
        threads: None,
        output: Some(task.render.output.clone()),
        tag: Some(render_tag(task.task, task.lease)),
        // An uploaded scene: the node fetches it from its orchestrator (the addresses it
        // registered with) and uploads each frame under this job, tagged with the lease,
        // so a frame from a render that lost its lease is refused.
        manifest: task.render.manifest.as_ref().map(|m| m.to_string()),
        deliver: task
            .render
            .manifest
            .as_ref()
            .map(|_| Delivery::Upload.as_str().to_string()),
        job: task.render.manifest.as_ref().map(|_| task.job.to_string()),
    };
    let started = Instant::now();
    match o.gateway().submit(&url, &request).await {
        Ok(view) => {
            o.metrics().observe_dispatch(started.elapsed());
            let node_job = NodeJobId::new(view.id.to_string());
            let command = Command::Dispatched {
                lease: task.lease,
                node_job: node_job.clone(),
            };
            match watcher::report(&o, &task, command, Note::default()).await {
                Some(true) => {
                    task.node_job = Some(node_job);
                    watcher::watch(&o, task, following).await;
                }
                // Cancelled or taken back while the POST was in flight, or shutting down.
                _ => {
                    let _ = o.gateway().cancel(&url, node_job.as_str()).await;
                }
            }
        }
        Err(e) if e.is_unreachable() || matches!(e, ClientError::Status { status: 503, .. }) => {
            // The node's problem, not the task's: another node may take it.
            tracing::warn!(task = %task.task, node = %task.node, error = %e, "dispatch failed; re-queued");
            take_back(&o, &task).await;
            if e.is_unreachable() {
                // Down until a probe answers again, so the next round does not pick it
                // again at once.
                if let Err(e) = crate::workers::health::node_lost(&o, &task.node).await {
                    tracing::warn!(error = %e, "could not mark the node down");
                }
            } else {
                // Busy or shutting down: give it a moment before the next round.
                o.pause(Duration::from_secs(1)).await;
            }
            o.wake();
        }
        Err(e) => {
            let reason = format!("node {} refused the task: {e}", task.node);
            watcher::fail(&o, &task, reason, Note::default()).await;
        }
    }
}

async fn take_back(o: &Orchestrator, task: &RunningTask) {
    let command = Command::TakeBack { lease: task.lease };
    watcher::report(o, task, command, Note::default()).await;
}
