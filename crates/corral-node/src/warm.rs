//! The warm backend: one Blender per slot, started with the node and kept between tasks,
//! driven by Corral's driver script over a channel of its own (see
//! `corral_blender::warm`). A worker keeps its scene loaded while tasks name the same,
//! unchanged file, so a task skips Blender's start-up and, with Cycles' persistent data,
//! most of the scene set-up.
//!
//! Everything that holds for a cold render holds here: a cancelled task's worker is killed
//! (with everything under it) and a fresh one takes its place; a worker that dies or breaks
//! its protocol fails only the task it had; frames are reported only once their file is
//! written; Blender's lines for a task go to that task's log. A worker is replaced after
//! `--recycle-after-frames` frames or once its memory passes `--recycle-above-mb`.

use crate::backend::{BoxFuture, RenderBackend, RenderMode, RenderTask, TaskEnd, TaskEvents};
use corral_blender::warm::{RenderRequest, WarmWorker, WorkerEvent, TASK_END_MARKER};
use corral_blender::ExitOutcome;
use corral_core::node_api::WorkerInfo;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long after a task's `done` the worker's end-of-task marker lines may take to come
/// through its output pipes; past that, the task ends without them.
const MARKER_GRACE: Duration = Duration::from_secs(2);

/// How long a worker whose channel closed may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The warm backend's settings.
#[derive(Debug, Clone)]
pub struct WarmSettings {
    pub blender: PathBuf,
    /// The driver script, written into the node's data folder.
    pub driver: PathBuf,
    pub slots: usize,
    /// A worker is replaced after rendering this many frames (0: never).
    pub recycle_after_frames: u64,
    /// A worker is replaced when its resident memory passes this many bytes after a task.
    pub recycle_above_bytes: Option<u64>,
}

pub struct WarmBackend {
    shared: Arc<Shared>,
}

struct Shared {
    settings: WarmSettings,
    idle: Mutex<Vec<Worker>>,
    /// Every live worker by number, for `GET /info`.
    info: Mutex<BTreeMap<u64, WorkerInfo>>,
    next_number: AtomicU64,
    /// Set at shutdown: no worker is started or kept from then on.
    closing: AtomicBool,
    /// True once the workers started with the node are in `idle`.
    warmed: tokio::sync::watch::Receiver<bool>,
}

/// A worker and what the node knows about it.
struct Worker {
    number: u64,
    inner: WarmWorker,
    blender_pid: Option<u32>,
    tasks: u64,
    frames: u64,
}

/// What became of a worker after a task.
enum After {
    /// It may take the next task.
    Keep,
    /// It must go (killed, dead, or it broke its protocol); a fresh one replaces it.
    Replace,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl WarmBackend {
    /// Starts a worker per slot (in the background; a task waits for them). Must be
    /// called within a Tokio runtime.
    pub fn start(settings: WarmSettings) -> WarmBackend {
        let (warmed_tx, warmed) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            settings,
            idle: Mutex::new(Vec::new()),
            info: Mutex::new(BTreeMap::new()),
            next_number: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            warmed,
        });
        let starting = Arc::clone(&shared);
        tokio::spawn(async move {
            for _ in 0..starting.settings.slots {
                match starting.spawn_resolved().await {
                    Ok(worker) => lock(&starting.idle).push(worker),
                    // A task tries again, and fails with the reason, if it still cannot.
                    Err(e) => tracing::error!(error = %e, "cannot start a warm Blender worker"),
                }
            }
            let _ = warmed_tx.send(true);
        });
        WarmBackend { shared }
    }
}

impl Shared {
    fn spawn(&self) -> Result<Worker, String> {
        let inner = WarmWorker::start(&self.settings.blender, &self.settings.driver)
            .map_err(|e| e.to_string())?;
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        lock(&self.info).insert(
            number,
            WorkerInfo {
                pid: inner.process.child_pid(),
                state: "idle".into(),
                tasks: 0,
                frames: 0,
            },
        );
        tracing::debug!(worker = number, "warm Blender worker started");
        Ok(Worker {
            number,
            inner,
            blender_pid: None,
            tasks: 0,
            frames: 0,
        })
    }

