//! The orchestrator's moving parts: the dispatcher (queued tasks to free node slots), one
//! watcher per running task (long-polls its node), and the health loop (probes nodes,
//! marks silent ones down and takes their tasks back, fails stalled tasks).
//!
//! Every loop ends on the one shutdown token; every decision is written to the store
//! first, so a restart resumes from the database alone.

use crate::config::OrchestratorConfig;
use crate::metrics::Metrics;
use crate::store::{JobRow, Lease, NodeJob, NodeRow, Store, StoreError};
use chrono::Utc;
use corral_client::{ClientError, NodeClient};
use corral_core::node_api::{JobRequest, JobView};
use corral_core::orchestrator_api::{Event, JobState, JobSubmission, NodeState, TaskState};
use corral_core::schedule::{self, NodeSlots, QueuedTask};
use corral_core::{JobId, JobState as NodeJobState};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Node jobs younger than this are never stopped by reconciliation: their task's node job
/// id may not be in the database yet (the dispatch answer is still on its way).
const RECONCILE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(15);

/// A handle to the running orchestrator; cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: OrchestratorConfig,
    http: reqwest::Client,
    events: broadcast::Sender<Event>,
    wake: Notify,
    metrics: Metrics,
    shutdown: CancellationToken,
    loops: TaskTracker,
    /// Nodes reconciled since start (their stray jobs stopped).
    reconciled: Mutex<HashSet<String>>,
    /// `(task, lease)` pairs a dispatch or watch of this process follows right now. A
    /// running lease missing here has nobody to end it, and reconciliation adopts it.
    followed: Arc<Mutex<HashSet<(i64, i64)>>>,
    /// Held by a dispatch round while it leases, and by reconciliation while it looks for
    /// unfollowed leases, so a lease just committed is never mistaken for an abandoned one.
    leasing: tokio::sync::Mutex<()>,
}

