//! The scheduling policy: which queued task goes to which node slot. Pure: the
//! orchestrator reads the queue and the nodes from its database, asks [`assign`], and
//! carries the answer out.
//!
//! Dispatch is dynamic: a task goes to a node only when the node has a free slot, so a
//! node that finishes sooner asks for (gets) more work, and a node that joins gets work on
//! the next round.

use crate::ids::{NodeId, TaskId};
use crate::job::JobId;
use std::collections::{HashMap, HashSet};

/// A task waiting for a slot.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedTask {
    pub task_id: TaskId,
    pub job_id: JobId,
    /// Higher runs first.
    pub priority: i64,
    /// Job submission order (lower is older).
    pub job_seq: i64,
    /// Position of the task in its job.
    pub index: u32,
    /// Nodes this task already failed on; another node is preferred for the retry.
    pub failed_on: Vec<NodeId>,
    /// Frames in the task.
    pub frames: u64,
    /// The task may be cut into pieces as it is dispatched (its job's tasks are sized by
    /// the farm).
    pub splittable: bool,
    /// The job's measured render time per frame, in milliseconds, once known.
    pub frame_ms: Option<f64>,
}

/// One placement: `task` to `node`; `frames: Some(n)` cuts the first `n` frames off the
/// task for this node (the rest stays queued): a piece of a task the farm sizes, or as
/// much of any task as the node renders in one (its `--max-frames`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub task: TaskId,
    pub node: NodeId,
    pub frames: Option<u64>,
}

/// How long a task the farm sizes aims to render, unless the orchestrator is told
/// otherwise (`--task-length`): long enough that starting it is a small part of it, short
/// enough that the work spreads over every node and a job submitted later gets a slot
/// soon.
pub const TARGET_TASK_MS: f64 = 30_000.0;

/// How long a task the farm sizes renders at least: a task's start and end cost the
/// orchestrator and the node a round trip or two each, and a farm of a thousand nodes
/// ending tasks of a tenth of a second would spend more time on those than on rendering.
/// The tails of such tasks are shared out instead (see [`pick_tails`]).
pub const MIN_TASK_MS: f64 = 1_000.0;

/// Most frames of a piece cut before the job's frame time is known: a node refuses a render
/// of more frames than its `--max-frames` (10,000 by default), and an even share of a large
/// job over a small farm would be more.
pub const FIRST_SHARE_MAX_FRAMES: u64 = 1_000;

/// Frames for the next piece of a job the farm sizes, with `remaining` frames not yet
/// dispatched and `farm_slots` render slots in the farm: an even share of what remains
/// over every slot, so every node finishes at about the same time, and, once the job's
/// frame time is measured, no more than renders in about `target_ms` and no less
/// than [`MIN_TASK_MS`].
///
/// Before the frame time is known the share is capped only at [`FIRST_SHARE_MAX_FRAMES`]:
/// each render's own first frames measure it, and [`pick_overlong`] then cuts a render's
/// frames beyond the target off for the queue. Starting with one-frame pieces to measure instead made every node of a large
/// farm end its first piece together, and the farm waited for a thousand ends and leases
/// to be recorded before it rendered again.
pub fn auto_chunk(remaining: u64, farm_slots: usize, frame_ms: Option<f64>, target_ms: f64) -> u64 {
    match frame_ms.filter(|ms| *ms > 0.0) {
        Some(ms) => node_chunk(remaining, farm_slots, ms, ms, target_ms),
        None => remaining
            .max(1)
            .div_ceil(farm_slots.max(1) as u64)
            .min(FIRST_SHARE_MAX_FRAMES),
    }
}

