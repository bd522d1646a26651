//! The orchestrator as a handle: its store, its node gateway, its identity among the
//! orchestrators sharing the database, and the commands the API carries out. The moving
//! parts (dispatcher, watchers, health, reconciliation, membership) are workers in
//! [`crate::workers`], all ending on the one shutdown token.
//!
//! Every decision is written to the store first, so a restart (or another orchestrator)
//! resumes from the database alone.

use crate::config::OrchestratorConfig;
use crate::gateway::{HttpGateway, NodeGateway};
use crate::metrics::Metrics;
use crate::store::{
    Admission, Applied, Fence, JobOutcome, NewJob, NodeRecord, NodeSecret, Note, RunningTask,
    SqlStore, StopAt, Store, StoreError,
};
use chrono::{DateTime, Utc};
use corral_core::lifecycle::{Command, JobCommand};
use corral_core::orchestrator_api::{Event, JobSubmission, NodeState};
use corral_core::tls::Fingerprint;
use corral_core::{FieldError, JobId, LeaseId, NodeId, OrchestratorId, TaskId};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the dispatcher's lease lasts without renewal; it is renewed every second.
pub const LEADER_TTL: Duration = Duration::from_secs(5);
/// An orchestrator that has not heartbeat for this long is gone: another adopts the tasks
/// it followed. Heartbeats are sent every second.
pub const ORCHESTRATOR_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to the running orchestrator; cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub id: OrchestratorId,
    pub store: Arc<dyn Store>,
    pub gateway: Arc<dyn NodeGateway>,
    pub config: OrchestratorConfig,
    pub metrics: Metrics,
    /// Asks the dispatcher for a round now (new work, a free slot, a new node).
    pub wake: Notify,
    pub shutdown: CancellationToken,
    pub workers: TaskTracker,
    /// `(task, lease)` pairs a dispatch or watch of this process follows right now. A task
    /// this process owns but does not follow has nobody to end it; reconciliation adopts it.
    pub followed: Arc<Mutex<HashSet<(TaskId, LeaseId)>>>,
    /// Held while leases are made and their followers registered, and while reconciliation
    /// looks for unfollowed tasks, so a lease just made is never taken for an abandoned one.
    pub leasing: tokio::sync::Mutex<()>,
    /// The dispatcher's lease while this orchestrator holds it.
    pub fence: watch::Sender<Option<Fence>>,
    /// The renders this process watches, as last seen: what tail stealing picks from.
    pub at_work: Mutex<std::collections::HashMap<TaskId, AtWork>>,
    /// Each node's time per frame of each job it renders or rendered, as this process's
    /// watchers measured it (jobs the farm sizes only): pieces and stolen tails are sized to
    /// the node that takes them. Entries of jobs with nothing queued or at work are dropped
    /// by the dispatcher.
    pub frame_ms: Mutex<std::collections::HashMap<(JobId, NodeId), f64>>,
    /// When each node's stray renders were last looked for (absent: not since it came up).
    pub swept: Mutex<std::collections::HashMap<NodeId, std::time::Instant>>,
    /// When each node last answered this process's probe. The store's `last_seen` is
    /// written only every so often (a thousand nodes probed each second would otherwise
    /// be a thousand writes a second); silence is measured from the later of the two.
    pub answered: Mutex<std::collections::HashMap<NodeId, DateTime<Utc>>>,
    /// Since when every membership round reached the database; `None` after a failure.
    /// Others' heartbeats are judged only after this long, so an outage everyone lived
    /// through is not mistaken for their death.
    pub healthy_since: Mutex<Option<std::time::Instant>>,
    /// Events that are never stored (render progress, preview videos), for this process's
    /// own SSE subscribers.
    pub local_events: broadcast::Sender<Event>,
    /// The dashboard's thumbnails and preview videos.
    pub media: crate::dashboard::Media,
    /// Uploaded blobs, manifests and frames (the remote-farm protocol).
    pub storage: crate::storage::Storage,
    /// Held while a node joins under a join token (see `http::register_node`).
    pub joins: tokio::sync::Mutex<()>,
    /// Held by each watcher writing render progress (frames saved mid-render), as many at
    /// once as the store applies in one transaction ([`Store::applies_together`]: on
    /// SQLite, those waiting share a commit; on PostgreSQL, one). Progress that finds none
    /// free waits for the watcher's next look, so the ends of renders and new leases,
    /// which free and fill slots, never queue behind a thousand renders' progress; and
    /// what progress writes meanwhile, a render's end does not write all at once. On
    /// SQLite, one writer at a time left most of a farm's frames to be written with the
    /// renders' ends, which then came a thousand together.
    pub progress_writers: tokio::sync::Semaphore,
    /// Job details as last served, while nothing of their jobs changed.
    pub details: crate::detail_cache::DetailCache,
}

