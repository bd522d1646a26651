//! A task's life on the farm, and its job's state derived from its tasks, as one pure
//! function: [`step`] takes a task, its job and a [`Command`], and answers the task's new
//! state, the job's, the render to stop (if any) and the events to publish, or why the
//! command is refused. The orchestrator's store applies a step atomically; nothing else
//! changes a task.
//!
//! ```text
//!            Lease            Complete
//!   Queued ---------> Running ---------> Completed
//!     ^  |    TakeBack  |  |  Fail (attempts left: back to Queued)
//!     |  |  <-----------+  +-----------> Failed  (attempts used up)
//!     |  +--- GiveUp ---------------->   Failed  (no node may run it)
//!     |  Cancel (queued or running) -->  Cancelled
//!     +--- Retry (failed or cancelled, the job re-queued)
//! ```
//!
//! Architecture invariant: every command about a running task names the lease it was made
//! under, and is refused as stale under any other; a lease moves on at every `Lease` and
//! every take-back (`TakeBack`, `Fail`, `Cancel` of a running task).

use crate::frames::FrameRange;
use crate::ids::{LeaseId, NodeId, NodeJobId, OrchestratorId, TaskId};
use crate::job::JobId;
use crate::orchestrator_api::{Event, JobState, TaskStateKind};
use chrono::{DateTime, Utc};

/// One chunk of a job's frames and where it is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub job: JobId,
    /// Position in its job.
    pub index: u32,
    pub range: FrameRange,
    /// Attempts that ended in failure.
    pub attempts: u32,
    /// The latest lease issued; a running task runs under it.
    pub lease: LeaseId,
    /// The node of the latest lease, kept after the task ends (for people reading it).
    pub last_node: Option<NodeId>,
    /// Why the latest attempt failed, kept while the task waits for a retry.
    pub last_failure: Option<String>,
    pub state: TaskState,
}

/// Where a task is, with what is true only there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting for a free node slot.
    Queued,
    /// Leased to a node.
    Running(Running),
    Completed {
        finished_at: DateTime<Utc>,
    },
    /// Out of attempts, or no node may run it.
    Failed {
        reason: String,
        finished_at: DateTime<Utc>,
    },
    Cancelled {
        finished_at: DateTime<Utc>,
    },
}

/// A task leased to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub node: NodeId,
    /// The orchestrator that follows the task (dispatches it, then watches its node).
    pub owner: OrchestratorId,
    /// The node's id for the render; `None` until the node has accepted it.
    pub node_job: Option<NodeJobId>,
    pub started_at: DateTime<Utc>,
    /// The last time the node reported progress (the stall clock).
    pub progress_at: DateTime<Utc>,
}

impl TaskState {
    pub fn kind(&self) -> TaskStateKind {
        match self {
            TaskState::Queued => TaskStateKind::Queued,
            TaskState::Running(_) => TaskStateKind::Running,
            TaskState::Completed { .. } => TaskStateKind::Completed,
            TaskState::Failed { .. } => TaskStateKind::Failed,
            TaskState::Cancelled { .. } => TaskStateKind::Cancelled,
        }
    }

    pub fn is_ended(&self) -> bool {
        matches!(
            self,
            TaskState::Completed { .. } | TaskState::Failed { .. } | TaskState::Cancelled { .. }
        )
    }
}

