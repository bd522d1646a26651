//! Following a job until it ends: a live progress bar on a terminal (frames done/total,
//! rate, ETA, nodes busy) or plain periodic lines when stdout is a pipe or a file; Ctrl-C
//! stops following and leaves the job running. Then the end report: where the frames are,
//! or which frames failed and why.

use crate::client_cmds::explain;
use crate::fetch::Downloader;
use crate::table::{clock, duration, for_terminal, plural};
use anyhow::bail;
use corral_client::FullJob;
use corral_client::OrchestratorClient;
use corral_core::frames::frame_list;
use corral_core::orchestrator_api::{Event, JobDetail, JobState, NodeState, TaskStateKind};
use corral_core::NodeId;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the job's detail (tasks running, ETA) and the node list are read again. The
/// progress itself and the job's end come from the event stream, as they happen; this
/// refresh is also what follows the job if the stream is lost.
const REFRESH: Duration = Duration::from_secs(2);
/// How long the server may stay unreachable before following gives up.
const LOST_AFTER: Duration = Duration::from_secs(15);
/// Plain output: a line when progress changed, at most this often...
const PLAIN_EVERY: Duration = Duration::from_secs(2);
/// ...and at least this often, so a log shows the job is alive.
const PLAIN_HEARTBEAT: Duration = Duration::from_secs(30);
/// Log lines shown per failed task in the end report.
const TAIL_LINES: usize = 10;
/// Failed tasks whose logs the end report shows.
const TAIL_TASKS: usize = 3;

/// How following ended.
pub enum Followed {
    /// The job reached a final state (read it in full for the report).
    Ended,
    /// Ctrl-C: the job goes on without us.
    Detached(Box<JobDetail>),
}

/// Follows job `first` until it ends or Ctrl-C is pressed: the event stream moves the bar
/// and reports the end within milliseconds; the detail is read again every [`REFRESH`].
/// With `downloads`, each frame is downloaded as its `frame` event arrives (a failed one
/// is left to the caller's sweep at the end), and the progress line counts them.
pub async fn follow(
    client: &OrchestratorClient,
    first: JobDetail,
    quiet: bool,
    mut downloads: Option<&mut Downloader>,
) -> anyhow::Result<Followed> {
    let id = first.job.id;
    let id_text = id.to_string();
    let mut reporter = Reporter::new(&first, quiet);
    // Subscribed before the detail is read again, so no change falls between the two.
    let mut events = client.events().await.ok();
    let mut job = client.job(&id_text).await.unwrap_or(first);
    let mut nodes_up: Option<usize> = None;
    let mut unreachable_since: Option<Instant> = None;
    let mut refresh_at = Instant::now() + REFRESH;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        if job.job.state.is_terminal() {
            reporter.finish(&job);
            return Ok(Followed::Ended);
        }
        let fetched = downloads.as_deref().map(|d| d.downloaded + d.unchanged);
        reporter.update(&job, nodes_up, fetched);
        let next_event = async {
            match events.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut interrupt => {
                reporter.abandon();
                return Ok(Followed::Detached(Box::new(job)));
            }
            event = next_event => match event {
                Some(Ok(Event::Job { id: of, state, frames_done, .. })) if of == id => {
                    job.job.frames_done = frames_done;
                    if state.is_terminal() {
                        // The final counts and times: read once, at the end.
                        if let Ok(detail) = client.job(&id_text).await {
                            job = detail;
                        }
                    }
                    job.job.state = state;
                    continue;
                }
                Some(Ok(Event::Frame { job: of, frame, path, .. })) if of == id => {
                    if let Some(d) = downloads.as_deref_mut() {
                        if d.frame(frame, Some(&path)).await.is_err() {
                            reporter.note("a frame download failed; retried at the end");
                        }
                    }
                    continue;
                }
                Some(Ok(_)) => continue,
                // Lost (the server restarted, or is gone): the refresh follows on, and
                // subscribes again.
                Some(Err(_)) | None => events = None,
            },
            () = tokio::time::sleep_until(refresh_at.into()) => {}
        }
        if Instant::now() < refresh_at {
            continue;
        }
        refresh_at = Instant::now() + REFRESH;
        nodes_up = client.nodes().await.ok().map(|nodes| {
            nodes
                .iter()
                .filter(|n| n.state == NodeState::Up && !n.draining)
                .count()
        });
        match client.job(&id_text).await {
            Ok(detail) => {
                unreachable_since = None;
                job = detail;
                if events.is_none() {
                    events = client.events().await.ok();
                }
            }
            Err(e) if e.is_unreachable() => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= LOST_AFTER {
                    reporter.abandon();
                    bail!(
                        "lost the Corral server at {} while following job {id}; \
                         it may still be running: `corral status {id}` once it is back",
                        client.base()
                    );
                }
                reporter.note("server not answering; retrying");
            }
            Err(e) => {
                reporter.abandon();
                return Err(explain(e, client.base()));
            }
        }
    }
}

