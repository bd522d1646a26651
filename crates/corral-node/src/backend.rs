//! The render backend: what stands between the job table and Blender. The runner hands a
//! backend one task (a frame range of a scene, with its settings and where Blender writes)
//! and hears back, through [`TaskEvents`], what Blender does, then how the task ended. It
//! does not know whether Blender was started for the task ([`crate::cold`]) or was
//! already running ([`crate::warm`]).

use corral_core::node_api::WorkerInfo;
use corral_core::{Engine, FrameRange, ImageFormat, JobId};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio_util::sync::CancellationToken;

/// A boxed future, so that backends can sit behind `dyn RenderBackend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a node runs Blender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RenderMode {
    /// A Blender process per task, started for it (`blender -b SCENE ... -a`).
    Cold,
    /// A Blender process per slot, started with the node and kept between tasks.
    #[default]
    Warm,
}

impl RenderMode {
    pub fn name(self) -> &'static str {
        match self {
            RenderMode::Cold => "cold",
            RenderMode::Warm => "warm",
        }
    }
}

impl std::str::FromStr for RenderMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cold" => Ok(RenderMode::Cold),
            "warm" => Ok(RenderMode::Warm),
            _ => Err(format!("`{s}` is not `warm` or `cold`")),
        }
    }
}

/// One task: render `range` of `scene` into `output_pattern`.
#[derive(Debug, Clone)]
pub struct RenderTask {
    pub job: JobId,
    /// Canonical path of the scene.
    pub scene: PathBuf,
    pub engine: Engine,
    pub format: Option<ImageFormat>,
    pub range: FrameRange,
    /// Blender's `-t`; 0 keeps the scene's own setting (all cores by default).
    pub threads: u32,
    /// Absolute output pattern with `#` for the frame number, in the job's partial folder.
    pub output_pattern: PathBuf,
}

/// What a backend reports while a task runs. Every argument comes from Blender: the
/// receiver checks it.
pub trait TaskEvents: Send {
    /// Blender (process id `blender_pid`) has the task; `header` is the log's first line.
    fn started(&mut self, blender_pid: u32, header: &str);
    /// One line Blender printed (stdout or stderr).
    fn line(&mut self, line: &str);
    /// Blender would start rendering `frame` next (a warm worker asks before each frame);
    /// answers whether it may. False when the render was truncated before `frame`: the
    /// task then ends there, done.
    fn frame_starting(&mut self, frame: i64) -> bool;
    /// The file of `frame` is completely written at `path`.
    fn saved(&mut self, frame: i64, path: &Path);
    /// Blender reported that the task failed, and why.
    fn error(&mut self, message: &str);
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    /// Blender exited by itself with this code.
    Exited(i32),
    /// Blender was killed by this signal, not by us.
    Signalled(i32),
    /// A warm worker finished the task and is still running (the outcome is in the
    /// events: frames saved, errors).
    Finished,
    /// The task was cancelled: Blender was killed.
    Cancelled,
    /// The task could not run or its Blender was lost, for this reason.
    Failed(String),
}

/// Runs tasks through Blender.
pub trait RenderBackend: Send + Sync {
    fn mode(&self) -> RenderMode;

    /// Whether Blender's `Saved:` output lines are how saved frames are known. When false,
    /// they are only logged: the backend reports saves through [`TaskEvents::saved`].
    fn saves_from_output(&self) -> bool;

    /// Whether Blender asks before each frame ([`TaskEvents::frame_starting`]), so a
    /// truncated range ends by itself. When false, Blender renders the range it was
    /// started with, and the runner stops it once the new last frame is saved.
    fn asks_before_each_frame(&self) -> bool;

    /// Runs `task` to its end; on `cancel`, kills its Blender within a second. At most
    /// `slots` tasks run at once (the job table sees to it).
    fn render<'a>(
        &'a self,
        task: &'a RenderTask,
        events: &'a mut dyn TaskEvents,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, TaskEnd>;

    /// The Blender processes kept between tasks, for `GET /info`.
    fn workers(&self) -> Vec<WorkerInfo>;

    /// Ends every Blender process the backend keeps; called once no task runs.
    fn shut_down(&self) -> BoxFuture<'_, ()>;
}