/// A render a watcher follows, as it last saw it.
#[derive(Debug, Clone)]
pub(crate) struct AtWork {
    pub job: JobId,
    pub lease: LeaseId,
    pub url: String,
    pub node_job: String,
    /// The frame being rendered now (or the next to render).
    pub current: i64,
    /// The render's last frame, as the node knows it.
    pub to: i64,
    /// Its time per frame in milliseconds, measured by its watcher, when its task is one
    /// the farm sizes and a frame was saved since the watcher started.
    pub frame_ms: Option<f64>,
    /// The dispatcher already asked its node to stop at a target length (once per render:
    /// a node that kept its frames is not asked again every round).
    pub trimmed: bool,
    /// When the watcher last heard from the node (`current` was true then).
    pub seen: Instant,
}

impl AtWork {
    /// The render as the scheduling policy sees it: at the frame it has reached by now, at
    /// its measured frame time. A watcher of one of a thousand renders hears from its node
    /// about once a second, by when a render at 25 ms a frame is forty frames further on;
    /// balancing its end from where it was heard counted frames it had already rendered.
    pub fn now(&self, task: TaskId) -> corral_core::schedule::RenderAtWork {
        let rendered_since = self.frame_ms.filter(|ms| *ms > 0.0).map_or(0, |ms| {
            (self.seen.elapsed().as_secs_f64() * 1000.0 / ms) as i64
        });
        corral_core::schedule::RenderAtWork {
            task,
            current: self
                .current
                .saturating_add(rendered_since)
                .min(self.to)
                .max(self.current),
            to: self.to,
            frame_ms: self.frame_ms,
        }
    }
}

/// Marks a lease as followed for as long as it lives.
pub(crate) struct Following {
    set: Arc<Mutex<HashSet<(TaskId, LeaseId)>>>,
    key: (TaskId, LeaseId),
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

impl Orchestrator {
    /// Opens the database the configuration names and starts the orchestrator.
    pub async fn start(config: OrchestratorConfig) -> Result<Orchestrator, StoreError> {
        let store = SqlStore::open(&config.database).await?;
        Self::start_with(config, store, Arc::new(HttpGateway::new())).await
    }

