//! Runs one job through Blender: spawns it, follows its output, moves each frame into
//! place as Blender saves it, and decides how the job ended.
//!
//! Architecture invariant: frames appear in the output folder atomically. Blender writes
//! into a per-job folder beside the output (same file system); each file is renamed to its
//! final name only after Blender reports it `Saved:`, so a killed or re-run render never
//! leaves a half-written frame under a final name. The partial folder is removed when the
//! job ends, whatever the outcome.

use crate::job_log::JobLog;
use crate::jobs::{Job, Node, LOG_TAIL_LINES};
use corral_blender::{BlenderProcess, ExitOutcome, OutputParser, ParsedLine, RenderArgs};
use corral_core::{JobId, JobState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where one job's files go.
struct Paths {
    /// The node's output folder (canonical): nothing is placed outside it.
    root: PathBuf,
    /// Blender's `-o` pattern inside the per-job partial folder.
    partial_pattern: PathBuf,
    partial_dir: PathBuf,
    /// Folder the finished frames are renamed into.
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
}

/// The path of job `id`'s full Blender log.
pub fn log_path(node: &Node, id: JobId) -> PathBuf {
    node.config().logs_dir().join(format!("{id}.log"))
}

/// Runs job `id` (already marked running) to its end and records the outcome.
pub async fn run_job(node: Node, id: JobId) {
    let Some((args, cancel, output)) = node.with_job(id, |job| {
        let args = RenderArgs {
            blend: job.scene.clone(),
            output_pattern: PathBuf::new(),
            engine: job.spec.engine,
            format: job.spec.format,
            range: job.spec.range,
            threads: job.threads(node.config().threads),
        };
        (args, job.cancel.clone(), job.spec.output.clone())
    }) else {
        return;
    };
    let paths = Paths::for_job(&node, id, &output);
    let result = render(&node, id, args, &paths, cancel).await;
    // The partial folder holds only what Blender wrote and we did not move: debris.
    let _ = std::fs::remove_dir_all(&paths.partial_dir);
    // Anything a killed supervisor left behind was handed to the node: end it now.
    let _ = tokio::task::spawn_blocking(corral_blender::process::reap_orphans).await;
    node.finish(id, |job| match result {
        Ok(end) => end.apply(job),
        Err(reason) => {
            job.state = JobState::Failed;
            job.failure = Some(reason);
        }
    });
    if let Some(view) = node.view(id) {
        tracing::info!(job = %id, state = %view.state, frames_done = view.frames_done, failure = ?view.failure, "job ended");
    }
}

/// How a Blender run ended, before it is written into the job.
struct End {
    outcome: ExitOutcome,
    first_error: Option<String>,
    /// Frames of the range Blender wrote no file for.
    missing: Vec<i64>,
    /// Frames placed under their final name whose file is gone by the end.
    vanished: Vec<i64>,
}

impl End {
    /// The job's end state and, unless it completed, why. Completion needs all four:
    /// exit code 0, no `Error:` line, a file for every frame of the range, and every
    /// placed file still there.
    fn verdict(&self) -> (JobState, Option<String>) {
        let failure = match self.outcome {
            ExitOutcome::Cancelled => {
                return (
                    JobState::Cancelled,
                    Some("cancelled while rendering".into()),
                )
            }
            ExitOutcome::Signalled(sig) => {
                format!("Blender was killed by {}", signal_name(sig))
            }
            ExitOutcome::Exited(code) if code != 0 => match &self.first_error {
                Some(err) => format!("Blender exited with code {code}: {err}"),
                None => format!("Blender exited with code {code}"),
            },
            ExitOutcome::Exited(_) => match &self.first_error {
                Some(err) => format!("Blender reported an error: {err}"),
                None if !self.missing.is_empty() => format!(
                    "Blender exited 0 but wrote no file for frame(s) {}",
                    corral_core::frames::frame_list(&self.missing)
                ),
                None if !self.vanished.is_empty() => format!(
                    "the files of frame(s) {} were placed but are gone",
                    corral_core::frames::frame_list(&self.vanished)
                ),
                None => return (JobState::Completed, None),
            },
        };
        (JobState::Failed, Some(failure))
    }

    fn apply(self, job: &mut Job) {
        if let ExitOutcome::Exited(code) = self.outcome {
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
    id: JobId,
    mut args: RenderArgs,
    paths: &Paths,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<End, String> {
    // Checked at submission, and again now: a folder may have become a symbolic link
    // leading out of the output folder while the job was queued.
    crate::confine::check_output_dir(&paths.root, &paths.final_dir)?;
    for dir in [&paths.final_dir, &paths.partial_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create folder `{}`: {e}", dir.display()))?;
        crate::confine::open_confined_dir(&paths.root, dir)?;
    }
    let (mut log, create_error) = JobLog::create(&paths.log);
    if let Some(why) = create_error {
        log_failed(node, id, why);
    }
    args.output_pattern = paths.partial_pattern.clone();
    let range = args.range;
    let argv = args.to_argv().map_err(|e| e.to_string())?;
    let program = &node.config().blender;
    let command_line: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
    let write_log = |log: &mut JobLog, text: &str| {
        if let Err(why) = log.line(text) {
            log_failed(node, id, why);
        }
    };
    write_log(
        &mut log,
        &format!("# {} {}", program.display(), command_line.join(" ")),
    );

    let mut process = BlenderProcess::spawn(program, &argv).map_err(|e| e.to_string())?;
    let blender_pid = process.blender_pid().await;
    node.update(id, |job| {
        job.blender_pid = Some(blender_pid);
        true
    });
    tracing::debug!(job = %id, blender_pid, "Blender started");

    let mut parser = OutputParser::new();
    let mut first_error: Option<String> = None;
    let mut saved: BTreeMap<i64, String> = BTreeMap::new();
    let outcome = process
        .run(cancel.cancelled_owned(), |line| {
            write_log(&mut log, line);
            let parsed = parser.parse(line);
            let mut moved = None;
            match &parsed {
                ParsedLine::Error(msg) if first_error.is_none() => first_error = Some(msg.clone()),
                ParsedLine::Saved { frame, path } => {
                    match place_frame(paths, *frame, path, range) {
                        Ok((frame, final_path)) => {
                            saved.insert(frame, final_path.clone());
                            moved = Some((frame, final_path));
                        }
                        Err(why) => {
                            write_log(&mut log, &format!("# corral: {why}"));
                            if first_error.is_none() {
                                first_error = Some(why);
                            }
                        }
                    }
                }
                _ => {}
            }
            // Only progress wakes long-polls; a new log line alone does not.
            node.update(id, |job| {
                push_tail(&mut job.log_tail, line);
                match parsed {
                    ParsedLine::Progress { frame, sample } => {
                        let new_frame = job.current_frame != Some(frame);
                        let changed =
                            new_frame || (sample.is_some() && job.current_sample != sample);
                        // Status lines between sample lines carry no samples; keep the last.
                        if new_frame || sample.is_some() {
                            job.current_sample = sample;
                        }
                        job.current_frame = Some(frame);
                        changed
                    }
                    ParsedLine::Saved { .. } => match moved.take() {
                        Some((frame, path)) => {
                            job.outputs.insert(frame, path);
                            true
                        }
                        None => false,
                    },
                    ParsedLine::Error(_) | ParsedLine::Other => false,
                }
            });
        })
        .await
        .map_err(|e| format!("lost track of Blender: {e}"))?;
    let missing = range.frames().filter(|f| !saved.contains_key(f)).collect();
    // A frame is reported done only if its file is still there now.
    let vanished = saved
        .iter()
        .filter(|(_, path)| std::fs::symlink_metadata(path).is_err())
        .map(|(&frame, _)| frame)
        .collect();
    Ok(End {
        outcome,
        first_error,
        missing,
        vanished,
    })
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

/// Moves a frame Blender reported saved from the partial folder to its final name.
/// Blender's report is input from outside: the path must be a file in this job's partial
/// folder, for a frame of this job's range. The frame number is read from the file name
/// (Workbench renders print no `Fra:` lines), else taken from the last progress line.
fn place_frame(
    paths: &Paths,
    progress_frame: Option<i64>,
    reported: &str,
    range: corral_core::FrameRange,
) -> Result<(i64, String), String> {
    let reported_path = Path::new(reported);
    let name = reported_path
        .file_name()
        .filter(|_| reported_path.parent() == Some(paths.partial_dir.as_path()))
        .ok_or_else(|| format!("Blender saved `{reported}` outside the job's output folder"))?;
    let pattern = paths
        .partial_pattern
        .file_name()
        .map(|p| p.to_string_lossy())
        .unwrap_or_default();
    let frame = frame_from_file_name(&pattern, &name.to_string_lossy())
        .or(progress_frame)
        .filter(|f| range.contains(*f))
        .ok_or_else(|| format!("Blender saved `{reported}`, which is not a frame of {range}"))?;
    // Both folders are checked on open handles right before the rename, which goes
    // through those handles: a folder swapped for a symbolic link leading out of the
    // output folder at any time during the render is refused, not written through.
    let from = crate::confine::open_confined_dir(&paths.root, &paths.partial_dir)?;
    let to = crate::confine::open_confined_dir(&paths.root, &paths.final_dir)?;
    to.rename_from(&from, Path::new(name))?;
    Ok((frame, to.path.join(name).display().to_string()))
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

fn push_tail(tail: &mut std::collections::VecDeque<String>, line: &str) {
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

    fn end(
        outcome: ExitOutcome,
        error: Option<&str>,
        missing: &[i64],
    ) -> (JobState, Option<String>) {
        End {
            outcome,
            first_error: error.map(str::to_string),
            missing: missing.to_vec(),
            vanished: Vec::new(),
        }
        .verdict()
    }

    #[test]
    fn a_placed_frame_that_vanished_fails_the_job() {
        let end = End {
            outcome: ExitOutcome::Exited(0),
            first_error: None,
            missing: Vec::new(),
            vanished: vec![2, 3, 7],
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
            end(ExitOutcome::Exited(0), None, &[]),
            (JobState::Completed, None)
        );
        let (state, why) = end(ExitOutcome::Exited(0), None, &[3, 4]);
        assert_eq!(state, JobState::Failed);
        assert_eq!(
            why.as_deref(),
            Some("Blender exited 0 but wrote no file for frame(s) 3-4")
        );
        let (state, why) = end(
            ExitOutcome::Exited(0),
            Some("Build without OpenImageDenoiser"),
            &[],
        );
        assert_eq!(state, JobState::Failed);
        assert!(why.unwrap().contains("OpenImageDenoiser"));
        let (state, why) = end(ExitOutcome::Exited(1), Some("Cannot read file"), &[1]);
        assert_eq!(state, JobState::Failed);
        assert_eq!(
            why.as_deref(),
            Some("Blender exited with code 1: Cannot read file")
        );
        let (state, why) = end(ExitOutcome::Signalled(11), None, &[]);
        assert_eq!(state, JobState::Failed);
        assert_eq!(why.as_deref(), Some("Blender was killed by SIGSEGV"));
        assert_eq!(
            end(ExitOutcome::Cancelled, None, &[1]).0,
            JobState::Cancelled
        );
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
