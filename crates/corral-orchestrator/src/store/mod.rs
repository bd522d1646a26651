//! The port between the orchestrator and its database: the [`Store`] trait, and the typed
//! read models it answers with. No database row or transaction crosses it.
//!
//! The main operation is [`Store::apply`]: it loads a task and its job, asks the pure
//! lifecycle ([`corral_core::lifecycle::step`]) what the command does, and writes the task,
//! the job's derived state and tally, and the frames reported with it, in one transaction,
//! or nothing when the command is stale. Events are published only from what was applied,
//! after it was committed, to every orchestrator sharing the database.
//!
//! [`sql::SqlStore`] implements it for SQLite (the default, embedded) and PostgreSQL
//! (several orchestrators on one database), with the same SQL.

pub mod sql;
mod writer;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_core::lifecycle::{Command, JobCommand, JobLife, JobRefusal, Refusal, Task};
use corral_core::node_api::NodeInfo;
use corral_core::orchestrator_api::{Event, FrameSpan, JobState, JobSubmission, NodeState};
use corral_core::schedule::{Assignment, QueuedTask};
use corral_core::tls::Fingerprint;
use corral_core::{
    BlobHash, Engine, FrameRange, ImageFormat, JobId, LeaseId, NodeId, NodeJobId, OrchestratorId,
    TaskId,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::broadcast;

pub use sql::{DatabaseUrl, SqlStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time (a server restarting,
    /// a full pool): the caller may try again later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Database(String),
    #[error("database migration: {0}")]
    Migrate(String),
    #[error("database holds a value this version cannot read: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A job to store, validated.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub submission: JobSubmission,
    /// Output pattern relative to the nodes' output folder.
    pub output: String,
}

/// What the store said to a submission.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Stored, with its tasks, on disk.
    Accepted(Box<JobRecord>),
    /// Refused: this many jobs are unfinished, the most allowed.
    Full(u64),
}

/// The render settings every task of a job shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSpec {
    /// Scene path relative to the nodes' scenes folder; `None` for their default scene
    /// (or for an uploaded scene).
    pub scene: Option<String>,
    /// The uploaded scene's manifest (never with `scene`): nodes fetch it from the
    /// orchestrator and upload their frames to it.
    pub manifest: Option<BlobHash>,
    pub engine: Engine,
    pub format: Option<ImageFormat>,
    pub output: String,
}

/// A job as stored: its lifecycle and what it renders.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub life: JobLife,
    pub range: FrameRange,
    /// Frames per task; `None` when the farm sizes the job's tasks.
    pub chunk_size: Option<u64>,
    pub priority: i64,
    pub render: RenderSpec,
    pub submitted_at: DateTime<Utc>,
    /// When the latest frame was reported saved (for the ETA).
    pub last_frame_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    pub fn id(&self) -> JobId {
        self.life.id
    }

    pub fn state(&self) -> JobState {
        self.life.state
    }
}

/// A task as stored, with what people read about it besides its lifecycle.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub task: Task,
    /// When the latest attempt started and the task ended.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Blender's last lines from the latest attempt.
    pub log_tail: Vec<String>,
}

/// A frame a node reported saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRecord {
    pub frame: i64,
    pub node: NodeId,
    pub path: String,
    pub done_at: DateTime<Utc>,
}

/// A frame a node reports saved, as part of a report about a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFrame {
    pub frame: i64,
    pub path: String,
}

/// What comes with a command from a node's report: frames saved (recorded if the lease
/// holds) and Blender's last lines (kept with the task).
#[derive(Debug, Clone, Default)]
pub struct Note {
    pub frames: Vec<SavedFrame>,
    pub log_tail: Option<Vec<String>>,
}

/// A render node as stored.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub id: NodeId,
    pub url: String,
    pub state: NodeState,
    pub draining: bool,
    pub slots: u64,
    pub hostname: Option<String>,
    pub blender_version: Option<String>,
    pub cores: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// The most frames it renders in one task (its `--max-frames`), once it answered a
    /// probe: the dispatcher gives it no longer piece.
    pub max_frames: Option<u64>,
    pub frames_rendered: u64,
    pub last_seen: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
    /// Tasks running there now.
    pub running: Vec<TaskId>,
    /// The secret the node sent when it joined, sent back to it on every call.
    pub secret: Option<NodeSecret>,
    /// The fingerprint of the certificate the node serves HTTPS with, when it sent one:
    /// the only certificate the orchestrator accepts from it.
    pub fingerprint: Option<Fingerprint>,
}