    /// An idle worker that is still alive, or a fresh one.
    async fn take(&self) -> Result<Worker, String> {
        let _ = self.warmed.clone().wait_for(|warmed| *warmed).await;
        loop {
            let Some(mut worker) = lock(&self.idle).pop() else {
                break;
            };
            if worker.inner.process.has_exited() {
                tracing::warn!(
                    worker = worker.number,
                    "a warm Blender worker died while idle"
                );
                self.retire(worker).await;
                continue;
            }
            return Ok(worker);
        }
        self.spawn_resolved().await
    }

    /// A fresh worker whose Blender process id is known (its supervisor reports it within
    /// milliseconds of the start).
    async fn spawn_resolved(&self) -> Result<Worker, String> {
        let mut worker = self.spawn()?;
        worker.blender_pid = Some(worker.inner.process.blender_pid().await);
        self.set_info(&worker, "idle");
        Ok(worker)
    }

    fn set_info(&self, worker: &Worker, state: &str) {
        if let Some(info) = lock(&self.info).get_mut(&worker.number) {
            if let Some(pid) = worker.blender_pid {
                info.pid = pid;
            }
            info.state = state.into();
            info.tasks = worker.tasks;
            info.frames = worker.frames;
        }
    }

    /// Kills a worker with everything under it.
    async fn retire(&self, mut worker: Worker) {
        lock(&self.info).remove(&worker.number);
        if let Err(e) = worker.inner.process.kill().await {
            tracing::warn!(worker = worker.number, error = %e, "cannot reap a warm Blender worker");
        }
    }

    /// Puts a worker back after a task, or replaces it.
    async fn give_back(&self, worker: Worker, after: After) {
        let recycle = match after {
            After::Replace => Some("replaced".to_string()),
            After::Keep => self.recycle_reason(&worker),
        };
        if self.closing.load(Ordering::SeqCst) {
            self.retire(worker).await;
            return;
        }
        match recycle {
            None => {
                self.set_info(&worker, "idle");
                lock(&self.idle).push(worker);
            }
            Some(why) => {
                tracing::info!(worker = worker.number, frames = worker.frames, reason = %why, "replacing a warm Blender worker");
                self.retire(worker).await;
                match self.spawn_resolved().await {
                    Ok(fresh) => lock(&self.idle).push(fresh),
                    Err(e) => tracing::error!(error = %e, "cannot start a warm Blender worker"),
                }
            }
        }
    }

    fn recycle_reason(&self, worker: &Worker) -> Option<String> {
        let settings = &self.settings;
        if settings.recycle_after_frames > 0 && worker.frames >= settings.recycle_after_frames {
            return Some(format!("it rendered {} frames", worker.frames));
        }
        let limit = settings.recycle_above_bytes?;
        let rss = resident_bytes(worker.blender_pid?)?;
        (rss > limit).then(|| format!("it uses {} MB", rss / 1_000_000))
    }

    async fn render(
        &self,
        task: &RenderTask,
        events: &mut dyn TaskEvents,
        cancel: CancellationToken,
    ) -> TaskEnd {
        let mut worker = match self.take().await {
            Ok(worker) => worker,
            Err(e) => return TaskEnd::Failed(e),
        };
        self.set_info(&worker, "rendering");
        let (end, after) = run_task(&mut worker, task, events, cancel).await;
        if matches!(end, TaskEnd::Finished) {
            worker.tasks += 1;
        }
        self.give_back(worker, after).await;
        end
    }
}

/// The worker's resident memory, from `/proc`.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A key that changes whenever the scene file may have changed, or is another file: its
/// path, device, inode, size, and modification and status-change times. Equal keys let a
/// worker keep the scene. The path counts because a scene's relative paths (textures,
/// libraries) are resolved from its folder: two workspaces hard-link the same cached
/// scene (one inode), and the second must not render with the first one's files.
fn scene_key(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}:{}:{}.{}:{}.{}",
        corral_blender::warm::path_hex(path),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