/// What may happen to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Give a queued task to `node`; `owner` follows it.
    Lease { node: NodeId, owner: OrchestratorId },
    /// The node accepted the render and named it.
    Dispatched { lease: LeaseId, node_job: NodeJobId },
    /// The node reported progress; `new_frames` frames were saved that were not before
    /// (none when only samples of a long frame moved on).
    Progress { lease: LeaseId, new_frames: u64 },
    /// The node finished the render. `frames_recorded` is how many frames of the task's
    /// range are recorded as saved (the store counts them); completion needs all of them.
    Complete {
        lease: LeaseId,
        frames_recorded: u64,
        /// How long the node says the render took, by its own clock: the job's frame time
        /// is measured from it, since the time from lease to this report also counts the
        /// dispatch and the report, which on a busy farm can be longer than the render.
        render_ms: Option<u64>,
    },
    /// The attempt failed; the task waits for another unless it has used `max_attempts`.
    Fail {
        lease: LeaseId,
        reason: String,
        max_attempts: u32,
    },
    /// Back to the queue without counting an attempt: the node was lost, forgot the render,
    /// or the dispatch never completed.
    TakeBack { lease: LeaseId },
    /// Another orchestrator follows the running task from now on (its owner stopped).
    Adopt {
        lease: LeaseId,
        owner: OrchestratorId,
    },
    /// The job was cancelled or failed: a task not yet ended ends cancelled.
    Cancel,
    /// The job was re-queued: a failed or cancelled task waits again with fresh attempts.
    Retry,
    /// No node may run the task any more.
    GiveUp { reason: String },
    /// Keeps frames up to `keep_to` and cuts the rest off into a new queued task: a
    /// queued task (before leasing its head, `lease: None`: a piece of a job the farm
    /// sizes, or what a node's `--max-frames` takes of any task), or a
    /// running one whose node stops after `keep_to` (its unstarted tail goes to a node that
    /// is idle, under the running task's lease).
    Cut {
        lease: Option<LeaseId>,
        keep_to: i64,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Lease { .. } => "lease",
            Command::Dispatched { .. } => "dispatched",
            Command::Progress { .. } => "progress",
            Command::Complete { .. } => "complete",
            Command::Fail { .. } => "fail",
            Command::TakeBack { .. } => "take back",
            Command::Adopt { .. } => "adopt",
            Command::Cancel => "cancel",
            Command::Retry => "retry",
            Command::GiveUp { .. } => "give up",
            Command::Cut { .. } => "cut",
        }
    }

    /// The lease the command was made under, for the commands about a running task.
    pub fn lease(&self) -> Option<LeaseId> {
        match self {
            Command::Dispatched { lease, .. }
            | Command::Progress { lease, .. }
            | Command::Complete { lease, .. }
            | Command::Fail { lease, .. }
            | Command::TakeBack { lease }
            | Command::Adopt { lease, .. } => Some(*lease),
            Command::Cut { lease, .. } => *lease,
            Command::Lease { .. } | Command::Cancel | Command::Retry | Command::GiveUp { .. } => {
                None
            }
        }
    }
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The command was made under a lease that is no longer the task's running lease.
    #[error("stale: made under lease {held}, the task is at lease {current} ({state:?})")]
    Stale {
        held: LeaseId,
        current: LeaseId,
        state: TaskStateKind,
    },
    /// The command does not apply to a task in this state.
    #[error("a {state:?} task cannot {command}")]
    NotAllowed {
        command: &'static str,
        state: TaskStateKind,
    },
    /// The node said the render completed, but frames of the task's range were never
    /// reported saved.
    #[error("node reported completion with {missing} frame(s) missing")]
    Incomplete { missing: u64 },
}

/// A render a node should stop: its task went elsewhere or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRender {
    pub node: NodeId,
    pub node_job: NodeJobId,
}

/// How many of a job's tasks are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Tally {
    /// A job's tally at submission: every task queued.
    pub fn all_queued(tasks: u64) -> Tally {
        Tally {
            queued: tasks,
            ..Tally::default()
        }
    }

    pub fn total(&self) -> u64 {
        self.queued + self.running + self.completed + self.failed + self.cancelled
    }

    fn slot(&mut self, kind: TaskStateKind) -> &mut u64 {
        match kind {
            TaskStateKind::Queued => &mut self.queued,
            TaskStateKind::Running => &mut self.running,
            TaskStateKind::Completed => &mut self.completed,
            TaskStateKind::Failed => &mut self.failed,
            TaskStateKind::Cancelled => &mut self.cancelled,
        }
    }

    /// One task moved from `from` to `to`.
    pub fn moved(&mut self, from: TaskStateKind, to: TaskStateKind) {
        if from != to {
            let slot = self.slot(from);
            *slot = slot.saturating_sub(1);
            *self.slot(to) += 1;
        }
    }
}

/// A job's state as its tasks and the user's pause and cancel make it: failed as soon as a
/// task failed for good, completed when every task completed, cancelled when the user
/// cancelled it before either, paused when paused, running once a task was leased.
pub fn job_state(tally: &Tally, paused: bool, cancelled: bool) -> JobState {
    if tally.failed > 0 {
        JobState::Failed
    } else if tally.total() > 0 && tally.completed == tally.total() {
        JobState::Completed
    } else if cancelled {
        JobState::Cancelled
    } else if paused {
        JobState::Paused
    } else if tally.running + tally.completed > 0 {
        JobState::Running
    } else {
        JobState::Queued
    }
}

/// What the lifecycle knows of a job: derived from its tasks, and the user's flags.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLife {
    pub id: JobId,
    pub state: JobState,
    pub tally: Tally,
    pub paused: bool,
    pub cancelled: bool,
    pub frames_total: u64,
    pub frames_done: u64,
    /// Why the job failed.
    pub failure: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Render time per frame measured on completed tasks (start to end, over frames), in
    /// milliseconds; what the farm sizes the job's tasks by.
    pub frame_ms: Option<f64>,
}

