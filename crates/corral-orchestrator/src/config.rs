//! The orchestrator's settings.

use crate::store::DatabaseUrl;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the orchestrator needs to run; `corral orchestrator` builds it from flags.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Folder of the orchestrator's files (the SQLite database by default).
    pub data_dir: PathBuf,
    /// The database: SQLite in `data_dir` unless `--database` names another.
    pub database: DatabaseUrl,
    /// This orchestrator's API as others reach it (recorded with its heartbeat).
    pub advertise_url: Option<String>,
    /// Nodes given on the command line (`--node`); others register themselves.
    pub static_nodes: Vec<String>,
    /// `corral up`: the static nodes are this farm's only loopback nodes, so loopback nodes
    /// left in the database by an earlier run (their ports are gone) are forgotten at
    /// start, before the dispatcher can lease them anything.
    pub forget_other_loopback_nodes: bool,
    /// Frames per task when a submission names none (the tutorial's BATCH_SIZE); `None`:
    /// the farm sizes tasks from the frame times it measures.
    pub batch_size: Option<u64>,
    /// How long a task the farm sizes aims to render: its pieces are cut to about this
    /// much rendering at the job's measured frame time, and a render longer than this
    /// gives the rest of its frames back to the queue once its frame time is measured.
    pub task_length: Duration,
    pub max_frames: u64,
    /// Most jobs queued, running or paused at once; more are refused with 503.
    pub max_unfinished_jobs: u64,
    /// Attempts a task gets before it (and its job) fails.
    pub max_attempts: u32,
    /// Failed tasks of one job after which a node gets no more of that job's tasks.
    pub blocklist_after: u32,
    /// A node that has not answered a probe for this long is down; its tasks are re-queued.
    pub node_timeout: Duration,
    /// How often nodes are probed.
    pub probe_interval: Duration,
    /// A running task with no progress for this long is treated as failed.
    pub stall_timeout: Duration,
    /// Longest long-poll sent to a node.
    pub long_poll: Duration,
    /// The folder where nodes write frames, when this orchestrator shares it (`--frames`;
    /// `corral up` sets its output folder). The dashboard reads frames for thumbnails and
    /// preview videos only at paths that resolve inside it.
    pub frames_dir: Option<PathBuf>,
    /// FFmpeg, for preview videos.
    pub ffmpeg: PathBuf,
    /// Largest blob (a file of an uploaded scene) or uploaded frame accepted, in bytes.
    /// Blobs and uploaded frames live in `data_dir` whatever the database.
    pub max_blob_bytes: u64,
    /// How long a blob (a file of an uploaded scene, or a manifest) that no job names is
    /// kept after its last use (uploaded, asked about, named by a manifest or a job); then
    /// it is collected. Also bounds how long unfinished uploads are kept (at most a day).
    pub blob_retention: Duration,
    /// Bytes of free space the data folder keeps: an upload that would leave less is
    /// refused with 507 before any of it is written.
    pub min_free_bytes: u64,
    /// The scenes folder this orchestrator shares with its nodes (`corral up`): a job's
    /// scene is checked at submission to be a file inside it, so a scene that cannot be
    /// opened is refused with a 400 instead of failing on the nodes later.
    pub scenes_dir: Option<PathBuf>,
    /// The scene (relative to `scenes_dir`) of a job that names none, such as the
    /// tutorial's `POST /render`. Without it such a job goes to the nodes as it is (each
    /// renders its own `--blend`), unless `scenes_dir` is set: then it is refused.
    pub default_scene: Option<String>,
    /// Every API call needs a token (`Authorization: Bearer`; see [`crate::auth`]). Off by
    /// default; `corral orchestrator` turns it on off loopback or with `--auth`.
    pub auth: bool,
}

impl OrchestratorConfig {
    /// [`Self::task_length`] in the scheduling policy's unit.
    pub fn task_length_ms(&self) -> f64 {
        self.task_length.as_secs_f64() * 1000.0
    }

    /// Defaults for everything but the data folder.
    pub fn new(data_dir: PathBuf) -> Self {
        OrchestratorConfig {
            database: DatabaseUrl::in_data_dir(&data_dir),
            data_dir,
            advertise_url: None,
            static_nodes: Vec::new(),
            forget_other_loopback_nodes: false,
            batch_size: None,
            task_length: Duration::from_millis(corral_core::schedule::TARGET_TASK_MS as u64),
            max_frames: 100_000,
            max_unfinished_jobs: 10_000,
            max_attempts: 3,
            blocklist_after: 3,
            node_timeout: Duration::from_secs(8),
            probe_interval: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(600),
            long_poll: Duration::from_secs(20),
            frames_dir: None,
            ffmpeg: PathBuf::from("ffmpeg"),
            max_blob_bytes: crate::storage::DEFAULT_MAX_BLOB_BYTES,
            blob_retention: crate::storage::DEFAULT_BLOB_RETENTION,
            min_free_bytes: crate::storage::DEFAULT_MIN_FREE_BYTES,
            scenes_dir: None,
            default_scene: None,
            auth: false,
        }
    }
}