/// Marks a lease as followed for as long as it lives.
struct Following {
    set: Arc<Mutex<HashSet<(i64, i64)>>>,
    key: (i64, i64),
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

impl Orchestrator {
    /// Opens the database, registers the `--node` nodes, resumes the tasks that were
    /// running when the last process stopped, and starts the loops.
    pub async fn start(config: OrchestratorConfig) -> Result<Orchestrator, StoreError> {
        let store = Store::open(&config.data_dir.join("corral.db")).await?;
        for url in &config.static_nodes {
            store.upsert_node(url).await?;
        }
        if config.forget_other_loopback_nodes {
            for node in store.nodes().await? {
                let loopback = node.url.starts_with("http://127.0.0.1:");
                if loopback && !config.static_nodes.contains(&node.url) {
                    tracing::info!(node = %node.id, "forgetting a node of an earlier run");
                    store.remove_node(&node.id).await?;
                }
            }
        }
        let requeued = store.requeue_unconfirmed().await?;
        if requeued > 0 {
            tracing::info!(requeued, "re-queued tasks whose dispatch was cut short");
        }
        let http = corral_client::http_client();
        let (events, _) = broadcast::channel(1024);
        let orchestrator = Orchestrator {
            inner: Arc::new(Inner {
                store,
                config,
                http,
                events,
                wake: Notify::new(),
                metrics: Metrics::new(),
                shutdown: CancellationToken::new(),
                loops: TaskTracker::new(),
                reconciled: Mutex::new(HashSet::new()),
                followed: Arc::new(Mutex::new(HashSet::new())),
                leasing: tokio::sync::Mutex::new(()),
            }),
        };
        for lease in orchestrator.store().running_leases().await? {
            tracing::info!(task = lease.task_id, node = %lease.node_id, "resuming watch");
            let following = orchestrator.follow(&lease);
            orchestrator.spawn_watcher(lease, following);
        }
        let o = orchestrator.clone();
        orchestrator
            .inner
            .loops
            .spawn(async move { o.dispatch_loop().await });
        let o = orchestrator.clone();
        orchestrator
            .inner
            .loops
            .spawn(async move { o.health_loop().await });
        Ok(orchestrator)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &OrchestratorConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn emit(&self, event: Event) {
        // No subscribers is fine.
        let _ = self.inner.events.send(event);
    }

    /// Asks the dispatcher for a round now (new work, a free slot, a new node).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops every loop and watcher and waits for them.
    pub async fn shut_down(&self) {
        self.inner.shutdown.cancel();
        self.inner.loops.close();
        self.inner.loops.wait().await;
    }

    // ---- commands from the API -----------------------------------------------------

    /// Stores a job and its tasks; returns once they are committed.
    pub async fn submit(&self, sub: JobSubmission) -> Result<JobRow, StoreError> {
        let id = JobId::new();
        let output = sub
            .output
            .clone()
            .unwrap_or_else(|| format!("{id}/frame_####"));
        let job = self.store().insert_job(id, &sub, &output).await?;
        tracing::info!(job = %id, frames = %sub.range, chunk = sub.chunk_size, "job accepted");
        self.emit_job(&job).await;
        self.wake();
        Ok(job)
    }

    /// Cancels a job and stops its running tasks on their nodes (awaited, so the answer
    /// comes after the nodes killed their Blender).
    pub async fn cancel(&self, job: &JobRow) -> Result<(), StoreError> {
        let stop = self.store().cancel_job(job.seq).await?;
        self.stop_node_jobs(stop).await;
        self.after_task_change(job.seq).await;
        Ok(())
    }

    pub async fn set_paused(&self, job: &JobRow, paused: bool) -> Result<(), StoreError> {
        self.store().set_paused(job.seq, paused).await?;
        self.after_task_change(job.seq).await;
        self.wake();
        Ok(())
    }

    pub async fn requeue(&self, job: &JobRow) -> Result<u64, StoreError> {
        let n = self.store().requeue_failed(job.seq).await?;
        self.after_task_change(job.seq).await;
        self.wake();
        Ok(n)
    }

    /// Adds a node (or hears its heartbeat). A node that is new or down is probed at once,
    /// so it gets work without waiting for the next health round.
    pub async fn register_node(&self, url: &str) -> Result<NodeRow, StoreError> {
        let node = self.store().upsert_node(url).await?;
        if node.node_state() == NodeState::Down {
            let o = self.clone();
            let probe = node.clone();
            self.inner.loops.spawn(async move { o.probe(probe).await });
        }
        Ok(node)
    }

    pub async fn set_draining(&self, node: &NodeRow, draining: bool) -> Result<(), StoreError> {
        self.store().set_draining(&node.id, draining).await?;
        self.emit_node(node, node.node_state(), draining);
        self.wake();
        Ok(())
    }

    /// Forgets a node; its running tasks go back to the queue and are stopped there.
    pub async fn remove_node(&self, node: &NodeRow) -> Result<(), StoreError> {
        let Some((stop, jobs)) = self.store().remove_node(&node.id).await? else {
            return Ok(());
        };
        self.stop_node_jobs(stop).await;
        for job in jobs {
            self.after_task_change(job).await;
        }
        self.emit_node(node, NodeState::Down, node.draining);
        self.wake();
        Ok(())
    }

    // ---- dispatcher ----------------------------------------------------------------

    async fn dispatch_loop(self) {
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Err(e) = self.dispatch_round().await {
                tracing::warn!(error = %e, "dispatch round failed");
            }
        }
    }