/// The most frames a node renders in one task, as recorded from its `GET /info`: none when
/// it names none (0; no real node does), and at most what the database holds.
pub fn max_frames_of(info: &NodeInfo) -> Option<u64> {
    (info.max_frames_per_job > 0).then(|| info.max_frames_per_job.min(i64::MAX as u64))
}

/// What [`Store::free_slots`] answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreeSlots {
    /// Nodes with room, in registration order, and how many renders each can start.
    pub nodes: Vec<(NodeId, u64)>,
    /// The most frames a task may have on each of those nodes that named a limit.
    pub max_frames: HashMap<NodeId, u64>,
    /// Slots of the whole farm that takes work (up and not draining).
    pub farm: u64,
}

/// A node's own secret (`Authorization: Bearer` on calls to it). Kept as given, since the
/// orchestrator must present it; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSecret(pub String);

impl std::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecret(***)")
    }
}

/// What a token lets its holder do (docs/remote-farm-protocol.md, "Credentials").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// The whole API.
    Client,
    /// Only `POST /api/v1/nodes`: joining the farm.
    Join,
    /// One node's credential: its registration refresh, manifests, blobs, frame uploads.
    Node,
}

impl TokenKind {
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Client => "client",
            TokenKind::Join => "join",
            TokenKind::Node => "node",
        }
    }
}

impl std::str::FromStr for TokenKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "client" => Ok(TokenKind::Client),
            "join" => Ok(TokenKind::Join),
            "node" => Ok(TokenKind::Node),
            _ => Err(format!("`{s}` is not a token kind (client, join or node)")),
        }
    }
}

/// A token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub kind: TokenKind,
    /// SHA-256 of the token's text, 64 lowercase hex characters.
    pub hash: String,
    /// A label for people; a node token's is its node's id.
    pub name: String,
    pub created: DateTime<Utc>,
    pub revoked: Option<DateTime<Utc>>,
}

/// A running task with what a dispatcher or watcher needs to follow it on its node.
#[derive(Debug, Clone)]
pub struct RunningTask {
    pub task: TaskId,
    pub lease: LeaseId,
    pub job: JobId,
    pub range: FrameRange,
    pub node: NodeId,
    /// Where the node is reached; `None` when the node is no longer known.
    pub node_url: Option<String>,
    pub node_job: Option<NodeJobId>,
    pub owner: OrchestratorId,
    pub started_at: DateTime<Utc>,
    pub progress_at: DateTime<Utc>,
    pub render: RenderSpec,
    /// Its job leaves the size of its tasks to the farm (no chunk size): a render of it
    /// may be cut to a target length once its frame time is measured.
    pub sized_by_farm: bool,
}

/// A render to stop on a node, with where the node is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopAt {
    pub node: NodeId,
    pub url: String,
    pub node_job: NodeJobId,
}

/// One applied change of one task, with its job's state after it.
#[derive(Debug, Clone)]
pub struct Change {
    pub task: Task,
    pub job: JobLife,
    /// A render its node should stop (the task went elsewhere or ended).
    pub stop: Option<StopAt>,
    /// The queued task made of the frames cut off this one (a `Cut`).
    pub cut_off: Option<TaskId>,
    pub events: Vec<Event>,
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Applied: the commanded task's change first, then any tasks of its job cancelled
    /// because this change failed the job.
    Changed(Vec<Change>),
    /// Refused (a stale lease, or not allowed in the task's state): nothing changed.
    Refused(Refusal),
    /// No such task.
    Unknown,
}

impl Applied {
    /// The commanded task's change, if it was applied.
    pub fn change(&self) -> Option<&Change> {
        match self {
            Applied::Changed(changes) => changes.first(),
            _ => None,
        }
    }