/// Draws progress: an indicatif bar on a terminal, lines otherwise.
enum Reporter {
    Bar {
        bar: ProgressBar,
        rate: Rate,
    },
    Plain {
        rate: Rate,
        last: Option<(Instant, u64)>,
        id: String,
    },
    Quiet,
}

/// Frames per second since following began (so a job followed mid-way reports its
/// current pace, not an average over time it was not watched).
struct Rate {
    since: Instant,
    done_then: u64,
}

impl Rate {
    fn new(done: u64) -> Self {
        Rate {
            since: Instant::now(),
            done_then: done,
        }
    }

    fn per_second(&self, done: u64) -> Option<f64> {
        let frames = done.checked_sub(self.done_then).filter(|f| *f > 0)?;
        Some(frames as f64 / self.since.elapsed().as_secs_f64().max(0.001))
    }
}

impl Reporter {
    fn new(job: &JobDetail, quiet: bool) -> Self {
        let rate = Rate::new(job.job.frames_done);
        if quiet {
            Reporter::Quiet
        } else if std::io::stdout().is_terminal() {
            let bar = ProgressBar::with_draw_target(
                Some(job.job.frames_total),
                ProgressDrawTarget::stdout(),
            );
            let style = ProgressStyle::with_template(
                "{spinner:.cyan} {elapsed:>4.dim} {wide_bar:.cyan/blue} {pos}/{len} frames · {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ ");
            bar.set_style(style);
            bar.set_position(job.job.frames_done);
            bar.set_message(status_message(job, None, &rate, None));
            bar.enable_steady_tick(Duration::from_millis(100));
            Reporter::Bar { bar, rate }
        } else {
            Reporter::Plain {
                rate,
                last: None,
                id: job.job.id.to_string(),
            }
        }
    }

    fn update(&mut self, job: &JobDetail, nodes_up: Option<usize>, fetched: Option<u64>) {
        match self {
            Reporter::Bar { bar, rate } => {
                bar.set_length(job.job.frames_total);
                bar.set_position(job.job.frames_done);
                bar.set_message(status_message(job, nodes_up, rate, fetched));
            }
            Reporter::Plain { rate, last, id } => {
                let done = job.job.frames_done;
                // A download counts as progress too.
                let seen = done + fetched.unwrap_or(0);
                let due = match last {
                    None => true,
                    Some((at, before)) => {
                        (seen != *before && at.elapsed() >= PLAIN_EVERY)
                            || at.elapsed() >= PLAIN_HEARTBEAT
                    }
                };
                if due {
                    *last = Some((Instant::now(), seen));
                    let total = job.job.frames_total.max(1);
                    println!(
                        "job {id}: {done}/{} frames ({}%) · {}",
                        job.job.frames_total,
                        done * 100 / total,
                        status_message(job, nodes_up, rate, fetched)
                    );
                }
            }
            Reporter::Quiet => {}
        }
    }

    fn note(&self, text: &str) {
        if let Reporter::Bar { bar, .. } = self {
            bar.set_message(text.to_string());
        }
    }

    fn finish(&self, job: &JobDetail) {
        if let Reporter::Bar { bar, .. } = self {
            bar.set_position(job.job.frames_done);
            if job.job.state == JobState::Completed {
                bar.finish_with_message("done");
            } else {
                bar.abandon_with_message(job.job.state.as_str());
            }
        }
    }

    fn abandon(&self) {
        if let Reporter::Bar { bar, .. } = self {
            bar.abandon();
        }
    }
}

/// `3.2 frames/s · ETA 0:12 · 2/2 nodes busy · 4 downloaded`, or what the job is
/// waiting for.
fn status_message(
    job: &JobDetail,
    nodes_up: Option<usize>,
    rate: &Rate,
    fetched: Option<u64>,
) -> String {
    let text = job_message(job, nodes_up, rate);
    match fetched {
        Some(n) => format!("{text} · {n} downloaded"),
        None => text,
    }
}