async fn run_task(
    worker: &mut Worker,
    task: &RenderTask,
    events: &mut dyn TaskEvents,
    cancel: CancellationToken,
) -> (TaskEnd, After) {
    let blender_pid = match worker.blender_pid {
        Some(pid) => pid,
        None => {
            let pid = worker.inner.process.blender_pid().await;
            worker.blender_pid = Some(pid);
            pid
        }
    };
    // Unique per task on this worker; it marks the end of the task's output.
    let name = format!("{}-{}", task.job, worker.tasks);
    let marker = format!("{TASK_END_MARKER} {name}");
    events.started(
        blender_pid,
        &format!(
            "# warm Blender worker {blender_pid} (task {} on it): {} frames {}-{} engine {}{} threads {} into {}",
            worker.tasks + 1,
            task.scene.display(),
            task.range.from(),
            task.range.to(),
            task.engine.blender_name(),
            task.format
                .map(|f| format!(" format {}", f.blender_name()))
                .unwrap_or_default(),
            task.threads,
            task.output_pattern.display()
        ),
    );
    // What the worker printed while idle (its start-up, on its first task) goes first;
    // a marker of an earlier task that came too late is not Blender's output.
    while let Ok(line) = worker.inner.lines.try_recv() {
        if !is_marker(&line) {
            events.line(&line);
        }
    }
    let request = RenderRequest {
        task: name.clone(),
        scene: task.scene.clone(),
        scene_key: scene_key(&task.scene),
        engine: task.engine.blender_name().into(),
        format: task.format.map(|f| f.blender_name().into()),
        threads: task.threads,
        from: task.range.from(),
        to: task.range.to(),
        output: task.output_pattern.clone(),
    };
    if let Err(e) = worker.inner.send(&request).await {
        return (
            lost(worker, Some(format!("cannot reach it: {e}"))).await,
            After::Replace,
        );
    }
    let mut done = false;
    let mut markers = 0;
    let mut lines_open = true;
    let mut events_open = true;
    let mut frames = 0;
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return (TaskEnd::Cancelled, After::Replace),
            line = worker.inner.lines.recv(), if lines_open => match line {
                Some(line) if line == marker => {
                    markers += 1;
                    // One on stdout, one on stderr: every line of the task is in.
                    if done && markers >= 2 {
                        break;
                    }
                }
                Some(line) if is_marker(&line) => {}
                Some(line) => events.line(&line),
                None => lines_open = false,
            },
            event = worker.inner.events.recv(), if events_open => match event {
                Some(Ok(WorkerEvent::Frame { task: t, frame })) if t == name => {
                    // The worker waits for the answer: a truncated render ends here.
                    let go = events.frame_starting(frame);
                    if let Err(e) = worker.inner.answer_frame(&name, go).await {
                        return (lost(worker, Some(format!("cannot reach it: {e}"))).await, After::Replace);
                    }
                }
                Some(Ok(WorkerEvent::Saved { task: t, frame, path })) if t == name => {
                    frames += 1;
                    events.saved(frame, &path);
                }
                Some(Ok(WorkerEvent::Done { task: t, error })) if t == name => {
                    if let Some(error) = error {
                        events.error(&error);
                    }
                    done = true;
                    if markers >= 2 {
                        break;
                    }
                    grace.as_mut().reset(tokio::time::Instant::now() + MARKER_GRACE);
                }
                // `hello`, and anything about another task, changes nothing here.
                Some(Ok(_)) => {}
                Some(Err(broken)) => {
                    events.line(&format!("# corral: the worker broke its protocol: {broken}"));
                    return (lost(worker, Some(format!("it broke its protocol: {broken}"))).await, After::Replace);
                }
                None => events_open = false,
            },
            () = &mut grace, if done => break,
        }
        if !done && (!events_open || !lines_open) {
            // The worker is going away mid-task: keep its last lines, then its status.
            while let Ok(Some(line)) =
                tokio::time::timeout(Duration::from_millis(500), worker.inner.lines.recv()).await
            {
                events.line(&line);
            }
            return (lost(worker, None).await, After::Replace);
        }
    }
    worker.frames += frames;
    if !events_open || !lines_open {
        return (TaskEnd::Finished, After::Replace);
    }
    (TaskEnd::Finished, After::Keep)
}

