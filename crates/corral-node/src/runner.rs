//! Runs one job through the node's render backend: prepares its folders and log, follows
//! what Blender reports, moves each frame into place once it is written, and decides how
//! the job ended. The same for a cold and a warm backend.
//!
//! Architecture invariant: frames appear in the output folder atomically. Blender writes
//! into a per-job folder beside the output (same file system); each file is renamed to its
//! final name only once Blender reports it written (`Saved:` in its output for a cold
//! render, a `saved` message from a warm worker, sent after the file is closed), so a
//! killed or re-run render never leaves a half-written frame under a final name. The
//! partial folder is removed when the job ends, whatever the outcome.
//!
//! A job on an uploaded scene (`manifest`) first has its workspace laid out from the blob
//! cache ([`crate::workspace`]), and renders the manifest's root there; the workspace is
//! removed when the job ends. A `deliver: upload` job has Blender write into the node's
//! outbox (`DATA/outbox/{job}/`) and its frames uploaded ([`crate::deliver`]) instead of
//! moved into `--output`; it completes only once every frame was delivered.

use crate::backend::{RenderTask, TaskEnd, TaskEvents};
use crate::deliver::{Delivery, Destination, Stopped};
use crate::job_log::JobLog;
use crate::jobs::{Job, Node, LOG_TAIL_LINES};
use corral_blender::{OutputParser, ParsedLine};
use corral_core::node_api::{Delivery as Deliver, JobSpec};
use corral_core::{FrameRange, JobId, JobState};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where one job's files go.
struct Paths {
    /// The node's output folder (canonical): nothing is placed outside it.
    root: PathBuf,
    /// Blender's `-o` pattern inside the per-job partial folder.
    partial_pattern: PathBuf,
    partial_dir: PathBuf,
    /// Folder the finished frames are renamed into (not used when frames are uploaded).
    final_dir: PathBuf,
    log: PathBuf,
}

impl Paths {
    fn for_job(node: &Node, id: JobId, output: &str) -> Paths {
        let config = node.config();
        let final_pattern = config.output_dir.join(output);
        let file_pattern = final_pattern
            .file_name()
            .map_or_else(|| "blender-render_####".into(), |n| n.to_os_string());
        let final_dir = final_pattern
            .parent()
            .map_or_else(|| config.output_dir.clone(), Path::to_path_buf);
        // Beside the final files, so the rename never crosses a file system.
        let partial_dir = final_dir.join(format!(".corral-partial-{id}"));
        Paths {
            root: config.output_dir.clone(),
            partial_pattern: partial_dir.join(file_pattern),
            partial_dir,
            final_dir,
            log: config.logs_dir().join(format!("{id}.log")),
        }
    }

    /// For a `deliver: upload` job: Blender writes into the node's outbox, and frames
    /// leave from there.
    fn outbox(node: &Node, id: JobId, output: &str) -> Paths {
        let config = node.config();
        let file_pattern = Path::new(output)
            .file_name()
            .map_or_else(|| "blender-render_####".into(), |n| n.to_os_string());
        let partial_dir = config.outbox_dir().join(id.to_string());
        Paths {
            root: config.outbox_dir(),
            partial_pattern: partial_dir.join(file_pattern),
            final_dir: partial_dir.clone(),
            partial_dir,
            log: config.logs_dir().join(format!("{id}.log")),
        }
    }
}

/// The path of job `id`'s full Blender log.
pub fn log_path(node: &Node, id: JobId) -> PathBuf {
    node.config().logs_dir().join(format!("{id}.log"))
}