    /// Starts on a given store and gateway: registers the `--node` nodes, adopts the tasks
    /// an earlier process (or a stopped orchestrator) left running, and starts the workers.
    pub async fn start_with(
        config: OrchestratorConfig,
        store: Arc<dyn Store>,
        gateway: Arc<dyn NodeGateway>,
    ) -> Result<Orchestrator, StoreError> {
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
        let id = OrchestratorId::generate();
        store
            .heartbeat(&id, config.advertise_url.as_deref())
            .await?;
        let (fence, _) = watch::channel(store.lead(&id, LEADER_TTL).await?);
        let media = crate::dashboard::Media::new(&config);
        let storage = crate::storage::Storage::new(&config);
        let details = crate::detail_cache::DetailCache::new(store.subscribe());
        let progress_writers = store.applies_together();
        let o = Orchestrator {
            inner: Arc::new(Inner {
                id,
                store,
                gateway,
                config,
                metrics: Metrics::new(),
                wake: Notify::new(),
                shutdown: CancellationToken::new(),
                workers: TaskTracker::new(),
                followed: Arc::new(Mutex::new(HashSet::new())),
                leasing: tokio::sync::Mutex::new(()),
                fence,
                swept: Mutex::new(std::collections::HashMap::new()),
                answered: Mutex::new(std::collections::HashMap::new()),
                at_work: Mutex::new(std::collections::HashMap::new()),
                frame_ms: Mutex::new(std::collections::HashMap::new()),
                healthy_since: Mutex::new(Some(std::time::Instant::now())),
                local_events: broadcast::channel(1024).0,
                media,
                storage,
                joins: tokio::sync::Mutex::new(()),
                progress_writers: tokio::sync::Semaphore::new(progress_writers),
                details,
            }),
        };
        tracing::info!(orchestrator = %o.id(), leader = o.fence().is_some(), "orchestrator started");
        for node in o.store().nodes().await? {
            o.gateway()
                .remember_node(&node.url, node.secret.as_ref(), node.fingerprint.as_ref());
        }
        // Resume what an earlier process left running before any new dispatch.
        crate::workers::reconciler::round(&o).await?;
        crate::workers::spawn_all(&o);
        Ok(o)
    }

    pub fn id(&self) -> &OrchestratorId {
        &self.inner.id
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The uploaded blobs, manifests and frames this orchestrator keeps.
    pub fn storage(&self) -> &crate::storage::Storage {
        &self.inner.storage
    }

    pub fn config(&self) -> &OrchestratorConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn gateway(&self) -> &dyn NodeGateway {
        self.inner.gateway.as_ref()
    }

    /// Every change applied by any orchestrator sharing the database.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.store.subscribe()
    }

    /// Events of this process that are never stored ([`Event::Progress`],
    /// [`Event::Preview`]).
    pub fn subscribe_local(&self) -> broadcast::Receiver<Event> {
        self.inner.local_events.subscribe()
    }