/// Frames for the next piece of a job the farm sizes, for a node that renders the job's
/// frames in `node_ms` each when the job's frames take `job_ms` on average: the node's
/// share of what remains in proportion to its speed (a node twice as fast as the average
/// gets twice the even share, so both end together), no more than the node renders in
/// `target_ms` and no less than it renders in [`MIN_TASK_MS`]. A slow node given a piece
/// sized at the farm's average would end last, alone.
pub fn node_chunk(
    remaining: u64,
    farm_slots: usize,
    job_ms: f64,
    node_ms: f64,
    target_ms: f64,
) -> u64 {
    let remaining = remaining.max(1);
    let (job_ms, node_ms) = (
        job_ms.max(f64::MIN_POSITIVE),
        node_ms.max(f64::MIN_POSITIVE),
    );
    let share = (remaining as f64 / farm_slots.max(1) as f64 * job_ms / node_ms).ceil() as u64;
    let target = (target_ms / node_ms).floor().max(1.0) as u64;
    let least = (MIN_TASK_MS / node_ms).ceil().max(1.0) as u64;
    target.min(share).max(least).clamp(1, remaining)
}

/// A node that can take work now.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSlots {
    pub node_id: NodeId,
    pub free: usize,
    /// Jobs this node failed too often for; it gets none of their tasks.
    pub blocked_jobs: HashSet<JobId>,
    /// This node's measured time per frame of each job it rendered (milliseconds), for
    /// sizing its pieces of jobs the farm sizes ([`node_chunk`]).
    pub frame_ms: HashMap<JobId, f64>,
    /// The most frames it renders in one task (its `--max-frames`), when known: it
    /// refuses a longer one, so a longer task is cut to this for it.
    pub max_frames: Option<u64>,
}

/// Pairs queued tasks with free node slots: tasks in order of job priority (highest
/// first), then job submission, then position in the job's queue order; each to an allowed node with a free
/// slot, preferring one the task has not failed on, then the one with most free slots
/// (spreading work), then the first listed. A splittable task is cut into pieces of
/// [`auto_chunk`] frames (aiming at `target_ms` of rendering), one per free slot, until it
/// is all placed; a node whose frame time for the job is measured gets a piece sized to
/// its speed ([`node_chunk`]). No node gets more frames than its `max_frames`: any task,
/// however sized, is cut to that for it, and the rest waits for the next slot.
/// `farm_slots` counts every slot of the farm, busy or not.
pub fn assign(
    tasks: &[QueuedTask],
    nodes: &[NodeSlots],
    farm_slots: usize,
    target_ms: f64,
) -> Vec<Assignment> {
    let mut order: Vec<&QueuedTask> = tasks.iter().collect();
    order.sort_by_key(|t| (std::cmp::Reverse(t.priority), t.job_seq, t.index));
    let mut free: Vec<usize> = nodes.iter().map(|n| n.free).collect();
    let mut out = Vec::new();
    for task in order {
        let mut remaining = task.frames.max(1);
        // One size for every piece cut this round (for nodes of one speed): sizing each
        // piece from what the pieces before it left would shrink them one after another,
        // and leave a third of a large job queued after a round over a thousand idle slots.
        let size = auto_chunk(remaining, farm_slots, task.frame_ms, target_ms);
        // A node's piece, and the most frames a piece of it may have: what renders in
        // `target_ms` at its speed (or the job's), or a first share's most.
        let most_at = |ms: f64| ((target_ms / ms).floor() as u64).max(1);
        let size_for = |node: &NodeSlots| match (task.frame_ms, node.frame_ms.get(&task.job_id)) {
            (Some(job_ms), Some(&node_ms)) if job_ms > 0.0 && node_ms > 0.0 => (
                node_chunk(task.frames, farm_slots, job_ms, node_ms, target_ms),
                most_at(node_ms),
            ),
            (Some(job_ms), _) if job_ms > 0.0 => (size, most_at(job_ms)),
            _ => (size, FIRST_SHARE_MAX_FRAMES),
        };
        loop {
            if free.iter().all(|&f| f == 0) {
                return out;
            }
            let best = nodes
                .iter()
                .enumerate()
                .filter(|(i, n)| free[*i] > 0 && !n.blocked_jobs.contains(&task.job_id))
                .min_by_key(|(i, n)| {
                    (
                        task.failed_on.contains(&n.node_id),
                        std::cmp::Reverse(free[*i]),
                        *i,
                    )
                });
            let Some((i, node)) = best else {
                break;
            };
            free[i] -= 1;
            // Whatever sized the task, the submitter's chunk or the farm: a node would
            // refuse a render longer than its `--max-frames`, so it gets that much and the
            // rest waits for the next slot.
            let cap = node.max_frames.map_or(u64::MAX, |most| most.max(1));
            let piece = if task.splittable {
                let (piece, most) = size_for(node);
                let (piece, most) = (piece.min(remaining).min(cap), most.min(cap));
                // No crumb is left behind for another node to start on: a stolen tail a
                // little longer than a piece goes whole, unless that makes it longer than
                // a piece may be (the task length would cut it again, or the node refuse
                // it).
                if remaining - piece < piece / 2 && remaining <= most.max(piece) {
                    remaining
                } else {
                    piece
                }
            } else {
                remaining.min(cap)
            };
            out.push(Assignment {
                task: task.task_id,
                node: node.node_id.clone(),
                frames: (piece < remaining).then_some(piece),
            });
            remaining -= piece;
            if remaining == 0 {
                break;
            }
        }
    }
    out
}