/// Runs job `id` (already marked running) to its end and records the outcome.
pub async fn run_job(node: Node, id: JobId) {
    let Some((task, cancel, spec)) = node.with_job(id, |job| {
        let task = RenderTask {
            job: id,
            scene: job.scene.clone(),
            engine: job.spec.engine,
            format: job.spec.format,
            range: job.spec.range,
            threads: job.threads(node.config().threads),
            output_pattern: PathBuf::new(),
        };
        (task, job.cancel.clone(), job.spec.clone())
    }) else {
        return;
    };
    let paths = match spec.deliver {
        Deliver::Local => Paths::for_job(&node, id, &spec.output),
        Deliver::Upload => Paths::outbox(&node, id, &spec.output),
    };
    let result = render(&node, task, &spec, &paths, cancel.clone()).await;
    // The partial folder holds only what Blender wrote and we did not move: debris.
    let _ = std::fs::remove_dir_all(&paths.partial_dir);
    // Anything a killed supervisor left behind was handed to the node: end it now.
    let _ = tokio::task::spawn_blocking(corral_blender::process::reap_orphans).await;
    node.finish(id, |job| match result {
        Ok(end) => end.apply(job),
        // Cancelled before Blender had it (while its scene was being fetched).
        Err(_) if cancel.is_cancelled() => {
            job.state = JobState::Cancelled;
            job.failure = Some("cancelled before the render started".into());
        }
        Err(reason) => {
            job.state = JobState::Failed;
            job.failure = Some(reason);
        }
    });
    if let Some(view) = node.view(id) {
        tracing::info!(job = %id, state = %view.state, frames_done = view.frames_done, failure = ?view.failure, "job ended");
    }
}

/// How a task ended, before it is written into the job.
struct End {
    outcome: TaskEnd,
    /// The task was killed because Blender went silent for this long.
    stalled: Option<Duration>,
    first_error: Option<String>,
    /// Frames of the range Blender wrote no file for.
    missing: Vec<i64>,
    /// Frames placed under their final name whose file is gone by the end.
    vanished: Vec<i64>,
    /// Why frame delivery stopped the render (`deliver: upload`).
    delivery: Option<Stopped>,
    /// Blender was stopped because it had saved the last frame of its truncated range.
    stopped_at_end: bool,
}

impl End {
    /// The job's end state and, unless it completed, why. Completion needs all four: a
    /// clean end (Blender exited 0, or a warm worker finished the task), no error reported,
    /// a file for every frame of the range, and every placed file still there.
    fn verdict(&self) -> (JobState, Option<String>) {
        match &self.delivery {
            Some(Stopped::LeaseMoved(why)) => return (JobState::Cancelled, Some(why.clone())),
            Some(Stopped::Failed(why)) => return (JobState::Failed, Some(why.clone())),
            None => {}
        }
        // A clean end completes when every frame is there, and fails naming what is not.
        let clean = |ended: &str| -> Option<String> {
            match &self.first_error {
                Some(err) => Some(format!("Blender reported an error: {err}")),
                None if !self.missing.is_empty() => Some(format!(
                    "{ended} but wrote no file for frame(s) {}",
                    corral_core::frames::frame_list(&self.missing)
                )),
                None if !self.vanished.is_empty() => Some(format!(
                    "the files of frame(s) {} were placed but are gone",
                    corral_core::frames::frame_list(&self.vanished)
                )),
                None => None,
            }
        };
        let failure = match &self.outcome {
            TaskEnd::Cancelled => match self.stalled {
                Some(silence) => format!(
                    "Blender printed nothing for {} s and was killed (stalled)",
                    silence.as_secs()
                ),
                None if self.stopped_at_end => {
                    match clean("Blender was stopped after the render's new last frame") {
                        Some(failure) => failure,
                        None => return (JobState::Completed, None),
                    }
                }
                None => {
                    return (
                        JobState::Cancelled,
                        Some("cancelled while rendering".into()),
                    )
                }
            },
            TaskEnd::Failed(why) => why.clone(),
            TaskEnd::Signalled(sig) => {
                format!("Blender was killed by {}", signal_name(*sig))
            }
            TaskEnd::Exited(code) if *code != 0 => match &self.first_error {
                Some(err) => format!("Blender exited with code {code}: {err}"),
                None => format!("Blender exited with code {code}"),
            },
            TaskEnd::Exited(_) | TaskEnd::Finished => {
                let ended = if self.outcome == TaskEnd::Finished {
                    "Blender finished the task"
                } else {
                    "Blender exited 0"
                };
                match clean(ended) {
                    Some(failure) => failure,
                    None => return (JobState::Completed, None),
                }
            }
        };
        (JobState::Failed, Some(failure))
    }