/// Whether `line` is a driver's end-of-task marker (for any task).
fn is_marker(line: &str) -> bool {
    line.strip_prefix(TASK_END_MARKER)
        .is_some_and(|rest| rest.starts_with(' '))
}

/// The end of a task whose worker is lost: how it exited, or `why` it was given up on
/// (then it is killed).
async fn lost(worker: &mut Worker, why: Option<String>) -> TaskEnd {
    if let Some(why) = why {
        let _ = worker.inner.process.kill().await;
        return TaskEnd::Failed(format!("the Blender worker was lost: {why}"));
    }
    match tokio::time::timeout(EXIT_GRACE, worker.inner.process.wait()).await {
        Ok(Ok(ExitOutcome::Exited(code))) => TaskEnd::Exited(code),
        Ok(Ok(ExitOutcome::Signalled(sig))) => TaskEnd::Signalled(sig),
        Ok(Ok(ExitOutcome::Cancelled)) => TaskEnd::Cancelled,
        Ok(Err(e)) => TaskEnd::Failed(format!("lost track of the Blender worker: {e}")),
        Err(_) => {
            let _ = worker.inner.process.kill().await;
            TaskEnd::Failed("the Blender worker stopped answering and was killed".into())
        }
    }
}

impl RenderBackend for WarmBackend {
    fn mode(&self) -> RenderMode {
        RenderMode::Warm
    }

    fn asks_before_each_frame(&self) -> bool {
        true
    }

    fn saves_from_output(&self) -> bool {
        false
    }

    fn render<'a>(
        &'a self,
        task: &'a RenderTask,
        events: &'a mut dyn TaskEvents,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, TaskEnd> {
        Box::pin(self.shared.render(task, events, cancel))
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        lock(&self.shared.info).values().cloned().collect()
    }

    fn shut_down(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            self.shared.closing.store(true, Ordering::SeqCst);
            let _ = self.shared.warmed.clone().wait_for(|warmed| *warmed).await;
            let idle: Vec<Worker> = std::mem::take(&mut *lock(&self.shared.idle));
            for worker in idle {
                self.shared.retire(worker).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marker_lines_are_markers() {
        assert!(is_marker("corral-task-end 01a2-0"));
        assert!(!is_marker("corral-task-ended"));
        assert!(!is_marker("Fra:1 corral-task-end x"));
    }

    #[test]
    fn a_rewritten_scene_gets_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.blend");
        std::fs::write(&path, b"BLENDER-v304 one").unwrap();
        let first = scene_key(&path).unwrap();
        assert_eq!(scene_key(&path).unwrap(), first, "a key is stable");
        // Replaced by a save (a new file renamed over it): another inode.
        let tmp = dir.path().join("a.tmp");
        std::fs::write(&tmp, b"BLENDER-v304 two").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(scene_key(&path).unwrap(), first);
        assert!(scene_key(&dir.path().join("missing.blend")).is_none());
        // The same file (one inode) at another path, as two workspaces link it: another key.
        let linked = dir.path().join("b.blend");
        std::fs::hard_link(&path, &linked).unwrap();
        assert_ne!(scene_key(&linked), scene_key(&path));
    }

    #[test]
    fn resident_memory_is_read_from_proc() {
        let rss = resident_bytes(std::process::id()).unwrap();
        assert!(rss > 1_000_000, "{rss}");
        assert_eq!(resident_bytes(u32::MAX), None);
    }
}