/// Frames a stolen tail has at least: a single frame is not worth another node's start.
pub const MIN_STOLEN_FRAMES: i64 = 2;

/// A running render as its watcher last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderAtWork {
    pub task: TaskId,
    /// The frame being rendered now (or the next to render).
    pub current: i64,
    /// The render's last frame.
    pub to: i64,
    /// Its time per frame in milliseconds, as its watcher measured it, when its task is
    /// one the farm sizes and a frame of it was saved; `None` otherwise.
    pub frame_ms: Option<f64>,
}

/// Which running renders give their unstarted tails to idle slots (nothing being queued),
/// given each idle slot's measured frame time for the work at hand (`None` when unknown).
/// Answers `(task, keep_to)`.
///
/// Once renders' frame times are measured, the frames left are balanced: at the farm's
/// speed (the renders' and the idle slots' together) they take some time T, and each
/// render keeps what it renders in T, giving the rest (at least [`MIN_STOLEN_FRAMES`])
/// back. A render or slot not measured counts at the renders' mean speed. So a fast node
/// that runs dry takes a slow node's tail in proportion to its speed, and the two end
/// together, rather than the slow node keeping one frame and then taking a piece of its
/// own tail back at its own pace.
///
/// With no frame time measured, the renders with the longest tails after the frame they
/// render now give the rest away, one per idle slot.
pub fn pick_tails(renders: &[RenderAtWork], idle: &[Option<f64>]) -> Vec<(TaskId, i64)> {
    let measured: Vec<f64> = renders
        .iter()
        .filter_map(|r| r.frame_ms.filter(|ms| *ms > 0.0))
        .collect();
    if measured.is_empty() {
        let mut candidates: Vec<&RenderAtWork> = renders
            .iter()
            .filter(|r| r.to - r.current >= MIN_STOLEN_FRAMES)
            .collect();
        candidates.sort_by_key(|r| (std::cmp::Reverse(r.to - r.current), r.task));
        return candidates
            .into_iter()
            .take(idle.len())
            .map(|r| (r.task, r.current))
            .collect();
    }
    let mean_rate = measured.iter().map(|ms| 1.0 / ms).sum::<f64>() / measured.len() as f64;
    let rate = |ms: Option<f64>| ms.filter(|ms| *ms > 0.0).map_or(mean_rate, |ms| 1.0 / ms);
    let left: f64 = renders
        .iter()
        .map(|r| (r.to - r.current + 1).max(0) as f64)
        .sum();
    let farm_rate: f64 = renders.iter().map(|r| rate(r.frame_ms)).sum::<f64>()
        + idle.iter().map(|ms| rate(*ms)).sum::<f64>();
    let finish_ms = left / farm_rate;
    // The renders whose tails take longest beyond T, one per idle slot: every cut costs
    // its render a round trip, and a tail near a piece's size goes whole to one slot (see
    // `assign`).
    let mut picks: Vec<(f64, TaskId, i64)> = renders
        .iter()
        .filter_map(|r| {
            let keep = ((finish_ms * rate(r.frame_ms)).ceil() as i64).max(1);
            let keep_to = r.current.saturating_add(keep - 1);
            let given = r.to.saturating_sub(keep_to);
            (given >= MIN_STOLEN_FRAMES).then_some((
                given as f64 / rate(r.frame_ms),
                r.task,
                keep_to,
            ))
        })
        .collect();
    picks.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    picks
        .into_iter()
        .take(idle.len())
        .map(|(_, task, keep_to)| (task, keep_to))
        .collect()
}