    fn apply(self, job: &mut Job) {
        if let TaskEnd::Exited(code) = self.outcome {
            job.exit_code = Some(code);
        }
        // `outputs` lists frames that are on disk.
        for frame in &self.vanished {
            job.outputs.remove(frame);
        }
        let (state, failure) = self.verdict();
        job.state = state;
        job.failure = failure;
    }
}

async fn render(
    node: &Node,
    mut task: RenderTask,
    spec: &JobSpec,
    paths: &Paths,
    cancel: CancellationToken,
) -> Result<End, String> {
    let id = task.job;
    let (mut log, create_error) = JobLog::create(&paths.log);
    if let Some(why) = create_error {
        log_failed(node, id, why);
    }
    // An uploaded scene: laid out from the cache, removed when this function returns
    // (after the render and the frames' delivery).
    let workspace = match &spec.manifest {
        Some(manifest) => {
            let workspace = prepare_workspace(node, id, manifest, &mut log, &cancel).await?;
            task.scene = workspace.scene.clone();
            let scene = workspace.scene.clone();
            node.update(id, |job| {
                job.scene = scene;
                true
            });
            Some(workspace)
        }
        None => None,
    };
    // The outbox is made on first use (the output folder exists from the start).
    std::fs::create_dir_all(&paths.root)
        .map_err(|e| format!("cannot create folder `{}`: {e}", paths.root.display()))?;
    // Checked at submission, and again now: a folder may have become a symbolic link
    // leading out of the output folder while the job was queued.
    crate::confine::check_output_dir(&paths.root, &paths.final_dir)?;
    for dir in [&paths.final_dir, &paths.partial_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create folder `{}`: {e}", dir.display()))?;
        crate::confine::open_confined_dir(&paths.root, dir)?;
    }
    task.output_pattern = paths.partial_pattern.clone();
    let backend = node.backend();
    let started = Instant::now();
    // A Blender that prints nothing for `--stall-timeout` is killed; the task fails.
    let stop = cancel.child_token();
    let delivery = match (
        spec.deliver,
        &node.config().orchestrator,
        spec.job,
        &spec.tag,
    ) {
        (Deliver::Upload, Some(client), Some(job), Some(tag)) => Some(Delivery::start(
            node.clone(),
            id,
            Destination {
                client: client.clone(),
                job,
                tag: tag.clone(),
            },
            stop.clone(),
            cancel.clone(),
        )),
        (Deliver::Upload, ..) => {
            return Err("frames are to be uploaded, but the node has no orchestrator".into())
        }
        (Deliver::Local, ..) => None,
    };
    let mut sink = Sink {
        node,
        id,
        paths,
        range: task.range,
        log,
        parser: OutputParser::new(),
        saves_from_output: backend.saves_from_output(),
        delivery: delivery.as_ref(),
        first_error: None,
        saved: BTreeMap::new(),
        started,
        last_activity: Arc::new(AtomicU64::new(0)),
    };
    if !backend.asks_before_each_frame() {
        // Blender renders the whole range it is started with: stop it at a new end.
        let end = (task.range.to(), stop.clone());
        node.update(id, |job| {
            job.stop_at_end = Some(end);
            job.stop_if_past_end();
            false
        });
    }
    let stalled = Arc::new(AtomicBool::new(false));
    let watchdog = node.config().stall_timeout.map(|limit| {
        tokio::spawn(watch_for_stall(
            limit,
            started,
            Arc::clone(&sink.last_activity),
            stop.clone(),
            Arc::clone(&stalled),
        ))
    });
    let outcome = backend.render(&task, &mut sink, stop).await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let Sink {
        saved, first_error, ..
    } = sink;
    // The range may have been truncated meanwhile: every frame of what is left of it.
    let (range, stopped_at_end) = node
        .with_job(id, |job| (job.spec.range, job.stopped_at_end))
        .unwrap_or((task.range, false));
    node.update(id, |job| {
        job.stop_at_end = None;
        false
    });
    let stopped_at_end = stopped_at_end && !cancel.is_cancelled();
    let (missing, vanished, delivery) = match delivery {
        // Frames count once the orchestrator has them.
        Some(delivery) => {
            let delivered = delivery.finish().await;
            let missing = range
                .frames()
                .filter(|f| !delivered.frames.contains(f))
                .collect();
            (missing, Vec::new(), delivered.stopped)
        }
        None => {
            let missing = range.frames().filter(|f| !saved.contains_key(f)).collect();
            // A frame is reported done only if its file is still there now.
            let vanished = saved
                .iter()
                .filter(|(_, path)| std::fs::symlink_metadata(path).is_err())
                .map(|(&frame, _)| frame)
                .collect();
            (missing, vanished, None)
        }
    };
    drop(workspace);
    Ok(End {
        stalled: (stalled.load(Ordering::SeqCst) && outcome == TaskEnd::Cancelled)
            .then(|| node.config().stall_timeout.unwrap_or_default()),
        outcome,
        first_error,
        missing,
        vanished,
        delivery,
        stopped_at_end,
    })
}

