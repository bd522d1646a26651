//! The node's settings, resolved and checked once at start-up.

pub use crate::backend::RenderMode;
use corral_client::OrchestratorClient;
use std::path::PathBuf;
use std::time::Duration;

/// What to do with running Blender processes on SIGTERM/SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownPolicy {
    /// Kill running renders at once (an orchestrator re-queues them elsewhere).
    #[default]
    Cancel,
    /// Let running renders finish (queued ones are cancelled), then exit.
    Finish,
}

/// Everything a node needs to run. Paths are absolute and folders exist (see
/// `corral`'s `node` subcommand, which builds this from flags).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub blender: PathBuf,
    pub blender_version: String,
    /// Scene rendered when a job names none.
    pub default_scene: Option<PathBuf>,
    /// Folder that per-job scene paths are confined to (canonical).
    pub scenes_root: Option<PathBuf>,
    /// Folder frames are written to (canonical).
    pub output_dir: PathBuf,
    /// Folder for per-job logs (canonical).
    pub data_dir: PathBuf,
    pub slots: usize,
    pub threads: u32,
    pub max_frames: u64,
    pub max_queued: usize,
    /// Ended jobs remembered (with their logs); older ones are forgotten.
    pub keep_jobs: usize,
    pub on_shutdown: ShutdownPolicy,
    /// Longest `?wait=` a client may ask for.
    pub max_wait: Duration,
    /// A Blender per task (`cold`) or a Blender per slot kept running (`warm`).
    pub render_mode: RenderMode,
    /// The warm workers' driver script, written into the data folder (warm mode).
    pub warm_driver: Option<PathBuf>,
    /// A warm worker is replaced after this many frames (0: never).
    pub recycle_after_frames: u64,
    /// A warm worker is replaced once its resident memory passes this many MB (0: never).
    pub recycle_above_mb: u64,
    /// A render that prints nothing for this long is killed and its job failed.
    pub stall_timeout: Option<Duration>,
    /// The orchestrator the node joined (`--orchestrator`): uploaded scenes' manifests and
    /// blobs are read from it, and `deliver: upload` frames are sent to it. Without one,
    /// jobs naming a `manifest` or `deliver: upload` are refused.
    pub orchestrator: Option<OrchestratorClient>,
    /// Bytes of blobs the cache keeps (`--cache-size`); those in use may take it above.
    pub cache_size: u64,
    /// The secret this node sent its orchestrator when it joined with a token: every
    /// call but `/healthz` must then carry it as `Authorization: Bearer`, so the node
    /// takes work only from its orchestrator. `None`: the API is open (the tutorial).
    pub secret: Option<String>,
}

impl NodeConfig {
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The content-addressed cache of uploaded scenes' files.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }

    /// Where uploaded scenes are laid out, a folder per render.
    pub fn workspaces_dir(&self) -> PathBuf {
        self.data_dir.join("workspaces")
    }

    /// Where `deliver: upload` renders write their frames until they are delivered.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }
}
