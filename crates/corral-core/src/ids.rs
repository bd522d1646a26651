//! Identities of the farm's things, as distinct types so that no two can be swapped: a
//! task's number, its lease (the fencing token of one assignment), a node, the id a node
//! gave a task's render, and an orchestrator process.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// A task (one chunk of a job's frames), numbered by the orchestrator's database.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct TaskId(pub i64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A task's fencing token. It moves on at every lease and every take-back, and every
/// write about a running task names the lease it was made under: a write under any other
/// lease is stale and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub i64);

impl LeaseId {
    pub fn next(self) -> LeaseId {
        LeaseId(self.0 + 1)
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A render node: `host:port` of the URL the orchestrator reaches it at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// The id of the node reached at `url` (`http://10.0.0.5:3000` is `10.0.0.5:3000`).
    pub fn from_url(url: &str) -> NodeId {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .unwrap_or(url);
        NodeId(rest.trim_end_matches('/').to_string())
    }

    /// A node id as stored or typed by a user; any text names at most one node.
    pub fn new(id: impl Into<String>) -> NodeId {
        NodeId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id a render node gave the render of one task (its `POST /job` answer's `id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeJobId(String);

impl NodeJobId {
    pub fn new(id: impl Into<String>) -> NodeJobId {
        NodeJobId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One orchestrator process sharing the farm's database with others; it owns (follows) the
/// tasks it dispatched or adopted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrchestratorId(String);

impl OrchestratorId {
    /// A fresh id for a process that is starting.
    pub fn generate() -> OrchestratorId {
        OrchestratorId(uuid::Uuid::now_v7().to_string())
    }

    pub fn new(id: impl Into<String>) -> OrchestratorId {
        OrchestratorId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrchestratorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The tag the orchestrator gives a render it dispatches: the task and the lease, so a
/// render found on a node is matched to its lease exactly (`corral:12:3`).
pub fn render_tag(task: TaskId, lease: LeaseId) -> String {
    format!("corral:{task}:{lease}")
}

/// The task and lease of a render tagged by [`render_tag`]; `None` for any other tag.
pub fn parse_render_tag(tag: &str) -> Option<(TaskId, LeaseId)> {
    let rest = tag.strip_prefix("corral:")?;
    let (task, lease) = rest.split_once(':')?;
    Some((TaskId(task.parse().ok()?), LeaseId(lease.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_tags_round_trip() {
        let tag = render_tag(TaskId(12), LeaseId(3));
        assert_eq!(tag, "corral:12:3");
        assert_eq!(parse_render_tag(&tag), Some((TaskId(12), LeaseId(3))));
        assert_eq!(parse_render_tag("corral:x:3"), None);
        assert_eq!(parse_render_tag("mine"), None);
    }

    #[test]
    fn node_ids_come_from_urls() {
        assert_eq!(
            NodeId::from_url("http://10.0.0.5:3000").as_str(),
            "10.0.0.5:3000"
        );
        assert_eq!(NodeId::from_url("https://n:1/").as_str(), "n:1");
        assert_eq!(LeaseId(4).next(), LeaseId(5));
    }
}