/// Fetches an uploaded scene's manifest and missing blobs and lays its workspace out,
/// saying so in the job's log.
async fn prepare_workspace(
    node: &Node,
    id: JobId,
    manifest: &corral_core::BlobHash,
    log: &mut JobLog,
    cancel: &CancellationToken,
) -> Result<crate::workspace::Workspace, String> {
    let cache = node
        .cache()
        .ok_or("the node has no blob cache for uploaded scenes")?;
    let mut write = |node: &Node, text: String| {
        if let Err(why) = log.line(&text) {
            log_failed(node, id, why);
        }
        node.update(id, |job| {
            push_tail(&mut job.log_tail, &text);
            false
        });
    };
    write(
        node,
        format!(
            "# corral: fetching manifest {manifest} from {}",
            cache.client().base()
        ),
    );
    let dir = node.config().workspaces_dir().join(id.to_string());
    match crate::workspace::prepare(cache, manifest, dir, cancel).await {
        Ok(workspace) => {
            let stats = workspace.stats;
            write(
                node,
                format!(
                    "# corral: workspace {} ready: {} blob(s) from the cache, {} fetched ({} bytes; the cache holds {} bytes){}",
                    workspace.dir().display(),
                    stats.cached,
                    stats.fetched,
                    stats.fetched_bytes,
                    cache.total(),
                    if workspace.copied > 0 {
                        format!(", {} file(s) copied (no hard link possible)", workspace.copied)
                    } else {
                        String::new()
                    }
                ),
            );
            Ok(workspace)
        }
        Err(why) => {
            let why = format!("cannot fetch the scene: {why}");
            write(node, format!("# corral: {why}"));
            Err(why)
        }
    }
}

/// Cancels `stop` (and sets `stalled`) once nothing was heard from Blender for `limit`.
async fn watch_for_stall(
    limit: Duration,
    started: Instant,
    last_activity: Arc<AtomicU64>,
    stop: CancellationToken,
    stalled: Arc<AtomicBool>,
) {
    let tick = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
        if started.elapsed().saturating_sub(last) >= limit {
            stalled.store(true, Ordering::SeqCst);
            stop.cancel();
            return;
        }
    }
}