impl JobLife {
    /// A job just accepted with `tasks` queued tasks.
    pub fn new(id: JobId, tasks: u64, frames_total: u64) -> JobLife {
        JobLife {
            id,
            state: JobState::Queued,
            tally: Tally::all_queued(tasks),
            paused: false,
            cancelled: false,
            frames_total,
            frames_done: 0,
            failure: None,
            started_at: None,
            finished_at: None,
            frame_ms: None,
        }
    }

    /// Derives the state again after the tally or a flag changed, with the times and the
    /// failure that go with it.
    fn rederive(&mut self, failure: Option<&str>, now: DateTime<Utc>) {
        let state = job_state(&self.tally, self.paused, self.cancelled);
        if self.started_at.is_none() && self.tally.running + self.tally.completed > 0 {
            self.started_at = Some(now);
        }
        if state.is_terminal() {
            self.finished_at.get_or_insert(now);
        } else {
            self.finished_at = None;
        }
        if state != JobState::Failed {
            // A re-queued job's failure is history.
            self.failure = None;
        } else if self.failure.is_none() {
            self.failure = failure.map(str::to_string);
        }
        self.state = state;
    }

    /// The job with its user flags changed (pause, resume, cancel, re-queue).
    pub fn with_flags(&self, paused: bool, cancelled: bool, now: DateTime<Utc>) -> JobLife {
        let mut job = self.clone();
        job.paused = paused;
        job.cancelled = cancelled;
        job.rederive(None, now);
        job
    }

    pub fn event(&self) -> Event {
        Event::Job {
            id: self.id,
            state: self.state,
            frames_done: self.frames_done,
            frames_total: self.frames_total,
        }
    }
}

/// A task's change, checked and ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub task: Task,
    /// The render to stop on its node (a running task was cancelled or taken back).
    pub stop: Option<StopRender>,
    /// Frames cut off the task, to become a new queued task of the job.
    pub cut_off: Option<FrameRange>,
}

/// Checks `command` against `task` and answers the task's next state.
pub fn transition(
    task: &Task,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    let not_allowed = || Refusal::NotAllowed {
        command: command.name(),
        state: task.state.kind(),
    };
    // Commands about a running task must hold its current lease.
    if let Some(held) = command.lease() {
        let running = matches!(task.state, TaskState::Running(_));
        if held != task.lease || !running {
            return Err(Refusal::Stale {
                held,
                current: task.lease,
                state: task.state.kind(),
            });
        }
    }
    let mut next = task.clone();
    let mut stop = None;
    let mut cut_off = None;
    let running = match &task.state {
        TaskState::Running(r) => Some(r),
        _ => None,
    };
    // A running task that leaves `Running` may still be rendering on its node.
    let stop_render = |r: &Running| {
        r.node_job.clone().map(|node_job| StopRender {
            node: r.node.clone(),
            node_job,
        })
    };
    match (command, &task.state) {
        (Command::Lease { node, owner }, TaskState::Queued) => {
            next.lease = task.lease.next();
            next.last_node = Some(node.clone());
            next.state = TaskState::Running(Running {
                node: node.clone(),
                owner: owner.clone(),
                node_job: None,
                started_at: now,
                progress_at: now,
            });
        }
        (Command::Lease { .. }, _) => return Err(not_allowed()),
        (Command::Dispatched { node_job, .. }, TaskState::Running(r)) => {
            if r.node_job.is_some() {
                return Err(not_allowed());
            }
            let mut r = r.clone();
            r.node_job = Some(node_job.clone());
            r.progress_at = now;
            next.state = TaskState::Running(r);
        }
        (Command::Progress { .. }, TaskState::Running(r)) => {
            // A progress report (a new frame, or samples of a long one) moves the stall
            // clock.
            let mut r = r.clone();
            r.progress_at = now;
            next.state = TaskState::Running(r);
        }
        (
            Command::Complete {
                frames_recorded, ..
            },
            TaskState::Running(_),
        ) => {
            let missing = task.range.len().saturating_sub(*frames_recorded);
            if missing > 0 {
                return Err(Refusal::Incomplete { missing });
            }
            next.last_failure = None;
            next.state = TaskState::Completed { finished_at: now };
        }
        (
            Command::Fail {
                reason,
                max_attempts,
                ..
            },
            TaskState::Running(r),
        ) => {
            stop = stop_render(r);
            next.lease = task.lease.next();
            next.attempts = task.attempts + 1;
            next.last_failure = Some(reason.clone());
            next.state = if next.attempts >= *max_attempts {
                TaskState::Failed {
                    reason: reason.clone(),
                    finished_at: now,
                }
            } else {
                TaskState::Queued
            };
        }
        (Command::TakeBack { .. }, TaskState::Running(r)) => {
            stop = stop_render(r);
            next.lease = task.lease.next();
            next.state = TaskState::Queued;
        }
        (Command::Adopt { owner, .. }, TaskState::Running(r)) => {
            let mut r = r.clone();
            r.owner = owner.clone();
            next.state = TaskState::Running(r);
        }
        (Command::Cancel, TaskState::Queued | TaskState::Running(_)) => {
            if let Some(r) = running {
                stop = stop_render(r);
                next.lease = task.lease.next();
            }
            next.state = TaskState::Cancelled { finished_at: now };
        }
        (Command::Retry, TaskState::Failed { .. } | TaskState::Cancelled { .. }) => {
            next.attempts = 0;
            next.last_failure = None;
            next.state = TaskState::Queued;
        }
        (Command::Cut { keep_to, lease }, TaskState::Queued | TaskState::Running(_)) => {
            // A running task is cut only under its lease (checked above), a queued one
            // without one.
            if lease.is_none() != matches!(task.state, TaskState::Queued) {
                return Err(not_allowed());
            }
            let head = FrameRange::new(task.range.from(), *keep_to);
            let tail = FrameRange::new(keep_to.saturating_add(1), task.range.to());
            let (Ok(head), Ok(tail)) = (head, tail) else {
                return Err(not_allowed());
            };
            next.range = head;
            cut_off = Some(tail);
        }
        (Command::GiveUp { reason }, TaskState::Queued) => {
            next.last_failure = Some(reason.clone());
            next.state = TaskState::Failed {
                reason: reason.clone(),
                finished_at: now,
            };
        }
        _ => return Err(not_allowed()),
    }
    Ok(Transition {
        task: next,
        stop,
        cut_off,
    })
}