    /// Sends an event to this process's subscribers only (nobody listening is fine).
    pub(crate) fn publish_local(&self, event: Event) {
        let _ = self.inner.local_events.send(event);
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// The dispatcher's lease, if this orchestrator holds it and it has not expired.
    pub fn fence(&self) -> Option<Fence> {
        self.inner
            .fence
            .borrow()
            .clone()
            .filter(|f| f.expires_at > Utc::now())
    }

    /// True once this orchestrator has reached the database without a break for `d`.
    pub(crate) fn healthy_for(&self, d: Duration) -> bool {
        self.inner
            .healthy_since
            .lock()
            .ok()
            .and_then(|s| *s)
            .is_some_and(|since| since.elapsed() >= d)
    }

    /// True while this orchestrator holds the dispatcher's lease.
    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    /// Asks the dispatcher for a round now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops every worker and watcher and waits for them. Running tasks stay leased in the
    /// database; the next start (or another orchestrator) follows them again.
    pub async fn shut_down(&self) {
        self.inner.shutdown.cancel();
        self.inner.workers.close();
        self.inner.workers.wait().await;
    }

    /// Sleeps for `d`, or less if the orchestrator is shutting down.
    pub(crate) async fn pause(&self, d: Duration) {
        tokio::select! {
            () = self.inner.shutdown.cancelled() => {}
            () = tokio::time::sleep(d) => {}
        }
    }

    /// Records that this process follows `task` until the returned guard is dropped.
    pub(crate) fn follow(&self, task: &RunningTask) -> Following {
        let key = (task.task, task.lease);
        if let Ok(mut set) = self.inner.followed.lock() {
            set.insert(key);
        }
        Following {
            set: self.inner.followed.clone(),
            key,
        }
    }

    pub(crate) fn is_followed(&self, task: &RunningTask) -> bool {
        self.inner
            .followed
            .lock()
            .is_ok_and(|set| set.contains(&(task.task, task.lease)))
    }

    /// Applies a lifecycle command and stops the renders it ends (awaited).
    pub(crate) async fn apply(
        &self,
        task: TaskId,
        command: Command,
        note: Note,
    ) -> Result<Applied, StoreError> {
        let applied = self.store().apply(task, command, note).await?;
        self.stop_renders(applied.stops()).await;
        if applied.is_applied() {
            self.wake();
        }
        Ok(applied)
    }

    /// Stops renders on their nodes, all at once, each bounded by the client's timeout.
    pub(crate) async fn stop_renders(&self, stops: Vec<StopAt>) {
        let cancels = stops.into_iter().map(|stop| async move {
            if let Err(e) = self
                .gateway()
                .cancel(&stop.url, stop.node_job.as_str())
                .await
            {
                tracing::debug!(node = %stop.node, error = %e, "could not stop a render");
            }
        });
        futures_util::future::join_all(cancels).await;
    }

    // ---- commands from the API -----------------------------------------------------

    /// Stores a job and its tasks; answers once they are committed.
    /// The farm's rules for a submission's scene, applied before it is accepted: a job
    /// naming no scene (nor manifest) gets the farm's default scene, and where this
    /// orchestrator shares the nodes' scenes folder (`corral up`), the scene must be a file
    /// inside it (symbolic links resolved), so it is refused now rather than failing later.
    pub async fn check_scene(&self, sub: &mut JobSubmission) -> Result<(), FieldError> {
        let config = self.config();
        if sub.manifest.is_some() {
            return Ok(());
        }
        let defaulted = sub.scene.is_none();
        if defaulted {
            sub.scene.clone_from(&config.default_scene);
        }
        let Some(root) = &config.scenes_dir else {
            return Ok(());
        };
        let hint = format!(
            "put scene.blend in `{}`, or start corral up with --blend FILE",
            root.display()
        );
        let Some(scene) = &sub.scene else {
            return Err(FieldError::new(
                "scene",
                format!("required: this farm has no default scene ({hint})"),
            ));
        };
        let unopenable = |why: String| {
            if defaulted {
                FieldError::new(
                    "scene",
                    format!("required: this farm's default scene `{scene}` {why} ({hint})"),
                )
            } else {
                FieldError::new("scene", format!("scene `{scene}` {why}"))
            }
        };
        let root = tokio::fs::canonicalize(root)
            .await
            .map_err(|e| unopenable(format!("cannot be opened: the scenes folder: {e}")))?;
        let path = tokio::fs::canonicalize(root.join(scene))
            .await
            .map_err(|e| unopenable(format!("cannot be opened: {e}")))?;
        if !path.starts_with(&root) {
            return Err(unopenable("leads outside the farm's scenes folder".into()));
        }
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| unopenable(format!("cannot be opened: {e}")))?;
        if !meta.is_file() {
            return Err(unopenable("is not a file".into()));
        }
        Ok(())
    }

    pub async fn submit(&self, sub: JobSubmission) -> Result<Admission, StoreError> {
        let id = JobId::new();
        let output = sub
            .output
            .clone()
            .unwrap_or_else(|| format!("{id}/frame_####"));
        let job = NewJob {
            id,
            submission: sub,
            output,
        };
        let admission = self
            .store()
            .insert_job(job, self.config().max_unfinished_jobs)
            .await?;
        if let Admission::Accepted(job) = &admission {
            tracing::info!(job = %job.id(), frames = %job.range, chunk = job.chunk_size, "job accepted");
            self.wake();
        }
        Ok(admission)
    }