    pub fn is_applied(&self) -> bool {
        matches!(self, Applied::Changed(_))
    }

    /// Every render to stop because of it.
    pub fn stops(&self) -> Vec<StopAt> {
        match self {
            Applied::Changed(changes) => changes.iter().filter_map(|c| c.stop.clone()).collect(),
            _ => Vec::new(),
        }
    }
}

/// What [`Store::job_command`] did.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// Done; `changes` are the tasks it changed (with renders to stop).
    Done {
        job: Box<JobRecord>,
        changes: Vec<Change>,
    },
    Refused(JobRefusal),
    Unknown,
}

/// The dispatcher's right to lease, valid for its holder while the term is current and
/// not expired; every lease names it, so a deposed or paused orchestrator leases nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: OrchestratorId,
    pub term: i64,
    pub expires_at: DateTime<Utc>,
}

/// Which running tasks [`Store::running`] lists.
#[derive(Debug, Clone)]
pub enum RunningFilter {
    All,
    /// Those followed by this orchestrator.
    OwnedBy(OrchestratorId),
    /// Those whose node reported nothing since this time.
    StalledSince(DateTime<Utc>),
    /// Those running on this node.
    OnNode(NodeId),
    /// Those followed by an orchestrator not in this list (it stopped, or never was).
    OwnerNotIn(Vec<OrchestratorId>),
}

/// Counts for `/metrics`, read from the jobs' tallies (never by counting tasks).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub jobs: HashMap<JobState, u64>,
    pub tasks: [u64; 5],
    pub frames_done: u64,
    pub nodes_up: u64,
    pub nodes_known: u64,
}