/// A task's change with its job's: what the store writes in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub task: Task,
    pub job: JobLife,
    pub stop: Option<StopRender>,
    /// Frames cut off the task: the store adds them to the job as a new queued task (the
    /// job's tally already counts it).
    pub cut_off: Option<FrameRange>,
    /// True when this step failed the job: its other tasks are to be cancelled (each
    /// through [`step`] with [`Command::Cancel`]).
    pub cancel_the_rest: bool,
    /// What changed, for event subscribers, in order.
    pub events: Vec<Event>,
}

/// Applies `command` to `task` of `job`: the task's next state, the job's state derived in
/// the same place, and the events they cause. Pure: the caller stores the result.
pub fn step(
    task: &Task,
    job: &JobLife,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<Step, Refusal> {
    let Transition {
        task: next,
        stop,
        cut_off,
    } = transition(task, command, now)?;
    let mut next_job = job.clone();
    let (from, to) = (task.state.kind(), next.state.kind());
    next_job.tally.moved(from, to);
    if cut_off.is_some() {
        next_job.tally.queued += 1;
    }
    if let Command::Progress { new_frames, .. } = command {
        next_job.frames_done = (job.frames_done + new_frames).min(job.frames_total);
    }
    if let (Command::Complete { render_ms, .. }, TaskState::Running(r)) = (command, &task.state) {
        let wall = (now - r.started_at).num_milliseconds().max(0) as f64;
        // The node's own figure, but never more time than passed here since the lease (a
        // node's clock, or a hostile node, cannot make a job's frames look slower).
        let took = render_ms.map_or(wall, |ms| (ms as f64).min(wall));
        let per_frame = took / task.range.len().max(1) as f64;
        // A moving average: recent tasks count most, one odd task does not swing it.
        next_job.frame_ms = Some(match job.frame_ms {
            Some(old) => 0.7 * old + 0.3 * per_frame,
            None => per_frame,
        });
    }
    let failure = match &next.state {
        TaskState::Failed { reason, .. } => Some(reason.as_str()),
        _ => None,
    };
    next_job.rederive(failure, now);
    let mut events = Vec::new();
    if from != to {
        events.push(Event::Task {
            job: task.job,
            id: task.id,
            state: to,
            node: next.last_node.clone(),
        });
    }
    if next_job.state != job.state || next_job.frames_done != job.frames_done {
        events.push(next_job.event());
    }
    let cancel_the_rest = next_job.state == JobState::Failed && job.state != JobState::Failed;
    Ok(Step {
        task: next,
        job: next_job,
        stop,
        cut_off,
        cancel_the_rest,
        events,
    })
}

/// What a user (or the API) may ask of a whole job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCommand {
    Cancel,
    Pause,
    Resume,
    /// Put a failed or cancelled job's unfinished tasks back in the queue.
    Requeue,
    /// Change the job's priority (higher runs first).
    Prioritize(i64),
}