fn job_message(job: &JobDetail, nodes_up: Option<usize>, rate: &Rate) -> String {
    let busy: BTreeSet<&str> = job
        .tasks
        .iter()
        .filter(|t| t.state == TaskStateKind::Running)
        .filter_map(|t| t.node.as_ref().map(NodeId::as_str))
        .collect();
    let nodes = match nodes_up {
        Some(up) => format!("{}/{up} nodes busy", busy.len()),
        None => format!("{} node{} busy", busy.len(), plural(busy.len() as u64)),
    };
    match job.job.state {
        JobState::Paused => return format!("paused · {nodes}"),
        JobState::Queued if busy.is_empty() => {
            return match nodes_up {
                Some(0) => "queued: no render node is up".into(),
                _ => "queued: waiting for a free node".into(),
            }
        }
        _ => {}
    }
    let Some(per_second) = rate.per_second(job.job.frames_done) else {
        return format!("starting Blender · {nodes}");
    };
    let left = job.job.frames_total.saturating_sub(job.job.frames_done);
    let eta = job
        .job
        .eta_seconds
        .unwrap_or_else(|| (left as f64 / per_second).ceil() as u64);
    format!("{per_second:.1} frames/s · ETA {} · {nodes}", clock(eta))
}

/// Prints how a followed job ended and returns the exit status that says it: 0 completed,
/// 3 failed (with the frames and the log tails), 4 cancelled.
pub fn report_end(job: &FullJob) -> ExitCode {
    let s = &job.job;
    let id = s.id;
    match s.state {
        JobState::Completed => {
            let wall = s
                .finished_at
                .map(|end| crate::table::between(s.submitted_at, end))
                .unwrap_or_default();
            let fps = s.frames_total as f64 / wall.as_secs_f64().max(0.001);
            let nodes: BTreeSet<&str> = job
                .tasks
                .iter()
                .filter_map(|t| t.node.as_ref().map(NodeId::as_str))
                .collect();
            println!(
                "{} {} frame{} rendered in {} ({fps:.2} frames/s) on {} node{}",
                console::style("✔").green().bold(),
                s.frames_total,
                plural(s.frames_total),
                duration(wall),
                nodes.len(),
                plural(nodes.len() as u64),
            );
            print_frame_folders(job, false);
            ExitCode::SUCCESS
        }
        JobState::Failed => {
            let cross = console::style("✘").red().bold().for_stderr();
            eprintln!(
                "{cross} job {id} failed: {}",
                for_terminal(s.failure.as_deref().unwrap_or("a task failed"))
            );
            let missing: Vec<i64> = job
                .frames
                .iter()
                .filter(|f| f.state != "done")
                .map(|f| f.frame)
                .collect();
            eprintln!(
                "  not rendered: frame{} {} ({} of {})",
                plural(missing.len() as u64),
                frame_list(&missing),
                missing.len(),
                s.frames_total
            );
            let failed = job
                .tasks
                .iter()
                .filter(|t| t.state == TaskStateKind::Failed || t.failure.is_some());
            for task in failed.take(TAIL_TASKS) {
                eprintln!(
                    "  frames {}-{} failed {} time{}; last: {}",
                    task.from,
                    task.to,
                    task.attempts,
                    plural(u64::from(task.attempts)),
                    for_terminal(task.failure.as_deref().unwrap_or("no reason given"))
                );
                for line in telling_lines(&task.log_tail) {
                    eprintln!(
                        "    {} {}",
                        console::style("│").dim().for_stderr(),
                        for_terminal(line)
                    );
                }
            }
            print_frame_folders(job, true);
            eprintln!("  every task's log: corral logs {id}");
            ExitCode::from(crate::exit::JOB_FAILED)
        }
        JobState::Cancelled => {
            eprintln!(
                "{} job {id} was cancelled: {} of {} frames had rendered",
                console::style("✘").yellow().bold().for_stderr(),
                s.frames_done,
                s.frames_total
            );
            print_frame_folders(job, true);
            ExitCode::from(crate::exit::JOB_CANCELLED)
        }
        // Not an end state; callers only report ended jobs.
        JobState::Queued | JobState::Running | JobState::Paused => ExitCode::SUCCESS,
    }
}

/// The last lines of a log tail that say something: Blender's per-frame status lines
/// (`Fra:1 Mem:... | Updating Film`) are dropped unless they carry an error.
fn telling_lines(tail: &[String]) -> Vec<&str> {
    let telling: Vec<&str> = tail
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("Fra:") || l.contains("Error"))
        .collect();
    telling[telling.len().saturating_sub(TAIL_LINES)..].to_vec()
}

/// Prints the folders holding the job's rendered frames. A folder that does not exist here
/// is on the nodes (a farm of other machines).
pub fn print_frame_folders(job: &FullJob, to_stderr: bool) {
    let folders: BTreeSet<&Path> = job
        .frames
        .iter()
        .filter_map(|f| f.path.as_deref())
        .filter_map(|p| Path::new(p).parent())
        .collect();
    for folder in folders {
        let place = if folder.is_dir() {
            ""
        } else {
            " (on the nodes)"
        };
        let line = format!(
            "  frames{place}: {}/",
            for_terminal(&folder.display().to_string())
        );
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}