    /// One round: fail jobs no node may run, then lease queued tasks to free slots.
    async fn dispatch_round(&self) -> Result<(), StoreError> {
        let _leasing = self.inner.leasing.lock().await;
        let store = self.store();
        let nodes = store.nodes().await?;
        let running = store.running_per_node().await?;
        let free_slots: usize = nodes
            .iter()
            .filter(|n| n.node_state() == NodeState::Up && !n.draining)
            .map(|n| {
                (n.slots.max(0) as usize).saturating_sub(running.get(&n.id).map_or(0, Vec::len))
            })
            .sum();
        // Most rounds (woken by every task's end) find the farm full: skip the queue then.
        // Otherwise look at a window of the queue's head: enough candidates to fill every
        // free slot even when some are blocklisted on some nodes.
        if free_slots == 0 {
            return Ok(());
        }
        let window = (free_slots as u64 * 16).clamp(64, 1000);
        let queued = store.queued_tasks(window).await?;
        if queued.is_empty() {
            return Ok(());
        }
        let mut blocked: HashMap<i64, HashSet<String>> = HashMap::new();
        let mut blocked_by_id: HashMap<String, HashSet<JobId>> = HashMap::new();
        for (job_seq, job_id, node_id) in store.blocklist(self.config().blocklist_after).await? {
            blocked.entry(job_seq).or_default().insert(node_id.clone());
            if let Ok(id) = job_id.parse() {
                blocked_by_id.entry(node_id).or_default().insert(id);
            }
        }
        // A job whose every known node is blocklisted can never finish.
        let mut unrunnable = HashSet::new();
        for task in &queued {
            let blocked_nodes = blocked.get(&task.job_seq);
            let all_blocked = !nodes.is_empty()
                && nodes
                    .iter()
                    .all(|n| blocked_nodes.is_some_and(|b| b.contains(&n.id)));
            if all_blocked && unrunnable.insert(task.job_seq) {
                let reason = format!(
                    "no node is left to run it: all {} node(s) failed {} of its tasks",
                    nodes.len(),
                    self.config().blocklist_after
                );
                tracing::warn!(job = %task.job_id, "{reason}");
                store.fail_unrunnable(task.job_seq, &reason).await?;
                self.after_task_change(task.job_seq).await;
            }
        }
        let tasks: Vec<QueuedTask> = queued
            .iter()
            .filter(|t| !unrunnable.contains(&t.job_seq))
            .filter_map(|t| {
                Some(QueuedTask {
                    task_id: t.task_id,
                    job_id: t.job_id.parse().ok()?,
                    priority: t.priority,
                    job_seq: t.job_seq,
                    index: t.idx,
                    failed_on: t
                        .failed_on
                        .as_deref()
                        .map(|s| s.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                })
            })
            .collect();
        let slots: Vec<NodeSlots> = nodes
            .iter()
            .filter(|n| n.node_state() == NodeState::Up && !n.draining)
            .map(|n| NodeSlots {
                node_id: n.id.clone(),
                free: (n.slots.max(0) as usize)
                    .saturating_sub(running.get(&n.id).map_or(0, Vec::len)),
                blocked_jobs: blocked_by_id.get(&n.id).cloned().unwrap_or_default(),
            })
            .collect();
        let job_seqs: HashMap<i64, i64> = queued.iter().map(|t| (t.task_id, t.job_seq)).collect();
        let mut touched = HashSet::new();
        for (task_id, node_id) in schedule::assign(&tasks, &slots) {
            let Some(lease) = store.lease_task(task_id, &node_id).await? else {
                continue;
            };
            let following = self.follow(&lease);
            tracing::info!(task = task_id, node = %node_id, frames = %format!("{}-{}", lease.frame_from, lease.frame_to), "dispatching");
            self.emit_task(&lease, TaskState::Running).await;
            if let Some(seq) = job_seqs.get(&task_id) {
                touched.insert(*seq);
            }
            let o = self.clone();
            self.inner.loops.spawn(async move {
                let _following = following;
                o.dispatch(lease).await
            });
        }
        for seq in touched {
            self.after_task_change(seq).await;
        }
        Ok(())
    }

    /// Sends a leased task to its node, then watches it.
    async fn dispatch(self, mut lease: Lease) {
        let client = match NodeClient::with_http(self.inner.http.clone(), &lease.node_url) {
            Ok(c) => c,
            Err(e) => return self.task_failed(&lease, &e.to_string(), &[]).await,
        };
        let request = JobRequest {
            from: Some(lease.frame_from),
            to: Some(lease.frame_to),
            scene: lease.scene.clone(),
            engine: Some(lease.engine.clone()),
            format: lease.format.clone(),
            threads: None,
            output: Some(lease.output.clone()),
        };
        let started = Instant::now();
        match client.submit(&request).await {
            Ok(view) => {
                self.inner.metrics.observe_dispatch(started.elapsed());
                let id = view.id.to_string();
                match self
                    .store()
                    .set_node_job(lease.task_id, lease.lease, &id)
                    .await
                {
                    Ok(true) => {
                        lease.node_job_id = Some(id);
                        self.watch(lease).await;
                    }
                    // Cancelled or taken back while the POST was in flight.
                    _ => {
                        let _ = client.cancel(&id).await;
                    }
                }
            }
            Err(e)
                if e.is_unreachable() || matches!(e, ClientError::Status { status: 503, .. }) =>
            {
                // The node's problem, not the task's: another node may take it.
                tracing::warn!(task = lease.task_id, node = %lease.node_id, error = %e, "dispatch failed; re-queued");
                if let Ok(true) = self.store().requeue_lease(&lease).await {
                    self.emit_task(&lease, TaskState::Queued).await;
                }
                if e.is_unreachable() {
                    // Down until a probe answers again, so the next round does not pick
                    // it again at once.
                    if let Ok(Some(node)) = self.store().node(&lease.node_id).await {
                        self.node_lost(&node).await;
                    }
                } else {
                    // Busy or shutting down: give it a moment before the next round.
                    self.pause(Duration::from_secs(1)).await;
                }
                self.wake();
            }
            Err(e) => {
                let reason = format!("node {} refused the task: {e}", lease.node_id);
                self.task_failed(&lease, &reason, &[]).await;
            }
        }
    }

    fn spawn_watcher(&self, lease: Lease, following: Following) {
        let o = self.clone();
        self.inner.loops.spawn(async move {
            let _following = following;
            o.watch(lease).await
        });
    }

    /// Records that this process follows `lease` until the returned guard is dropped.
    fn follow(&self, lease: &Lease) -> Following {
        let key = (lease.task_id, lease.lease);
        if let Ok(mut set) = self.inner.followed.lock() {
            set.insert(key);
        }
        Following {
            set: self.inner.followed.clone(),
            key,
        }
    }

    /// Keeps "every task is queued, running on a known node under a watcher, or ended":
    /// takes back tasks whose node is no longer known, watches running leases nobody
    /// follows (their node job is known), and re-queues those whose dispatch nobody is
    /// carrying out (it may never have reached the node).
    async fn reconcile_leases(&self) -> Result<(), StoreError> {
        let _leasing = self.inner.leasing.lock().await;
        let orphaned = self.store().requeue_orphaned().await?;
        let mut jobs: HashSet<i64> = orphaned.iter().copied().collect();
        if !orphaned.is_empty() {
            tracing::warn!(
                tasks = orphaned.len(),
                "re-queued tasks running on nodes that are no longer known"
            );
        }
        for lease in self.store().running_leases().await? {
            let followed = self
                .inner
                .followed
                .lock()
                .is_ok_and(|set| set.contains(&(lease.task_id, lease.lease)));
            if followed {
                continue;
            }
            if lease.node_job_id.is_some() {
                tracing::warn!(task = lease.task_id, node = %lease.node_id, "adopting a running task nobody watched");
                let following = self.follow(&lease);
                self.spawn_watcher(lease, following);
            } else if self.store().requeue_lease(&lease).await? {
                tracing::warn!(task = lease.task_id, node = %lease.node_id, "re-queued a task whose dispatch nobody carried out");
                self.emit_task(&lease, TaskState::Queued).await;
                jobs.insert(lease.job_seq);
            }
        }
        for job in &jobs {
            self.after_task_change(*job).await;
        }
        if !jobs.is_empty() {
            self.wake();
        }
        Ok(())
    }

    // ---- watcher -------------------------------------------------------------------

    /// Follows one leased task on its node until it ends or the lease moves on.
    async fn watch(&self, lease: Lease) {
        let Some(node_job) = lease.node_job_id.clone() else {
            return;
        };
        let Ok(client) = NodeClient::with_http(self.inner.http.clone(), &lease.node_url) else {
            return;
        };
        let mut since = 0;
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            match self
                .store()
                .lease_is_current(lease.task_id, lease.lease)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "lease check failed");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let answer = tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                answer = client.wait(&node_job, since, self.config().long_poll) => answer,
            };
            match answer {
                Ok(view) => {
                    // The node bumps a job's version only on progress (a new frame, a
                    // sample, a saved file, the end), so an unchanged version after a
                    // long-poll means the render made no progress meanwhile.
                    let progressed = view.version != since;
                    since = view.version;
                    self.record(&lease, &view, progressed).await;
                    if view.state.is_terminal() {
                        self.task_ended(&lease, view).await;
                        return;
                    }
                }
                Err(ClientError::NotFound { .. }) => {
                    // The node restarted or forgot the job: run the task again elsewhere.
                    tracing::warn!(task = lease.task_id, node = %lease.node_id, "node lost the task; re-queued");
                    if let Ok(true) = self.store().requeue_lease(&lease).await {
                        self.emit_task(&lease, TaskState::Queued).await;
                    }
                    self.wake();
                    return;
                }
                Err(e) => {
                    // Unreachable: the health loop decides whether the node is down.
                    tracing::debug!(task = lease.task_id, error = %e, "watch failed; retrying");
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = self.inner.shutdown.cancelled() => {}
            () = tokio::time::sleep(d) => {}
        }
    }