impl JobCommand {
    pub fn name(self) -> &'static str {
        match self {
            JobCommand::Cancel => "cancelled",
            JobCommand::Pause => "paused",
            JobCommand::Resume => "resumed",
            JobCommand::Requeue => "re-queued",
            JobCommand::Prioritize(_) => "re-prioritised",
        }
    }
}

/// Why a job command was refused: the API answers 409 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job is {state}; {rule}")]
pub struct JobRefusal {
    pub state: &'static str,
    pub rule: &'static str,
}

/// The API's rules for job commands, in one place: a job that has ended can be neither
/// cancelled, paused nor resumed, nor re-prioritised; only a failed or cancelled job can be
/// re-queued; resuming needs a paused job and pausing one that is not.
pub fn check_job_command(job: &JobLife, command: JobCommand) -> Result<(), JobRefusal> {
    let refuse = |rule| {
        Err(JobRefusal {
            state: job.state.as_str(),
            rule,
        })
    };
    let ended = job.state.is_terminal();
    match command {
        JobCommand::Cancel if ended => refuse("only a job that has not ended can be cancelled"),
        JobCommand::Pause if ended => refuse("only a job that has not ended can be paused"),
        JobCommand::Resume if ended => refuse("only a job that has not ended can be resumed"),
        JobCommand::Prioritize(_) if ended => {
            refuse("only a job that has not ended can change priority")
        }
        JobCommand::Requeue if !matches!(job.state, JobState::Failed | JobState::Cancelled) => {
            refuse("only failed or cancelled jobs can be re-queued")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn task() -> Task {
        Task {
            id: TaskId(7),
            job: JobId::new(),
            index: 0,
            range: FrameRange::new(1, 5).unwrap(),
            attempts: 0,
            lease: LeaseId(0),
            last_node: None,
            last_failure: None,
            state: TaskState::Queued,
        }
    }

    fn job_of(task: &Task, tasks: u64) -> JobLife {
        JobLife::new(task.job, tasks, 5 * tasks)
    }

    fn owner() -> OrchestratorId {
        OrchestratorId::new("o1")
    }

    fn lease(t: &Task) -> Task {
        let cmd = Command::Lease {
            node: NodeId::new("a:1"),
            owner: owner(),
        };
        transition(t, &cmd, now()).unwrap().task
    }

    fn dispatched(t: &Task) -> Task {
        let cmd = Command::Dispatched {
            lease: t.lease,
            node_job: NodeJobId::new("nj"),
        };
        transition(t, &cmd, now()).unwrap().task
    }

    fn kind(t: &Task) -> TaskStateKind {
        t.state.kind()
    }

    #[test]
    fn a_task_is_leased_dispatched_and_completed() {
        let t = task();
        let running = lease(&t);
        assert_eq!(running.lease, LeaseId(1));
        assert_eq!(running.last_node, Some(NodeId::new("a:1")));
        let TaskState::Running(r) = &running.state else {
            panic!("not running")
        };
        assert_eq!((r.owner.as_str(), r.node_job.clone()), ("o1", None));
        let running = dispatched(&running);
        let progress = Command::Progress {
            lease: running.lease,
            new_frames: 2,
        };
        let running = transition(&running, &progress, now()).unwrap().task;
        let done = transition(
            &running,
            &Command::Complete {
                lease: running.lease,
                frames_recorded: 5,
                render_ms: None,
            },
            now(),
        )
        .unwrap();
        assert_eq!(kind(&done.task), TaskStateKind::Completed);
        assert_eq!(done.stop, None);
        assert_eq!(done.task.lease, LeaseId(1), "completion keeps the lease");
    }

    #[test]
    fn the_frame_time_is_the_nodes_render_time_when_it_tells_it() {
        let t = task();
        let job = job_of(&t, 1);
        let running = dispatched(&lease(&t));
        // Reported ten seconds after the lease (a busy farm's dispatch and report), for a
        // render the node says took 500 ms: 100 ms for each of its five frames.
        let later = now() + chrono::Duration::seconds(10);
        let complete = |render_ms| Command::Complete {
            lease: running.lease,
            frames_recorded: 5,
            render_ms,
        };
        let told = step(&running, &job, &complete(Some(500)), later).unwrap();
        assert_eq!(told.job.frame_ms, Some(100.0));
        // Without the node's figure, or with one longer than the time since the lease,
        // the time since the lease is all there is.
        for render_ms in [None, Some(3_600_000)] {
            let untold = step(&running, &job, &complete(render_ms), later).unwrap();
            let ms = untold.job.frame_ms.unwrap();
            assert!((1990.0..=2010.0).contains(&ms), "{render_ms:?}: {ms}");
        }
    }

    #[test]
    fn stale_leases_are_refused_for_every_running_command() {
        let running = dispatched(&lease(&task()));
        let old = LeaseId(0);
        let commands = [
            Command::Dispatched {
                lease: old,
                node_job: NodeJobId::new("x"),
            },
            Command::Progress {
                lease: old,
                new_frames: 1,
            },
            Command::Complete {
                lease: old,
                frames_recorded: 5,
                render_ms: None,
            },
            Command::Fail {
                lease: old,
                reason: "x".into(),
                max_attempts: 3,
            },
            Command::TakeBack { lease: old },
            Command::Adopt {
                lease: old,
                owner: owner(),
            },
        ];
        for cmd in &commands {
            let err = transition(&running, cmd, now()).unwrap_err();
            assert!(
                matches!(
                    err,
                    Refusal::Stale {
                        held: LeaseId(0),
                        current: LeaseId(1),
                        ..
                    }
                ),
                "{cmd:?}: {err:?}"
            );
        }
        // The same commands against a task that is no longer running are stale too, even
        // under the lease it last ran under.
        let back = transition(
            &running,
            &Command::TakeBack {
                lease: running.lease,
            },
            now(),
        )
        .unwrap()
        .task;
        let late = Command::Complete {
            lease: running.lease,
            frames_recorded: 5,
            render_ms: None,
        };
        assert!(matches!(
            transition(&back, &late, now()),
            Err(Refusal::Stale { .. })
        ));
    }

    #[test]
    fn failures_retry_until_attempts_run_out() {
        let mut t = task();
        for attempt in 1..=3 {
            let running = dispatched(&lease(&t));
            let cmd = Command::Fail {
                lease: running.lease,
                reason: format!("boom {attempt}"),
                max_attempts: 3,
            };
            let tr = transition(&running, &cmd, now()).unwrap();
            assert_eq!(
                tr.stop,
                Some(StopRender {
                    node: NodeId::new("a:1"),
                    node_job: NodeJobId::new("nj")
                })
            );
            assert!(
                tr.task.lease > running.lease,
                "a failure fences the lease off"
            );
            t = tr.task;
            assert_eq!(t.attempts, attempt);
            let expected = if attempt < 3 {
                TaskStateKind::Queued
            } else {
                TaskStateKind::Failed
            };
            assert_eq!(kind(&t), expected);
        }
        assert_eq!(t.last_failure.as_deref(), Some("boom 3"));
        // Retry (the job re-queued) gives fresh attempts.
        let t = transition(&t, &Command::Retry, now()).unwrap().task;
        assert_eq!(
            (kind(&t), t.attempts, t.last_failure),
            (TaskStateKind::Queued, 0, None)
        );
    }

    #[test]
    fn take_back_does_not_count_an_attempt_and_adopt_changes_the_owner() {
        let running = lease(&task());
        // Taken back before the node accepted it: nothing to stop there.
        let tr = transition(
            &running,
            &Command::TakeBack {
                lease: running.lease,
            },
            now(),
        )
        .unwrap();
        assert_eq!(
            (kind(&tr.task), tr.task.attempts, tr.stop),
            (TaskStateKind::Queued, 0, None)
        );
        let running = dispatched(&lease(&tr.task));
        let adopted = transition(
            &running,
            &Command::Adopt {
                lease: running.lease,
                owner: OrchestratorId::new("o2"),
            },
            now(),
        )
        .unwrap()
        .task;
        let TaskState::Running(r) = &adopted.state else {
            panic!("adopting ends nothing")
        };
        assert_eq!((r.owner.as_str(), adopted.lease), ("o2", running.lease));
    }

    #[test]
    fn refused_commands_name_the_state() {
        let queued = task();
        let running = dispatched(&lease(&queued));
        let done = transition(
            &running,
            &Command::Complete {
                lease: running.lease,
                frames_recorded: 5,
                render_ms: None,
            },
            now(),
        )
        .unwrap()
        .task;
        let cases: Vec<(&Task, Command, TaskStateKind)> = vec![
            (
                &running,
                Command::Lease {
                    node: NodeId::new("b"),
                    owner: owner(),
                },
                TaskStateKind::Running,
            ),
            (
                &done,
                Command::Lease {
                    node: NodeId::new("b"),
                    owner: owner(),
                },
                TaskStateKind::Completed,
            ),
            (&done, Command::Cancel, TaskStateKind::Completed),
            (&queued, Command::Retry, TaskStateKind::Queued),
            (&running, Command::Retry, TaskStateKind::Running),
            (&done, Command::Retry, TaskStateKind::Completed),
            (
                &running,
                Command::GiveUp { reason: "x".into() },
                TaskStateKind::Running,
            ),
            (
                &running,
                Command::Dispatched {
                    lease: running.lease,
                    node_job: NodeJobId::new("again"),
                },
                TaskStateKind::Running,
            ),
        ];
        for (t, cmd, state) in cases {
            let err = transition(t, &cmd, now()).unwrap_err();
            assert_eq!(
                err,
                Refusal::NotAllowed {
                    command: cmd.name(),
                    state
                },
                "{cmd:?}"
            );
        }
    }

    #[test]
    fn cancel_stops_a_running_render_and_drops_a_queued_task() {
        let queued = task();
        let tr = transition(&queued, &Command::Cancel, now()).unwrap();
        assert_eq!((kind(&tr.task), tr.stop), (TaskStateKind::Cancelled, None));
        let running = dispatched(&lease(&queued));
        let tr = transition(&running, &Command::Cancel, now()).unwrap();
        assert_eq!(kind(&tr.task), TaskStateKind::Cancelled);
        assert!(tr.stop.is_some());
        assert!(tr.task.lease > running.lease);
        let gave_up = transition(
            &queued,
            &Command::GiveUp {
                reason: "no node".into(),
            },
            now(),
        )
        .unwrap()
        .task;
        assert_eq!(kind(&gave_up), TaskStateKind::Failed);
    }

    #[test]
    fn completion_needs_every_frame_recorded() {
        let running = dispatched(&lease(&task()));
        let short = Command::Complete {
            lease: running.lease,
            frames_recorded: 3,
            render_ms: None,
        };
        assert_eq!(
            transition(&running, &short, now()),
            Err(Refusal::Incomplete { missing: 2 })
        );
    }

    #[test]
    fn cuts_keep_the_head_and_hand_off_the_tail() {
        let queued = task();
        let cut = Command::Cut {
            lease: None,
            keep_to: 2,
        };
        let tr = transition(&queued, &cut, now()).unwrap();
        assert_eq!((tr.task.range.from(), tr.task.range.to()), (1, 2));
        assert_eq!(tr.cut_off, Some(FrameRange::new(3, 5).unwrap()));
        assert_eq!(tr.task.lease, queued.lease, "a cut is no new lease");
        // Nothing to cut off, or nothing left: refused.
        for keep_to in [5, 0, 9] {
            let cut = Command::Cut {
                lease: None,
                keep_to,
            };
            assert!(transition(&queued, &cut, now()).is_err(), "{keep_to}");
        }
        // A running task only under its lease.
        let running = dispatched(&lease(&queued));
        let blind = Command::Cut {
            lease: None,
            keep_to: 2,
        };
        assert!(matches!(
            transition(&running, &blind, now()),
            Err(Refusal::NotAllowed { .. })
        ));
        let stale = Command::Cut {
            lease: Some(LeaseId(0)),
            keep_to: 2,
        };
        assert!(matches!(
            transition(&running, &stale, now()),
            Err(Refusal::Stale { .. })
        ));
        let steal = Command::Cut {
            lease: Some(running.lease),
            keep_to: 3,
        };
        let mut job = job_of(&running, 1);
        job.tally = Tally {
            running: 1,
            ..Tally::default()
        };
        let s = step(&running, &job, &steal, now()).unwrap();
        assert_eq!(s.task.state.kind(), TaskStateKind::Running);
        assert_eq!(s.task.range.to(), 3);
        assert_eq!(s.cut_off, Some(FrameRange::new(4, 5).unwrap()));
        assert_eq!((s.job.tally.queued, s.job.tally.running), (1, 1));
        // A finished task cannot be cut.
        let done = transition(
            &running,
            &Command::Complete {
                lease: running.lease,
                frames_recorded: 5,
                render_ms: None,
            },
            now(),
        )
        .unwrap()
        .task;
        assert!(transition(&done, &cut, now()).is_err());
    }

    #[test]
    fn job_state_follows_the_tally_and_flags() {
        let tally = |q, r, c, f, x| Tally {
            queued: q,
            running: r,
            completed: c,
            failed: f,
            cancelled: x,
        };
        assert_eq!(
            job_state(&tally(2, 0, 0, 0, 0), false, false),
            JobState::Queued
        );
        assert_eq!(
            job_state(&tally(1, 0, 1, 0, 0), false, false),
            JobState::Running
        );
        assert_eq!(
            job_state(&tally(1, 1, 0, 0, 0), false, false),
            JobState::Running
        );
        assert_eq!(
            job_state(&tally(1, 1, 0, 0, 0), true, false),
            JobState::Paused
        );
        assert_eq!(
            job_state(&tally(0, 0, 2, 0, 0), true, false),
            JobState::Completed
        );
        assert_eq!(
            job_state(&tally(0, 1, 1, 1, 0), false, false),
            JobState::Failed
        );
        assert_eq!(
            job_state(&tally(0, 0, 1, 0, 1), false, true),
            JobState::Cancelled
        );
        assert_eq!(
            job_state(&tally(0, 0, 0, 1, 1), false, true),
            JobState::Failed
        );
        assert_eq!(
            job_state(&tally(0, 0, 0, 0, 0), false, false),
            JobState::Queued
        );
    }

    #[test]
    fn steps_derive_the_job_and_its_events() {
        let t = task();
        let job = job_of(&t, 2);
        let s = step(
            &t,
            &job,
            &Command::Lease {
                node: NodeId::new("a:1"),
                owner: owner(),
            },
            now(),
        )
        .unwrap();
        assert_eq!(s.job.state, JobState::Running);
        assert!(s.job.started_at.is_some());
        assert_eq!(
            s.job.tally,
            Tally {
                queued: 1,
                running: 1,
                ..Tally::default()
            }
        );
        assert_eq!(s.events.len(), 2, "task and job events: {:?}", s.events);
        let running = s.task;
        let job = s.job;
        let s = step(
            &running,
            &job,
            &Command::Progress {
                lease: running.lease,
                new_frames: 3,
            },
            now(),
        )
        .unwrap();
        assert_eq!(s.job.frames_done, 3);
        assert_eq!(
            s.events,
            vec![s.job.event()],
            "progress is a job event only"
        );
        let job = s.job;
        // The attempt fails for good: the job fails, with the reason, and the rest is to be
        // cancelled.
        let s = step(
            &running,
            &job,
            &Command::Fail {
                lease: running.lease,
                reason: "Blender exited with code 1".into(),
                max_attempts: 1,
            },
            now(),
        )
        .unwrap();
        assert_eq!(s.job.state, JobState::Failed);
        assert_eq!(s.job.failure.as_deref(), Some("Blender exited with code 1"));
        assert!(s.job.finished_at.is_some());
        assert!(s.cancel_the_rest);
        // Stale commands change neither task nor job.
        let stale = step(
            &running,
            &job,
            &Command::Complete {
                lease: LeaseId(99),
                frames_recorded: 5,
                render_ms: None,
            },
            now(),
        );
        assert!(matches!(stale, Err(Refusal::Stale { .. })));
    }

    #[test]
    fn user_flags_rederive_the_job() {
        let t = task();
        let job = job_of(&t, 1);
        let paused = job.with_flags(true, false, now());
        assert_eq!(paused.state, JobState::Paused);
        let resumed = paused.with_flags(false, false, now());
        assert_eq!(resumed.state, JobState::Queued);
        let mut cancelled = job.with_flags(false, true, now());
        cancelled
            .tally
            .moved(TaskStateKind::Queued, TaskStateKind::Cancelled);
        let cancelled = cancelled.with_flags(false, true, now());
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert!(cancelled.finished_at.is_some());
    }

    #[test]
    fn job_command_rules() {
        let t = task();
        let mut job = job_of(&t, 1);
        for cmd in [
            JobCommand::Cancel,
            JobCommand::Pause,
            JobCommand::Resume,
            JobCommand::Prioritize(3),
        ] {
            assert!(check_job_command(&job, cmd).is_ok(), "{cmd:?}");
        }
        assert!(check_job_command(&job, JobCommand::Requeue).is_err());
        for ended in [JobState::Completed, JobState::Failed, JobState::Cancelled] {
            job.state = ended;
            for cmd in [
                JobCommand::Cancel,
                JobCommand::Pause,
                JobCommand::Resume,
                JobCommand::Prioritize(3),
            ] {
                let err = check_job_command(&job, cmd).unwrap_err();
                assert_eq!(err.state, ended.as_str());
            }
        }
        job.state = JobState::Completed;
        assert!(check_job_command(&job, JobCommand::Requeue).is_err());
        job.state = JobState::Failed;
        assert!(check_job_command(&job, JobCommand::Requeue).is_ok());
    }
}