/// Receives what the backend reports for one job: writes the log, keeps the tail and the
/// progress in the job, places frames, remembers the first error.
struct Sink<'a> {
    node: &'a Node,
    id: JobId,
    paths: &'a Paths,
    range: FrameRange,
    log: JobLog,
    parser: OutputParser,
    saves_from_output: bool,
    /// Where frames go when they are uploaded rather than moved into `--output`.
    delivery: Option<&'a Delivery>,
    first_error: Option<String>,
    /// Frames placed, with their final paths.
    saved: BTreeMap<i64, String>,
    started: Instant,
    /// Milliseconds after `started` that Blender was last heard from.
    last_activity: Arc<AtomicU64>,
}

impl Sink<'_> {
    fn heard(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(now, Ordering::Relaxed);
    }

    fn write_log(&mut self, text: &str) {
        if let Err(why) = self.log.line(text) {
            log_failed(self.node, self.id, why);
        }
    }

    fn note_error(&mut self, message: String) {
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }

    /// Places a frame Blender reported written and records it in the job (or hands it
    /// to delivery, which records it once the orchestrator has it). A cold render that
    /// saved the last frame of its truncated range is stopped.
    fn place(&mut self, frame: Option<i64>, progress: Option<i64>, path: &Path) {
        let (frame, name) = match saved_frame(self.paths, frame, progress, path, self.range) {
            Ok(found) => found,
            Err(why) => {
                self.write_log(&format!("# corral: {why}"));
                self.note_error(why);
                return;
            }
        };
        // Past the end of a truncated range, the frame is not this render's any more.
        let end = self
            .node
            .with_job(self.id, |job| job.spec.range.to())
            .unwrap_or(self.range.to());
        if frame > end {
            let _ = std::fs::remove_file(path);
            self.write_log(&format!(
                "# corral: frame {frame} is past the render's end (truncated to {end}); dropped"
            ));
            return;
        }
        let placed = match self.delivery {
            Some(delivery) => {
                delivery.send(frame, path.to_path_buf());
                Ok((path.display().to_string(), false))
            }
            None => move_into_place(self.paths, name).map(|p| (p, true)),
        };
        match placed {
            Ok((final_path, listed)) => {
                self.saved.insert(frame, final_path.clone());
                self.node.update(self.id, |job| {
                    if listed {
                        job.outputs.insert(frame, final_path);
                    }
                    job.last_saved = job.last_saved.max(Some(frame));
                    job.stop_if_past_end();
                    true
                });
            }
            Err(why) => {
                self.write_log(&format!("# corral: {why}"));
                self.note_error(why);
            }
        }
    }

    /// Records Blender's frame (and sample) progress; wakes long-polls only when it moved.
    fn progress(&self, frame: i64, sample: Option<corral_core::node_api::SampleProgress>) {
        self.node.update(self.id, |job| {
            // A cold Blender goes on past a truncated range's end until it is stopped.
            if frame > job.spec.range.to() {
                return false;
            }
            let new_frame = job.current_frame != Some(frame);
            let changed = new_frame || (sample.is_some() && job.current_sample != sample);
            // Status lines between sample lines carry no samples; keep the last.
            if new_frame || sample.is_some() {
                job.current_sample = sample;
            }
            job.current_frame = Some(frame);
            changed
        });
    }
}

impl TaskEvents for Sink<'_> {
    fn started(&mut self, blender_pid: u32, header: &str) {
        self.heard();
        self.write_log(header);
        self.node.update(self.id, |job| {
            job.blender_pid = Some(blender_pid);
            true
        });
        tracing::debug!(job = %self.id, blender_pid, "Blender has the task");
    }

    fn line(&mut self, line: &str) {
        self.heard();
        self.write_log(line);
        let parsed = self.parser.parse(line);
        // A new log line alone does not wake long-polls; progress does.
        self.node.update(self.id, |job| {
            push_tail(&mut job.log_tail, line);
            false
        });
        match parsed {
            ParsedLine::Error(message) => self.note_error(message),
            ParsedLine::Progress { frame, sample } => self.progress(frame, sample),
            ParsedLine::Saved { frame, path } if self.saves_from_output => {
                self.place(None, frame, Path::new(&path));
            }
            ParsedLine::Saved { .. } | ParsedLine::Other => {}
        }
    }

    fn frame_starting(&mut self, frame: i64) -> bool {
        self.heard();
        let mut go = false;
        self.node.update(self.id, |job| {
            go = job.spec.range.contains(frame);
            if go && job.current_frame != Some(frame) {
                job.current_frame = Some(frame);
                job.current_sample = None;
            }
            go
        });
        go
    }

    fn saved(&mut self, frame: i64, path: &Path) {
        self.heard();
        self.place(Some(frame), None, path);
    }

    fn error(&mut self, message: &str) {
        self.heard();
        self.note_error(message.to_string());
    }
}