    /// Carries out a job command by the domain's rules; a cancel answers after the nodes
    /// stopped the job's renders.
    pub async fn job_command(
        &self,
        job: JobId,
        command: JobCommand,
    ) -> Result<JobOutcome, StoreError> {
        let outcome = self.store().job_command(job, command).await?;
        if let JobOutcome::Done { job, changes } = &outcome {
            let stops = changes.iter().filter_map(|c| c.stop.clone()).collect();
            self.stop_renders(stops).await;
            tracing::info!(job = %job.id(), state = %job.state().as_str(), "job {}", command.name());
            self.wake();
        }
        Ok(outcome)
    }

    /// Adds a node (or hears its heartbeat). A node that is new or down is probed at once,
    /// so it gets work without waiting for the next health round. `secret`, when the node
    /// sent one, is what every later call to it carries, and `tls` the certificate it must
    /// present (both recorded before the first probe, which already needs them).
    pub async fn register_node(
        &self,
        url: &str,
        secret: Option<NodeSecret>,
        tls: Option<Fingerprint>,
    ) -> Result<NodeRecord, StoreError> {
        let mut node = self.store().upsert_node(url).await?;
        if let Some(secret) = secret {
            if node.secret.as_ref() != Some(&secret) {
                self.store().set_node_secret(&node.id, &secret).await?;
                node.secret = Some(secret);
            }
        }
        if node.fingerprint != tls {
            self.store()
                .set_node_fingerprint(&node.id, tls.as_ref())
                .await?;
            node.fingerprint = tls;
        }
        self.gateway()
            .remember_node(&node.url, node.secret.as_ref(), node.fingerprint.as_ref());
        if node.state == NodeState::Down {
            let o = self.clone();
            let probe = node.clone();
            self.inner.workers.spawn(async move {
                // A node that was down is written at once: nothing is left to batch.
                crate::workers::health::probe(&o, probe).await;
            });
        }
        Ok(node)
    }

    pub async fn set_draining(
        &self,
        node: &NodeId,
        draining: bool,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let node = self.store().set_draining(node, draining).await?;
        self.wake();
        Ok(node)
    }

    /// Forgets a node; its running tasks go back to the queue and are stopped there, and
    /// its credential stops working (the machine may join again, as a new node).
    pub async fn remove_node(&self, node: &NodeId) -> Result<bool, StoreError> {
        let url = self.store().node(node).await?.map(|n| n.url);
        let Some(changes) = self.store().remove_node(node).await? else {
            return Ok(false);
        };
        self.store()
            .revoke_tokens_named(crate::store::TokenKind::Node, node.as_str())
            .await?;
        self.stop_renders(changes.into_iter().filter_map(|c| c.stop).collect())
            .await;
        // Its renders are stopped (which needed its secret and certificate): forget them.
        if let Some(url) = url {
            self.gateway().remember_node(&url, None, None);
        }
        self.wake();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_work(current: i64, to: i64, frame_ms: Option<f64>, seen_ago: Duration) -> AtWork {
        AtWork {
            job: JobId::new(),
            lease: LeaseId(1),
            url: "http://node:3000".into(),
            node_job: "job-1".into(),
            current,
            to,
            frame_ms,
            trimmed: false,
            seen: Instant::now()
                .checked_sub(seen_ago)
                .expect("two seconds ago is a time"),
        }
    }

    #[test]
    fn a_render_is_seen_where_it_has_got_to_since_its_node_answered() {
        let ago = Duration::from_secs(2);
        // Heard two seconds ago at frame 10, rendering a frame every 250 ms: at 18 by now
        // (for the next 249 ms).
        let now = at_work(10, 100, Some(250.0), ago).now(TaskId(7));
        assert_eq!((now.task, now.current, now.to), (TaskId(7), 18, 100));
        // Never past its last frame.
        assert_eq!(at_work(10, 12, Some(250.0), ago).now(TaskId(7)).current, 12);
        // Not measured: where it was heard.
        assert_eq!(at_work(10, 100, None, ago).now(TaskId(7)).current, 10);
    }
}