    /// Stores the frames a node reported saved.
    async fn record(&self, lease: &Lease, view: &JobView, progressed: bool) {
        let frames: Vec<(i64, String)> = view
            .outputs
            .iter()
            .map(|o| (o.frame, o.path.clone()))
            .collect();
        match self
            .store()
            .record_progress(lease, &frames, progressed)
            .await
        {
            Ok(new) => {
                for (frame, path) in new {
                    self.emit(Event::Frame {
                        job: lease.job_id.parse().unwrap_or_default(),
                        frame,
                        node: lease.node_id.clone(),
                        path,
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not record progress"),
        }
    }

    async fn task_ended(&self, lease: &Lease, view: JobView) {
        if let Some(finished) = view.finished_at {
            let delay = (Utc::now() - finished).to_std().unwrap_or_default();
            self.inner.metrics.observe_completion_notice(delay);
        }
        match view.state {
            NodeJobState::Completed => {
                let missing = (lease.frame_from..=lease.frame_to)
                    .filter(|f| !view.outputs.iter().any(|o| o.frame == *f))
                    .count();
                if missing > 0 {
                    let reason =
                        format!("node reported completion with {missing} frame(s) missing");
                    return self.task_failed(lease, &reason, &view.log_tail).await;
                }
                match self.store().complete_task(lease, &view.log_tail).await {
                    Ok(true) => {
                        tracing::info!(task = lease.task_id, node = %lease.node_id, "task completed");
                        self.emit_task(lease, TaskState::Completed).await;
                        self.after_task_change(lease.job_seq).await;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not complete task"),
                }
                self.wake();
            }
            NodeJobState::Failed => {
                let reason = view.failure.unwrap_or_else(|| "Blender failed".to_string());
                self.task_failed(
                    lease,
                    &format!("on {}: {reason}", lease.node_id),
                    &view.log_tail,
                )
                .await;
            }
            // Cancelled on the node by someone else (or the node shut down): not the
            // task's fault, run it again.
            _ => {
                if let Ok(true) = self.store().requeue_lease(lease).await {
                    self.emit_task(lease, TaskState::Queued).await;
                }
                self.wake();
            }
        }
    }

    async fn task_failed(&self, lease: &Lease, reason: &str, log_tail: &[String]) {
        tracing::warn!(task = lease.task_id, node = %lease.node_id, reason, "task attempt failed");
        match self
            .store()
            .fail_attempt(lease, reason, log_tail, self.config().max_attempts)
            .await
        {
            Ok(Some(state)) => {
                self.emit_task(lease, state).await;
                self.after_task_change(lease.job_seq).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not record the failure"),
        }
        self.wake();
    }

    /// Recomputes a job's state after one of its tasks changed; stops the rest of a job
    /// that just failed.
    async fn after_task_change(&self, job_seq: i64) {
        match self.store().refresh_job(job_seq).await {
            Ok((Some(job), stop)) => {
                self.stop_node_jobs(stop).await;
                if job.job_state().is_ok_and(JobState::is_terminal) {
                    tracing::info!(job = %job.id, state = %job.state, "job ended");
                }
                self.emit_job(&job).await;
            }
            Ok((None, _)) => {}
            Err(e) => tracing::warn!(error = %e, "could not refresh job"),
        }
    }

    /// Cancels jobs on nodes, all at once, each bounded by the client's timeout.
    async fn stop_node_jobs(&self, jobs: Vec<NodeJob>) {
        let cancels = jobs.into_iter().map(|job| {
            let http = self.inner.http.clone();
            async move {
                if let Ok(client) = NodeClient::with_http(http, &job.node_url) {
                    if let Err(e) = client.cancel(&job.node_job_id).await {
                        tracing::debug!(node = %job.node_url, error = %e, "could not stop node job");
                    }
                }
            }
        });
        futures_util::future::join_all(cancels).await;
    }

    // ---- health --------------------------------------------------------------------

    async fn health_loop(self) {
        loop {
            if let Ok(nodes) = self.store().nodes().await {
                let probes = nodes.into_iter().map(|n| self.clone().probe(n));
                futures_util::future::join_all(probes).await;
            }
            if let Err(e) = self.reconcile_leases().await {
                tracing::warn!(error = %e, "lease reconciliation failed");
            }
            self.fail_stalled().await;
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config().probe_interval) => {}
            }
        }
    }

    /// Asks a node for `/info`; marks it up (and reconciles it) or, once silent for
    /// `node_timeout`, down (taking its tasks back).
    async fn probe(self, node: NodeRow) {
        let Ok(client) = NodeClient::with_http(self.inner.http.clone(), &node.url) else {
            return;
        };
        let timeout = self.config().probe_interval.max(Duration::from_secs(1));
        let answer = tokio::time::timeout(timeout, client.info()).await;
        match answer {
            Ok(Ok(info)) => {
                let was_down = self
                    .store()
                    .node_seen(
                        &node.id,
                        info.slots as u64,
                        &info.hostname,
                        &info.blender_version,
                    )
                    .await
                    .unwrap_or(false);
                let first_contact = self
                    .inner
                    .reconciled
                    .lock()
                    .map(|mut r| r.insert(node.id.clone()))
                    .unwrap_or(false);
                if was_down || first_contact {
                    tracing::info!(node = %node.id, slots = info.slots, "node up");
                    self.reconcile(&node, &client).await;
                    self.emit_node(&node, NodeState::Up, node.draining);
                    self.wake();
                }
            }
            _ => {
                let silent_since = node.last_seen.unwrap_or(node.registered_at);
                let silent = (Utc::now() - silent_since).to_std().unwrap_or_default();
                if node.node_state() == NodeState::Up && silent >= self.config().node_timeout {
                    self.node_lost(&node).await;
                }
            }
        }
    }

    async fn node_lost(&self, node: &NodeRow) {
        if !self.store().node_down(&node.id).await.unwrap_or(false) {
            return;
        }
        if let Ok(mut r) = self.inner.reconciled.lock() {
            r.remove(&node.id);
        }
        tracing::warn!(node = %node.id, "node down; re-queuing its tasks");
        match self.store().requeue_node_tasks(&node.id).await {
            Ok((_, jobs)) => {
                for job in jobs {
                    self.after_task_change(job).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not re-queue tasks"),
        }
        self.emit_node(node, NodeState::Down, node.draining);
        self.wake();
    }

    /// Stops jobs a node is running that no current lease refers to: left over from
    /// before a partition, a node loss, or an orchestrator restart.
    async fn reconcile(&self, node: &NodeRow, client: &NodeClient) {
        let Ok(jobs) = client.jobs().await else {
            return;
        };
        let live: HashSet<String> = self
            .store()
            .live_node_jobs(&node.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        let now = Utc::now();
        let stray: Vec<NodeJob> = jobs
            .into_iter()
            .filter(|j| !j.state.is_terminal())
            .filter(|j| !live.contains(&j.id.to_string()))
            .filter(|j| now - j.submitted_at > RECONCILE_GRACE)
            .map(|j| NodeJob {
                node_url: node.url.clone(),
                node_job_id: j.id.to_string(),
            })
            .collect();
        if !stray.is_empty() {
            tracing::info!(node = %node.id, count = stray.len(), "stopping stray node jobs");
            self.stop_node_jobs(stray).await;
        }
    }

    async fn fail_stalled(&self) {
        let stall = self.config().stall_timeout;
        let Ok(before) = chrono::TimeDelta::from_std(stall).map(|d| Utc::now() - d) else {
            return;
        };
        let Ok(stalled) = self.store().stalled_leases(before).await else {
            return;
        };
        for lease in stalled {
            if let Some(job) = &lease.node_job_id {
                self.stop_node_jobs(vec![NodeJob {
                    node_url: lease.node_url.clone(),
                    node_job_id: job.clone(),
                }])
                .await;
            }
            let reason = format!("no progress on {} for {}s", lease.node_id, stall.as_secs());
            self.task_failed(&lease, &reason, &[]).await;
        }
    }

    // ---- events --------------------------------------------------------------------

    async fn emit_job(&self, job: &JobRow) {
        let (Ok(id), Ok(state)) = (job.job_id(), job.job_state()) else {
            return;
        };
        let done = self
            .store()
            .frame_progress(job.seq)
            .await
            .map(|p| p.0)
            .unwrap_or(0);
        self.emit(Event::Job {
            id,
            state,
            frames_done: done,
            frames_total: (job.frame_to - job.frame_from + 1) as u64,
        });
    }

    fn emit_node(&self, node: &NodeRow, state: NodeState, draining: bool) {
        self.emit(Event::Node {
            id: node.id.clone(),
            url: node.url.clone(),
            state,
            draining,
        });
    }

    async fn emit_task(&self, lease: &Lease, state: TaskState) {
        self.emit(Event::Task {
            job: lease.job_id.parse().unwrap_or_default(),
            id: lease.task_id,
            state,
            node: Some(lease.node_id.clone()),
        });
    }
}
