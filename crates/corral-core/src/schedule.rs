//! The scheduling policy: which queued task goes to which node slot. Pure: the
//! orchestrator reads the queue and the nodes from its database, asks [`assign`], and
//! carries the answer out.
//!
//! Dispatch is dynamic: a task goes to a node only when the node has a free slot, so a
//! node that finishes sooner asks for (gets) more work, and a node that joins gets work on
//! the next round.

use crate::ids::{NodeId, TaskId};
use crate::job::JobId;
use std::collections::HashSet;

/// A task waiting for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// A node that can take work now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSlots {
    pub node_id: NodeId,
    pub free: usize,
    /// Jobs this node failed too often for; it gets none of their tasks.
    pub blocked_jobs: HashSet<JobId>,
}

/// Pairs queued tasks with free node slots: tasks in order of job priority (highest
/// first), then job submission, then position in the job; each to an allowed node with a
/// free slot, preferring one the task has not failed on, then the one with most free
/// slots (spreading work), then the first listed.
pub fn assign(tasks: &[QueuedTask], nodes: &[NodeSlots]) -> Vec<(TaskId, NodeId)> {
    let mut order: Vec<&QueuedTask> = tasks.iter().collect();
    order.sort_by_key(|t| (std::cmp::Reverse(t.priority), t.job_seq, t.index));
    let mut free: Vec<usize> = nodes.iter().map(|n| n.free).collect();
    let mut out = Vec::new();
    for task in order {
        if free.iter().all(|&f| f == 0) {
            break;
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
        if let Some((i, node)) = best {
            free[i] -= 1;
            out.push((task.task_id, node.node_id.clone()));
        }
    }
    out
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
        }
    }

    fn node(id: &str, free: usize) -> NodeSlots {
        NodeSlots {
            node_id: NodeId::new(id),
            free,
            blocked_jobs: HashSet::new(),
        }
    }

    #[test]
    fn only_free_slots_get_work() {
        let job = JobId::new();
        let tasks: Vec<_> = (0..5).map(|i| task(i, job, 0, 1, i as u32)).collect();
        let got = assign(&tasks, &[node("a", 1), node("b", 0), node("c", 2)]);
        assert_eq!(got.len(), 3);
        assert_eq!(got.iter().filter(|(_, n)| n.as_str() == "a").count(), 1);
        assert_eq!(got.iter().filter(|(_, n)| n.as_str() == "c").count(), 2);
        assert!(assign(&tasks, &[node("a", 0)]).is_empty());
        assert!(assign(&[], &[node("a", 3)]).is_empty());
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
        let got: Vec<i64> = assign(&tasks, &[node("a", 3)])
            .into_iter()
            .map(|(t, _)| t.0)
            .collect();
        assert_eq!(got, vec![4, 2, 1]);
    }

    #[test]
    fn retries_prefer_another_node_and_blocklists_hold() {
        let job = JobId::new();
        let mut t = task(1, job, 0, 1, 0);
        t.failed_on = vec![NodeId::new("a")];
        assert_eq!(
            assign(&[t.clone()], &[node("a", 2), node("b", 1)]),
            vec![(TaskId(1), NodeId::new("b"))]
        );
        // With only the node it failed on, the retry still runs there...
        assert_eq!(
            assign(&[t.clone()], &[node("a", 1)]),
            vec![(TaskId(1), NodeId::new("a"))]
        );
        // ...unless that node is blocklisted for the job.
        let mut blocked = node("a", 1);
        blocked.blocked_jobs.insert(job);
        assert!(assign(&[t], &[blocked]).is_empty());
    }

    #[test]
    fn work_spreads_over_nodes_with_most_free_slots() {
        let job = JobId::new();
        let tasks: Vec<_> = (0..2).map(|i| task(i, job, 0, 1, i as u32)).collect();
        let got = assign(&tasks, &[node("a", 1), node("b", 1)]);
        assert_eq!(
            got,
            vec![(TaskId(0), NodeId::new("a")), (TaskId(1), NodeId::new("b"))]
        );
    }
}