/// Records that job `id`'s log stopped being written: in the job (`log_error`, and a line
/// in its tail, which goes on) and once in the node's own log. The render goes on.
fn log_failed(node: &Node, id: JobId, why: String) {
    tracing::warn!(job = %id, error = %why, "the job's log cannot be written; the render goes on");
    node.update(id, |job| {
        push_tail(&mut job.log_tail, &format!("# corral: {why}"));
        job.log_error = Some(why);
        true
    });
}

/// Checks a frame Blender reported written and says which frame it is. Blender's report is
/// input from outside: the path must be a file in this job's partial folder, for a frame
/// of this job's range. The frame is the one reported with it (a warm worker's, which the
/// file name must agree with), else the number in the file name, else `progress`, the last
/// progress line's (Workbench renders print no `Fra:` lines).
fn saved_frame<'p>(
    paths: &Paths,
    frame: Option<i64>,
    progress: Option<i64>,
    reported: &'p Path,
    range: FrameRange,
) -> Result<(i64, &'p OsStr), String> {
    let shown = reported.display();
    let name = reported
        .file_name()
        .filter(|_| reported.parent() == Some(paths.partial_dir.as_path()))
        .ok_or_else(|| format!("Blender saved `{shown}` outside the job's output folder"))?;
    let pattern = paths
        .partial_pattern
        .file_name()
        .map(|p| p.to_string_lossy())
        .unwrap_or_default();
    let from_name = frame_from_file_name(&pattern, &name.to_string_lossy());
    let frame = match (frame, from_name) {
        (Some(reported), Some(named)) if reported != named => {
            return Err(format!(
                "Blender saved `{shown}` for frame {reported}, but its name says frame {named}"
            ))
        }
        (reported, named) => reported.or(named).or(progress),
    }
    .filter(|f| range.contains(*f))
    .ok_or_else(|| format!("Blender saved `{shown}`, which is not a frame of {range}"))?;
    Ok((frame, name))
}

/// Moves file `name` (a frame [`saved_frame`] checked) from the partial folder to its
/// final name; answers its final path.
fn move_into_place(paths: &Paths, name: &OsStr) -> Result<String, String> {
    // Both folders are checked on open handles right before the rename, which goes
    // through those handles: a folder swapped for a symbolic link leading out of the
    // output folder at any time during the render is refused, not written through.
    let from = crate::confine::open_confined_dir(&paths.root, &paths.partial_dir)?;
    let to = crate::confine::open_confined_dir(&paths.root, &paths.final_dir)?;
    to.rename_from(&from, Path::new(name))?;
    Ok(to.path.join(name).display().to_string())
}