/// Which renders of tasks the farm sizes have more frames ahead than render in about
/// `target_ms`, at their measured frame time: each keeps the frames it renders in
/// that time (at least the one it renders now) and gives the rest, at least
/// [`MIN_STOLEN_FRAMES`], back to the queue. So a farm-sized task, however large its first
/// piece was, holds its node about as long as a measured piece would, and a job submitted
/// later gets a slot within about that long. Answers `(task, keep_to)`.
pub fn pick_overlong(renders: &[RenderAtWork], target_ms: f64) -> Vec<(TaskId, i64)> {
    renders
        .iter()
        .filter_map(|r| {
            let ms = r.frame_ms.filter(|ms| *ms > 0.0)?;
            let keep = ((target_ms / ms).floor() as i64).max(1);
            let keep_to = r.current.saturating_add(keep - 1);
            (r.to.saturating_sub(keep_to) >= MIN_STOLEN_FRAMES).then_some((r.task, keep_to))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(task_id: i64, job: JobId, priority: i64, job_seq: i64, index: u32) -> QueuedTask {
        QueuedTask {
            task_id: TaskId(task_id),
            job_id: job,
            priority,
            job_seq,
            index,
            failed_on: vec![],
            frames: 5,
            splittable: false,
            frame_ms: None,
        }
    }

    fn node(id: &str, free: usize) -> NodeSlots {
        NodeSlots {
            node_id: NodeId::new(id),
            free,
            blocked_jobs: HashSet::new(),
            frame_ms: HashMap::new(),
            max_frames: None,
        }
    }

    /// `(task, node)` pairs of an assignment, for comparing.
    fn pairs(got: Vec<Assignment>) -> Vec<(i64, String)> {
        got.into_iter()
            .map(|a| (a.task.0, a.node.as_str().to_string()))
            .collect()
    }

    #[test]
    fn only_free_slots_get_work() {
        let job = JobId::new();
        let tasks: Vec<_> = (0..5).map(|i| task(i, job, 0, 1, i as u32)).collect();
        let got = pairs(assign(
            &tasks,
            &[node("a", 1), node("b", 0), node("c", 2)],
            3,
            TARGET_TASK_MS,
        ));
        assert_eq!(got.len(), 3);
        assert_eq!(got.iter().filter(|(_, n)| n == "a").count(), 1);
        assert_eq!(got.iter().filter(|(_, n)| n == "c").count(), 2);
        assert!(assign(&tasks, &[node("a", 0)], 1, TARGET_TASK_MS).is_empty());
        assert!(assign(&[], &[node("a", 3)], 3, TARGET_TASK_MS).is_empty());
    }

    #[test]
    fn priority_then_submission_then_position() {
        let (old, new, urgent) = (JobId::new(), JobId::new(), JobId::new());
        let tasks = vec![
            task(1, old, 0, 1, 1),
            task(2, old, 0, 1, 0),
            task(3, new, 0, 2, 0),
            task(4, urgent, 10, 3, 0),
        ];
        let got: Vec<i64> = pairs(assign(&tasks, &[node("a", 3)], 3, TARGET_TASK_MS))
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(got, vec![4, 2, 1]);
    }

    #[test]
    fn retries_prefer_another_node_and_blocklists_hold() {
        let job = JobId::new();
        let mut t = task(1, job, 0, 1, 0);
        t.failed_on = vec![NodeId::new("a")];
        assert_eq!(
            pairs(assign(
                &[t.clone()],
                &[node("a", 2), node("b", 1)],
                3,
                TARGET_TASK_MS
            )),
            vec![(1, "b".to_string())]
        );
        // With only the node it failed on, the retry still runs there...
        assert_eq!(
            pairs(assign(&[t.clone()], &[node("a", 1)], 1, TARGET_TASK_MS)),
            vec![(1, "a".to_string())]
        );
        // ...unless that node is blocklisted for the job.
        let mut blocked = node("a", 1);
        blocked.blocked_jobs.insert(job);
        assert!(assign(&[t], &[blocked], 1, TARGET_TASK_MS).is_empty());
    }

    #[test]
    fn work_spreads_over_nodes_with_most_free_slots() {
        let job = JobId::new();
        let tasks: Vec<_> = (0..2).map(|i| task(i, job, 0, 1, i as u32)).collect();
        let got = pairs(assign(
            &tasks,
            &[node("a", 1), node("b", 1)],
            2,
            TARGET_TASK_MS,
        ));
        assert_eq!(got, vec![(0, "a".to_string()), (1, "b".to_string())]);
    }

    /// The frames of each piece placed (`None`: the whole task).
    fn pieces(got: &[Assignment]) -> Vec<Option<u64>> {
        got.iter().map(|a| a.frames).collect()
    }

    #[test]
    fn a_splittable_task_is_cut_one_piece_per_free_slot() {
        let job = JobId::new();
        let mut t = task(1, job, 0, 1, 0);
        t.splittable = true;
        t.frames = 100;
        // Frame time unknown: an even share over the farm's slots, every piece alike,
        // and the last takes what is left.
        let got = assign(
            &[t.clone()],
            &[node("a", 1), node("b", 2)],
            3,
            TARGET_TASK_MS,
        );
        assert!(got.iter().all(|a| a.task == TaskId(1)));
        assert_eq!(pieces(&got), [Some(34), Some(34), None]);
        // Known: an even share over the farm's 4 slots, at most a target task's worth
        // (30 frames of a second).
        t.frame_ms = Some(1000.0);
        let got = assign(&[t.clone()], &[node("a", 2)], 4, TARGET_TASK_MS);
        assert_eq!(pieces(&got), [Some(25), Some(25)]);
        t.frame_ms = Some(100.0);
        t.frames = 100_000;
        let got = assign(&[t.clone()], &[node("a", 2)], 4, TARGET_TASK_MS);
        assert_eq!(pieces(&got), [Some(300), Some(300)]);
        // The last piece takes what is left (no cut).
        t.frame_ms = Some(1000.0);
        t.frames = 3;
        let got = assign(&[t], &[node("a", 5)], 5, TARGET_TASK_MS);
        assert_eq!(pieces(&got), [Some(1), Some(1), None]);
    }

    #[test]
    fn the_longest_unstarted_tails_go_to_idle_slots() {
        let at = |task, current, to| RenderAtWork {
            task: TaskId(task),
            current,
            to,
            frame_ms: None,
        };
        let renders = [at(1, 3, 10), at(2, 9, 10), at(3, 1, 20), at(4, 5, 5)];
        assert_eq!(pick_tails(&renders, &[None]), [(TaskId(3), 1)]);
        assert_eq!(
            pick_tails(&renders, &[None; 5]),
            [(TaskId(3), 1), (TaskId(1), 3)]
        );
        assert!(pick_tails(&renders, &[]).is_empty());
    }

    fn measured(task: i64, current: i64, to: i64, frame_ms: f64) -> RenderAtWork {
        RenderAtWork {
            task: TaskId(task),
            current,
            to,
            frame_ms: Some(frame_ms),
        }
    }

    #[test]
    fn a_tail_is_shared_with_an_idle_slot_in_proportion_to_speed() {
        // 100 frames left at 100 ms, an idle slot four times as fast: together they
        // render them in 2 s, so the render keeps 20 frames and the slot gets 80.
        let slow = [measured(1, 1, 100, 100.0)];
        assert_eq!(pick_tails(&slow, &[Some(25.0)]), [(TaskId(1), 20)]);
        // An idle slot as slow as the render: half each.
        assert_eq!(pick_tails(&slow, &[Some(100.0)]), [(TaskId(1), 50)]);
        // A slot not measured counts at the renders' mean speed.
        assert_eq!(pick_tails(&slow, &[None]), [(TaskId(1), 50)]);
        // One render per idle slot: the one whose tail takes longest beyond the balanced
        // end of 1.78 s (render 2: 42 frames of 100 ms beyond it, against render 1's 28
        // of 25 ms); with two idle slots, both.
        let two = [measured(1, 1, 100, 25.0), measured(2, 1, 60, 100.0)];
        assert_eq!(pick_tails(&two, &[Some(25.0)]), [(TaskId(2), 18)]);
        assert_eq!(pick_tails(&two, &[Some(25.0); 2]).len(), 2);
        // Renders that end together have nothing worth giving.
        let even = [measured(1, 9, 10, 100.0), measured(2, 9, 10, 100.0)];
        assert!(pick_tails(&even, &[Some(100.0)]).is_empty());
    }

    #[test]
    fn a_piece_is_sized_to_the_node_that_takes_it() {
        // Twice the average speed: twice the even share; half: half.
        assert_eq!(node_chunk(1000, 10, 100.0, 50.0, TARGET_TASK_MS), 200);
        assert_eq!(node_chunk(1000, 10, 100.0, 200.0, TARGET_TASK_MS), 50);
        // Still no more than the target length, and no less than a second, at its speed.
        assert_eq!(node_chunk(100_000, 10, 100.0, 50.0, TARGET_TASK_MS), 600);
        assert_eq!(node_chunk(10, 10, 100.0, 50.0, TARGET_TASK_MS), 10);
        let job = JobId::new();
        let mut t = task(1, job, 0, 1, 0);
        t.splittable = true;
        t.frames = 1000;
        t.frame_ms = Some(100.0);
        let mut fast = node("fast", 1);
        fast.frame_ms.insert(job, 50.0);
        let mut slow = node("slow", 1);
        slow.frame_ms.insert(job, 200.0);
        let got = assign(&[t], &[fast, slow], 10, TARGET_TASK_MS);
        assert_eq!(pieces(&got), [Some(200), Some(50)]);
    }

    #[test]
    fn a_piece_leaves_no_crumb_behind() {
        // A 57-frame tail for a node of 25 ms frames: a piece would be 40 frames (a
        // second's least), leaving 17 for another node to start on; it takes all 57.
        let job = JobId::new();
        let mut t = task(1, job, 0, 1, 0);
        t.splittable = true;
        t.frames = 57;
        t.frame_ms = Some(100.0);
        let mut fast = node("fast", 2);
        fast.frame_ms.insert(job, 25.0);
        assert_eq!(
            pieces(&assign(&[t.clone()], &[fast.clone()], 1000, TARGET_TASK_MS)),
            [None]
        );
        // 100 frames: pieces of 40 while what they leave is at least half a piece.
        t.frames = 100;
        fast.free = 3;
        assert_eq!(
            pieces(&assign(&[t.clone()], &[fast.clone()], 1000, TARGET_TASK_MS)),
            [Some(40), Some(40), None]
        );
        // Never longer than the task length: with 1 s tasks (40 frames), the 17 left of
        // 57 are a piece of their own rather than a task the length would cut again.
        t.frames = 57;
        assert_eq!(
            pieces(&assign(&[t.clone()], &[fast.clone()], 1000, 1_000.0)),
            [Some(40), None]
        );
        // Nor longer than a first share may be (a node's `--max-frames`).
        t.frame_ms = None;
        t.frames = 1_400;
        assert_eq!(
            pieces(&assign(&[t], &[fast], 1, TARGET_TASK_MS)),
            [Some(1_000), None]
        );
    }

    #[test]
    fn no_node_gets_more_frames_than_its_max_frames() {
        // A task the submitter sized at 10 frames, and nodes that render at most 4 and 3
        // frames a task: each gets what it takes, and the rest waits for the next slot.
        let job = JobId::new();
        let mut t = task(1, job, 0, 1, 0);
        t.frames = 10;
        let mut small = node("small", 1);
        small.max_frames = Some(4);
        let mut smaller = node("smaller", 1);
        smaller.max_frames = Some(3);
        let got = assign(
            &[t.clone()],
            &[small.clone(), smaller.clone()],
            2,
            TARGET_TASK_MS,
        );
        assert_eq!(pieces(&got), [Some(4), Some(3)]);
        // A task the farm sizes: an even share would be 5 a slot.
        t.splittable = true;
        let got = assign(
            &[t.clone()],
            &[small.clone(), smaller.clone()],
            2,
            TARGET_TASK_MS,
        );
        assert_eq!(pieces(&got), [Some(4), Some(3)]);
        // The crumb rule does not pass the limit either: 5 frames left, 3 at most.
        t.frames = 5;
        let got = assign(&[t.clone()], &[smaller.clone()], 1, TARGET_TASK_MS);
        assert_eq!(pieces(&got), [Some(3)]);
        // A task within the limit goes whole; a node with no limit takes it all.
        t.frames = 3;
        assert_eq!(
            pieces(&assign(&[t.clone()], &[smaller], 1, TARGET_TASK_MS)),
            [None]
        );
        t.frames = 10;
        t.splittable = false;
        assert_eq!(
            pieces(&assign(&[t], &[node("any", 1)], 1, TARGET_TASK_MS)),
            [None]
        );
    }

    #[test]
    fn auto_chunks_aim_at_a_target_and_shrink_toward_the_end() {
        // Frame time unknown: an even share of what remains (the renders measure it).
        assert_eq!(auto_chunk(1000, 10, None, TARGET_TASK_MS), 100);
        assert_eq!(auto_chunk(1005, 10, None, TARGET_TASK_MS), 101);
        assert_eq!(auto_chunk(3, 10, None, TARGET_TASK_MS), 1);
        // ... but no more than a node takes: 100,000 frames over two slots is 1,000 each.
        assert_eq!(auto_chunk(100_000, 2, None, TARGET_TASK_MS), 1_000);
        // 30 s of 100 ms frames is 300 frames, but a tenth of 1000 is 100.
        assert_eq!(auto_chunk(1000, 10, Some(100.0), TARGET_TASK_MS), 100);
        assert_eq!(auto_chunk(100_000, 10, Some(100.0), TARGET_TASK_MS), 300);
        // Slow frames: at least one each.
        assert_eq!(auto_chunk(1000, 10, Some(600_000.0), TARGET_TASK_MS), 1);
        // Toward the end, pieces shrink to a frame...
        assert_eq!(auto_chunk(15, 10, Some(1000.0), TARGET_TASK_MS), 2);
        assert_eq!(auto_chunk(3, 10, Some(1000.0), TARGET_TASK_MS), 1);
        // ... but not below a second of rendering (ten 100 ms frames), unless that is all
        // there is left.
        assert_eq!(auto_chunk(15, 10, Some(100.0), TARGET_TASK_MS), 10);
        assert_eq!(auto_chunk(3, 10, Some(100.0), TARGET_TASK_MS), 3);
    }

    #[test]
    fn renders_longer_than_the_target_give_back_what_lies_beyond_it() {
        let at = |task, current, to, frame_ms| RenderAtWork {
            task: TaskId(task),
            current,
            to,
            frame_ms,
        };
        let renders = [
            // 1 s frames: 30 frames (11..=40) are kept, 41..=100 go back.
            at(1, 11, 100, Some(1000.0)),
            // 100 ms frames: 300 frames ahead fit, only 100 are left.
            at(2, 1, 100, Some(100.0)),
            // Not measured yet, or not sized by the farm: kept whole.
            at(3, 1, 10_000, None),
            // Ten-minute frames: only the frame being rendered is kept.
            at(4, 5, 9, Some(600_000.0)),
            // One frame beyond the target is not worth a task of its own.
            at(5, 1, 31, Some(1000.0)),
        ];
        assert_eq!(
            pick_overlong(&renders, TARGET_TASK_MS),
            [(TaskId(1), 40), (TaskId(4), 5)]
        );
    }
}