/// The orchestrator's database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every event applied by any orchestrator sharing this database, after its commit.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// True when several orchestrators may share this database (PostgreSQL); false when
    /// one process uses it at a time (SQLite), so any other owner is an earlier process.
    fn shared(&self) -> bool;

    /// How many reports ([`Store::apply`]) this store applies in one transaction when they
    /// come together: on SQLite, those waiting for the one writer share a commit; on
    /// PostgreSQL each is a transaction of its own, holding a pooled connection and its
    /// job's row lock until it commits.
    fn applies_together(&self) -> usize;

    // ---- jobs ----------------------------------------------------------------------

    /// Stores a job and its queued tasks, durably, unless `max_unfinished` jobs are
    /// unfinished already.
    async fn insert_job(&self, job: NewJob, max_unfinished: u64) -> Result<Admission>;
    async fn job(&self, id: JobId) -> Result<Option<JobRecord>>;
    /// Jobs, newest first, optionally of one state; and how many there are in all.
    async fn jobs(
        &self,
        state: Option<JobState>,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<JobRecord>, u64)>;
    /// A page of a job's tasks, in order.
    async fn tasks(&self, job: JobId, offset: u64, limit: u64) -> Result<Vec<TaskRecord>>;
    /// One task, with its job's id (to check a node's upload against its lease).
    async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>>;
    /// The frames of `range` a node reported saved.
    async fn frames(&self, job: JobId, range: FrameRange) -> Result<Vec<FrameRecord>>;
    /// The frames of the job's tasks that failed for good and were not saved, as runs.
    async fn failed_frames(&self, job: JobId) -> Result<Vec<FrameSpan>>;
    /// Every manifest a job names (each once): what keeps blobs from being collected.
    async fn job_manifests(&self) -> Result<Vec<BlobHash>>;
    /// Cancels, pauses, resumes, re-queues or re-prioritises a job, by the domain's rules.
    async fn job_command(&self, job: JobId, command: JobCommand) -> Result<JobOutcome>;

    // ---- the lifecycle -------------------------------------------------------------

    /// Applies `command` to a task atomically with its job's state, recording the note's
    /// frames when the command's lease holds; nothing changes when it is refused.
    async fn apply(&self, task: TaskId, command: Command, note: Note) -> Result<Applied>;
    /// Leases tasks to nodes, each only if it is still queued and its node is known, up,
    /// not draining and has a free slot, and only while `fence` holds; a piece asked for
    /// (`Assignment::frames`), or what is more than the node's `--max-frames`, is cut off
    /// the task first (the rest stays queued). Answers the leases
    /// made, in one transaction.
    async fn lease(&self, assignments: &[Assignment], fence: &Fence) -> Result<Vec<RunningTask>>;
    /// The queue's head: queued tasks of runnable jobs by priority, submission, position.
    async fn queue_head(&self, limit: u64) -> Result<Vec<QueuedTask>>;
    /// `(job, node)` pairs where the node failed at least `threshold` of the job's tasks,
    /// among unfinished jobs.
    async fn blocklist(&self, threshold: u32) -> Result<Vec<(JobId, NodeId)>>;
    async fn running(&self, filter: RunningFilter) -> Result<Vec<RunningTask>>;
    /// Takes back every running task whose node is no longer known.
    async fn take_back_orphans(&self) -> Result<Vec<Change>>;

    // ---- nodes ---------------------------------------------------------------------

    /// Adds a node by URL, or finds it. New nodes are down until a probe answers.
    async fn upsert_node(&self, url: &str) -> Result<NodeRecord>;
    async fn nodes(&self) -> Result<Vec<NodeRecord>>;
    /// The nodes that can take work now (up, not draining, with a free slot), with their
    /// free slots, and the slots of every up and undrained node, busy or not.
    async fn free_slots(&self) -> Result<FreeSlots>;
    async fn node(&self, id: &NodeId) -> Result<Option<NodeRecord>>;
    /// Records a probe's answer. True if the node was down before.
    async fn node_seen(&self, id: &NodeId, info: &NodeInfo) -> Result<bool>;
    /// Records that these nodes answered a probe at `at` and are as recorded: only the
    /// `last_seen` of those still up moves. One statement for a whole probe round: a
    /// thousand nodes written one transaction each held the one SQLite writer for a
    /// second every few seconds.
    async fn nodes_still_up(&self, ids: &[NodeId], at: DateTime<Utc>) -> Result<()>;
    /// Marks an up node down and takes its running tasks back, atomically; `None` if it
    /// was not up.
    async fn node_lost(&self, id: &NodeId) -> Result<Option<Vec<Change>>>;
    async fn set_draining(&self, id: &NodeId, draining: bool) -> Result<Option<NodeRecord>>;
    /// Forgets a node and takes its running tasks back, atomically; `None` if unknown.
    async fn remove_node(&self, id: &NodeId) -> Result<Option<Vec<Change>>>;
    /// Records the secret a node sent when it joined (sent back on every call to it).
    async fn set_node_secret(&self, id: &NodeId, secret: &NodeSecret) -> Result<()>;
    /// Records (or clears) the certificate fingerprint a node registered with.
    async fn set_node_fingerprint(&self, id: &NodeId, fp: Option<&Fingerprint>) -> Result<()>;

    // ---- tokens --------------------------------------------------------------------

    /// Stores a new token by its hash.
    async fn create_token(&self, kind: TokenKind, hash: &str, name: &str) -> Result<TokenRecord>;
    /// Every token, oldest first, revoked ones included.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Revokes a token; false if there is no such token (revoking twice keeps the first time).
    async fn revoke_token(&self, id: i64) -> Result<bool>;
    /// Revokes every unrevoked token of `kind` named `name` (a node's earlier credentials
    /// when it joins again); answers how many.
    async fn revoke_tokens_named(&self, kind: TokenKind, name: &str) -> Result<u64>;
    /// The token with this hash, revoked or not.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;

    // ---- orchestrators -------------------------------------------------------------

    /// Says this orchestrator is alive (and where its API is).
    async fn heartbeat(&self, me: &OrchestratorId, url: Option<&str>) -> Result<()>;
    /// Takes or renews the dispatcher's lease for `ttl`; `None` while another holds it.
    async fn lead(&self, me: &OrchestratorId, ttl: Duration) -> Result<Option<Fence>>;
    /// Orchestrators that heartbeat since `since`.
    async fn live_orchestrators(&self, since: DateTime<Utc>) -> Result<Vec<OrchestratorId>>;

    // ---- health --------------------------------------------------------------------

    async fn counts(&self) -> Result<Counts>;
    async fn ping(&self) -> Result<()>;
}
