//! Job identity and the job state machine shared by the node and (later) the orchestrator.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A job's identity: a UUIDv7, unique across node restarts and sortable by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(uuid::Uuid);

impl JobId {
    pub fn new() -> Self {
        JobId(uuid::Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(JobId)
    }
}

/// Where a job is in its life. `Queued -> Running -> {Completed, Failed, Cancelled}`, and
/// `Queued -> Cancelled`; the three end states are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    /// True once the job can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// The tutorial's status text; its orchestrator compares `status` to `"Job completed"`.
    pub fn status_text(self) -> &'static str {
        match self {
            JobState::Queued | JobState::Running => "Job still running",
            JobState::Completed => "Job completed",
            JobState::Failed => "Job failed",
            JobState::Cancelled => "Job cancelled",
        }
    }

    /// Whether moving from `self` to `next` is allowed.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Queued, Failed)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Cancelled)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        };
        f.write_str(s)
    }
}

/// How long a client should wait before asking again, in whole seconds (1..=30): the time
/// the remaining frames should take at the observed rate, so a client neither hammers a
/// long job nor sleeps through the end of a short one.
pub fn retry_after_secs(frames_left: u64, secs_per_frame: Option<f64>) -> u64 {
    let estimate = match secs_per_frame {
        Some(rate) if rate.is_finite() && rate > 0.0 => rate * frames_left as f64,
        _ => 1.0,
    };
    estimate.ceil().clamp(1.0, 30.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_cannot_change() {
        use JobState::*;
        for end in [Completed, Failed, Cancelled] {
            assert!(end.is_terminal());
            for next in [Queued, Running, Completed, Failed, Cancelled] {
                assert!(!end.can_become(next), "{end} -> {next}");
            }
        }
        assert!(Queued.can_become(Running));
        assert!(!Running.can_become(Queued));
        assert!(!Queued.can_become(Completed));
    }

    #[test]
    fn status_texts_match_the_tutorial() {
        assert_eq!(JobState::Completed.status_text(), "Job completed");
        assert_eq!(JobState::Running.status_text(), "Job still running");
        assert_eq!(JobState::Queued.status_text(), "Job still running");
        assert_eq!(JobState::Failed.status_text(), "Job failed");
    }

    #[test]
    fn retry_after_follows_the_rate_within_bounds() {
        assert_eq!(retry_after_secs(10, None), 1);
        assert_eq!(retry_after_secs(10, Some(0.5)), 5);
        assert_eq!(retry_after_secs(1000, Some(2.0)), 30);
        assert_eq!(retry_after_secs(0, Some(2.0)), 1);
        assert_eq!(retry_after_secs(3, Some(f64::NAN)), 1);
    }

    #[test]
    fn job_ids_parse_back() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().ok(), Some(id));
        assert!("42".parse::<JobId>().is_err());
    }
}