/// Reads the frame number Blender put in place of the `#` run of `pattern` (or after the
/// whole pattern when it has no `#`, which is where Blender appends it).
fn frame_from_file_name(pattern: &str, name: &str) -> Option<i64> {
    let prefix = pattern.split('#').next().unwrap_or(pattern);
    let rest = name.strip_prefix(prefix)?;
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

pub(crate) fn push_tail(tail: &mut std::collections::VecDeque<String>, line: &str) {
    if tail.len() == LOG_TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line.to_string());
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(outcome: TaskEnd, error: Option<&str>, missing: &[i64]) -> (JobState, Option<String>) {
        End {
            outcome,
            stalled: None,
            first_error: error.map(str::to_string),
            missing: missing.to_vec(),
            vanished: Vec::new(),
            delivery: None,
            stopped_at_end: false,
        }
        .verdict()
    }

    #[test]
    fn a_placed_frame_that_vanished_fails_the_job() {
        let end = End {
            outcome: TaskEnd::Exited(0),
            stalled: None,
            first_error: None,
            missing: Vec::new(),
            vanished: vec![2, 3, 7],
            delivery: None,
            stopped_at_end: false,
        };
        let (state, why) = end.verdict();
        assert_eq!(state, JobState::Failed);
        assert_eq!(
            why.as_deref(),
            Some("the files of frame(s) 2-3, 7 were placed but are gone")
        );
    }

    #[test]
    fn only_a_clean_exit_with_every_frame_completes() {
        assert_eq!(
            end(TaskEnd::Exited(0), None, &[]),
            (JobState::Completed, None)
        );
        let (state, why) = end(TaskEnd::Exited(0), None, &[3, 4]);
        assert_eq!(state, JobState::Failed);
        assert_eq!(
            why.as_deref(),
            Some("Blender exited 0 but wrote no file for frame(s) 3-4")
        );
        let (state, why) = end(
            TaskEnd::Exited(0),
            Some("Build without OpenImageDenoiser"),
            &[],
        );
        assert_eq!(state, JobState::Failed);
        assert!(why.unwrap().contains("OpenImageDenoiser"));
        let (state, why) = end(TaskEnd::Exited(1), Some("Cannot read file"), &[1]);
        assert_eq!(state, JobState::Failed);
        assert_eq!(
            why.as_deref(),
            Some("Blender exited with code 1: Cannot read file")
        );
        let (state, why) = end(TaskEnd::Signalled(11), None, &[]);
        assert_eq!(state, JobState::Failed);
        assert_eq!(why.as_deref(), Some("Blender was killed by SIGSEGV"));
        assert_eq!(end(TaskEnd::Cancelled, None, &[1]).0, JobState::Cancelled);
    }

    #[test]
    fn warm_tasks_and_stalls_have_their_own_verdicts() {
        assert_eq!(
            end(TaskEnd::Finished, None, &[]),
            (JobState::Completed, None)
        );
        let (state, why) = end(TaskEnd::Finished, None, &[2]);
        assert_eq!(state, JobState::Failed);
        assert_eq!(
            why.as_deref(),
            Some("Blender finished the task but wrote no file for frame(s) 2")
        );
        let (state, why) = end(TaskEnd::Finished, Some("Missing DNA block"), &[1]);
        assert_eq!(state, JobState::Failed);
        assert_eq!(
            why.as_deref(),
            Some("Blender reported an error: Missing DNA block")
        );
        let (state, why) = end(TaskEnd::Failed("the worker was lost".into()), None, &[1]);
        assert_eq!(
            (state, why.as_deref()),
            (JobState::Failed, Some("the worker was lost"))
        );
        let stalled = End {
            outcome: TaskEnd::Cancelled,
            stalled: Some(Duration::from_secs(600)),
            first_error: None,
            missing: vec![1],
            vanished: Vec::new(),
            delivery: None,
            stopped_at_end: false,
        };
        let (state, why) = stalled.verdict();
        assert_eq!(state, JobState::Failed);
        assert!(why.unwrap().contains("printed nothing for 600 s"));
    }

    #[test]
    fn frames_are_read_from_file_names() {
        assert_eq!(
            frame_from_file_name("blender-render_####", "blender-render_0012.png"),
            Some(12)
        );
        assert_eq!(frame_from_file_name("f_##", "f_-01.exr"), Some(-1));
        assert_eq!(frame_from_file_name("shot", "shot0007.png"), Some(7));
        assert_eq!(frame_from_file_name("f_####", "other_0001.png"), None);
        assert_eq!(frame_from_file_name("f_####", "f_.png"), None);
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
    }
}
