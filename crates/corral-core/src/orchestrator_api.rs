//! The orchestrator's HTTP API types: the tutorial's `/render` and `/status`, and the
//! native `/api/v1` jobs, tasks, frames, nodes and events.

use crate::chunk::MAX_CHUNK_SIZE;
use crate::frames::FrameRange;
use crate::ids::{NodeId, TaskId};
use crate::job::JobId;
use crate::manifest::BlobHash;
use crate::render::{Engine, ImageFormat};
use crate::validate::{output_pattern, parse_json_object, render_fields, FieldError, RenderFields};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /render`, the tutorial's body.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    #[schema(value_type = i64, required = true, nullable = false, minimum = 0, maximum = 1048574)]
    pub from: Option<i64>,
    #[schema(value_type = i64, required = true, nullable = false, minimum = 0, maximum = 1048574)]
    pub to: Option<i64>,
}

/// `POST /render`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderAccepted {
    #[schema(value_type = String)]
    pub job_id: JobId,
}

/// `GET /status/{jobId}`'s body (the tutorial's API, with more to say).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderStatus {
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// `Job still running`, `Job completed`, `Job failed` or `Job cancelled`.
    pub status: String,
    pub state: JobState,
    pub frames_done: u64,
    pub frames_total: u64,
    /// Frames of the tasks that failed for good (not those cancelled), as runs.
    pub failed_frames: Vec<FrameSpan>,
    pub failure: Option<String>,
}

/// A run of frames, `from` to `to` inclusive: frame lists are sent as runs, so a list's
/// size follows its gaps, not its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FrameSpan {
    pub from: i64,
    pub to: i64,
}

impl FrameSpan {
    /// Sorted frames as runs (`[1, 2, 3, 7]` is `1-3, 7-7`).
    pub fn runs(frames: impl IntoIterator<Item = i64>) -> Vec<FrameSpan> {
        let mut spans: Vec<FrameSpan> = Vec::new();
        for frame in frames {
            match spans.last_mut() {
                Some(last) if frame == last.to + 1 => last.to = frame,
                Some(last) if frame <= last.to => {}
                _ => spans.push(FrameSpan {
                    from: frame,
                    to: frame,
                }),
            }
        }
        spans
    }

    pub fn len(&self) -> u64 {
        (self.to - self.from + 1).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.to < self.from
    }
}

/// Where a farm job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn status_text(self) -> &'static str {
        match self {
            JobState::Queued | JobState::Running | JobState::Paused => "Job still running",
            JobState::Completed => "Job completed",
            JobState::Failed => "Job failed",
            JobState::Cancelled => "Job cancelled",
        }
    }
}

/// Where one task (a chunk of frames) is in its life, as the API names it (the lifecycle's
/// [`crate::lifecycle::TaskState`] carries each state's data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TaskState)]
pub enum TaskStateKind {
    /// Waiting for a node slot (again, after a failed attempt or a lost node).
    Queued,
    /// Leased to a node.
    Running,
    Completed,
    /// Out of attempts.
    Failed,
    Cancelled,
}

impl TaskStateKind {
    pub const ALL: [TaskStateKind; 5] = [
        TaskStateKind::Queued,
        TaskStateKind::Running,
        TaskStateKind::Completed,
        TaskStateKind::Failed,
        TaskStateKind::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStateKind::Queued => "queued",
            TaskStateKind::Running => "running",
            TaskStateKind::Completed => "completed",
            TaskStateKind::Failed => "failed",
            TaskStateKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStateKind> {
        TaskStateKind::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// `POST /api/v1/jobs`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Scene path relative to the nodes' `--scenes` folder; the nodes' `--blend` if absent.
    #[schema(max_length = 1024, nullable = false)]
    pub scene: Option<String>,
    #[schema(value_type = i64, required = true, nullable = false, minimum = 0, maximum = 1048574)]
    pub from: Option<i64>,
    #[schema(value_type = i64, required = true, nullable = false, minimum = 0, maximum = 1048574)]
    pub to: Option<i64>,
    /// Frames per task. Without it (and without an orchestrator `--batch-size`), the farm
    /// sizes tasks from the frame time it measures, smaller toward the end.
    #[schema(minimum = 1, maximum = 100000, nullable = false)]
    pub chunk_size: Option<u64>,
    /// Render the first, middle and last frames before the rest, so problems show early.
    #[schema(nullable = false)]
    pub preview_first: Option<bool>,
    /// Higher runs first (default 0).
    #[schema(minimum = -1000, maximum = 1000, nullable = false)]
    pub priority: Option<i64>,
    /// `CYCLES`, `BLENDER_EEVEE` or `BLENDER_WORKBENCH`.
    #[schema(nullable = false)]
    pub engine: Option<String>,
    /// Blender's image format (`PNG`, `JPEG`, `OPEN_EXR`, ...); the scene's if absent.
    #[schema(nullable = false)]
    pub format: Option<String>,
    /// Output pattern relative to the nodes' output folder; default `{job id}/frame_####`.
    #[schema(max_length = 900, nullable = false)]
    pub output: Option<String>,
    /// The scene's frame rate, for the job's preview video (default 24).
    #[schema(minimum = 1, maximum = 240, nullable = false)]
    pub fps: Option<f64>,
    /// The scene as an uploaded manifest's id (`POST /api/v1/manifests`), instead of
    /// `scene`: nodes fetch its files from the orchestrator and upload their frames to it.
    pub manifest: Option<String>,
}

/// Frame rates a preview video may play at.
pub const FPS_RANGE: std::ops::RangeInclusive<f64> = 1.0..=240.0;

impl SubmitJob {
    /// The frame rate a submission body names, checked; `None` when it names none. Bodies
    /// are validated for everything else by [`JobSubmission::from_body`].
    pub fn fps_from_body(body: &[u8]) -> Result<Option<f64>, FieldError> {
        let req: SubmitJob = parse_json_object(body)?;
        match req.fps {
            Some(fps) if !FPS_RANGE.contains(&fps) => Err(FieldError::new(
                "fps",
                format!(
                    "must be between {} and {} frames per second",
                    FPS_RANGE.start(),
                    FPS_RANGE.end()
                ),
            )),
            fps => Ok(fps),
        }
    }
}

/// A validated submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSubmission {
    pub scene: Option<String>,
    /// The uploaded workspace to render (never with `scene`).
    pub manifest: Option<BlobHash>,
    pub range: FrameRange,
    /// Frames per task; `None`: sized by the farm as it goes.
    pub chunk_size: Option<u64>,
    pub preview_first: bool,
    pub priority: i64,
    pub engine: Engine,
    pub format: Option<ImageFormat>,
    pub output: Option<String>,
}

/// Limits the orchestrator applies to submissions.
#[derive(Debug, Clone, Copy)]
pub struct SubmitLimits {
    pub max_frames: u64,
    /// The orchestrator's `--batch-size`; `None`: tasks are sized by the farm.
    pub default_chunk_size: Option<u64>,
}

impl JobSubmission {
    pub fn from_render_body(body: &[u8], limits: SubmitLimits) -> Result<Self, FieldError> {
        let req: RenderRequest = parse_json_object(body)?;
        Self::validate(
            SubmitJob {
                from: req.from,
                to: req.to,
                ..SubmitJob::default()
            },
            limits,
        )
    }

    pub fn from_body(body: &[u8], limits: SubmitLimits) -> Result<Self, FieldError> {
        Self::validate(parse_json_object(body)?, limits)
    }

    pub fn validate(req: SubmitJob, limits: SubmitLimits) -> Result<Self, FieldError> {
        let RenderFields {
            range,
            engine,
            format,
        } = render_fields(
            req.from,
            req.to,
            limits.max_frames,
            req.scene.as_deref(),
            req.engine.as_deref(),
            req.format.as_deref(),
        )?;
        let chunk_size = req.chunk_size.or(limits.default_chunk_size);
        if chunk_size.is_some_and(|c| !(1..=MAX_CHUNK_SIZE).contains(&c)) {
            return Err(FieldError::new(
                "chunk_size",
                format!("must be between 1 and {MAX_CHUNK_SIZE}"),
            ));
        }
        if let Some(output) = &req.output {
            output_pattern("output", output)?;
        }
        let priority = priority(req.priority.unwrap_or(0))?;
        let manifest = req
            .manifest
            .as_deref()
            .map(|m| BlobHash::parse("manifest", m))
            .transpose()?;
        if manifest.is_some() && req.scene.is_some() {
            return Err(FieldError::new(
                "manifest",
                "a job names its scene by `scene` or by `manifest`, not both",
            ));
        }
        Ok(JobSubmission {
            scene: req.scene,
            manifest,
            range,
            chunk_size,
            preview_first: req.preview_first.unwrap_or(false),
            priority,
            engine,
            format,
            output: req.output,
        })
    }
}

/// Job priorities run from -1000 to 1000; higher runs first.
fn priority(p: i64) -> Result<i64, FieldError> {
    if !(-1000..=1000).contains(&p) {
        return Err(FieldError::new(
            "priority",
            "must be between -1000 and 1000",
        ));
    }
    Ok(p)
}

/// `POST /api/v1/jobs/{id}/priority`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPriority {
    /// Higher runs first, -1000 to 1000.
    #[schema(value_type = i64, required = true, nullable = false, minimum = -1000, maximum = 1000)]
    pub priority: Option<i64>,
}

impl SetPriority {
    /// The validated priority of a `POST .../priority` body.
    pub fn from_body(body: &[u8]) -> Result<i64, FieldError> {
        let req: SetPriority = parse_json_object(body)?;
        priority(
            req.priority
                .ok_or_else(|| FieldError::new("priority", "required"))?,
        )
    }
}

/// A job as the native API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    #[schema(value_type = String)]
    pub id: JobId,
    pub state: JobState,
    pub status: String,
    pub scene: Option<String>,
    /// The uploaded workspace it renders, when it names one instead of `scene`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    pub from: i64,
    pub to: i64,
    /// Frames per task; `null` when the farm sizes tasks as it goes.
    pub chunk_size: Option<u64>,
    pub priority: i64,
    #[schema(value_type = String)]
    pub engine: Engine,
    #[schema(value_type = Option<String>)]
    pub format: Option<ImageFormat>,
    pub output: String,
    pub frames_total: u64,
    pub frames_done: u64,
    pub tasks_total: u64,
    pub tasks_done: u64,
    pub tasks_running: u64,
    pub tasks_failed: u64,
    pub failure: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds left at the rate frames have been arriving, while the job runs.
    pub eta_seconds: Option<u64>,
}

/// One task of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    #[schema(value_type = i64)]
    pub id: TaskId,
    pub index: u32,
    pub from: i64,
    pub to: i64,
    pub state: TaskStateKind,
    pub attempts: u32,
    /// Node running it (or that ran it last).
    #[schema(value_type = Option<String>)]
    pub node: Option<NodeId>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub failure: Option<String>,
    pub log_tail: Vec<String>,
}

/// One frame of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FrameView {
    pub frame: i64,
    /// `done` once a node reported it saved, else `pending`.
    pub state: String,
    #[schema(value_type = Option<String>)]
    pub node: Option<NodeId>,
    pub path: Option<String>,
}

/// Most tasks `GET /api/v1/jobs/{id}` includes; the rest are paged with
/// `GET /api/v1/jobs/{id}/tasks`.
pub const DETAIL_TASKS: u64 = 100;

/// `GET /api/v1/jobs/{id}`: the summary and the first [`DETAIL_TASKS`] tasks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobSummary,
    /// The job's first tasks, in order; `tasks_total` says how many there are.
    pub tasks: Vec<TaskView>,
}

/// `GET /api/v1/jobs/{id}/tasks`: a page of a job's tasks, in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// `GET /api/v1/jobs/{id}/frames`: a page of a job's frames, in order, from `from + offset`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FramePage {
    pub frames: Vec<FrameView>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// Page of jobs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// Node liveness as the orchestrator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Up,
    Down,
}

/// A render node known to the orchestrator.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    #[schema(value_type = String)]
    pub id: NodeId,
    pub url: String,
    pub state: NodeState,
    /// A draining node gets no new tasks; its running ones finish.
    pub draining: bool,
    pub slots: u64,
    #[schema(value_type = Vec<i64>)]
    pub running_tasks: Vec<TaskId>,
    pub hostname: Option<String>,
    pub blender_version: Option<String>,
    /// CPU cores and memory the node reported.
    pub cores: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// The most frames it renders in one task (its `--max-frames`): no piece it is given
    /// is longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frames: Option<u64>,
    /// Frames this node saved that the farm counted.
    pub frames_rendered: u64,
    pub last_seen: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
    /// Only in the answer to a node joining under a join token: the node's own credential
    /// (a `node` token) for its later calls. Shown once; the farm keeps only its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `POST /api/v1/nodes`: a node announcing itself (also its heartbeat).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// Where the orchestrator reaches the node, e.g. `http://10.0.0.5:3000`.
    #[schema(
        required = true,
        nullable = false,
        pattern = "^https?://",
        max_length = 261
    )]
    pub url: Option<String>,
    /// A secret the node made (32 random bytes, base64url): the orchestrator sends it as
    /// `Authorization: Bearer` on every call to the node, which answers no one else.
    #[schema(
        nullable = false,
        pattern = "^[A-Za-z0-9_-]{32,128}$",
        min_length = 32,
        max_length = 128
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// For an `https://` URL: the SHA-256 fingerprint of the certificate the node serves
    /// (64 hexadecimal characters). The orchestrator then accepts that certificate from
    /// the node and no other.
    #[schema(nullable = false, pattern = "^[0-9a-fA-F:]{64,95}$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Checks a node's secret: 32 to 128 characters of base64url.
pub fn validate_node_secret(field: &str, secret: &str) -> Result<String, FieldError> {
    let ok = (32..=128).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(secret.to_string())
    } else {
        Err(FieldError::new(
            field,
            "must be 32 to 128 characters of base64url (A-Z, a-z, 0-9, - and _)",
        ))
    }
}

/// Checks a node URL: `http(s)://host[:port]`, nothing after.
pub fn validate_node_url(field: &str, url: &str) -> Result<String, FieldError> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| FieldError::new(field, "must start with http:// or https://"))?;
    let valid = !rest.is_empty()
        && rest.len() <= 253
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c));
    if !valid {
        return Err(FieldError::new(
            field,
            "must be http(s)://host[:port] with no path",
        ));
    }
    Ok(trimmed.to_string())
}

/// One change, as sent on `GET /api/v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Job {
        #[schema(value_type = String)]
        id: JobId,
        state: JobState,
        frames_done: u64,
        frames_total: u64,
    },
    Task {
        #[schema(value_type = String)]
        job: JobId,
        #[schema(value_type = i64)]
        id: TaskId,
        state: TaskStateKind,
        #[schema(value_type = Option<String>)]
        node: Option<NodeId>,
    },
    Frame {
        #[schema(value_type = String)]
        job: JobId,
        frame: i64,
        #[schema(value_type = String)]
        node: NodeId,
        path: String,
    },
    Node {
        #[schema(value_type = String)]
        id: NodeId,
        url: String,
        state: NodeState,
        draining: bool,
    },
    /// The frame a running task's Blender is on and how many of its samples are done.
    /// Sent only to the subscribers of the orchestrator that follows the task and never
    /// stored: it changes several times a second and means nothing once the frame is saved.
    Progress {
        #[schema(value_type = String)]
        job: JobId,
        #[schema(value_type = i64)]
        task: TaskId,
        #[schema(value_type = String)]
        node: NodeId,
        frame: i64,
        sample_done: u32,
        sample_total: u32,
    },
    /// A job's preview video changed: being made, ready, or impossible (with why). Sent to
    /// the subscribers of the orchestrator that makes it.
    Preview {
        #[schema(value_type = String)]
        job: JobId,
        state: PreviewState,
        note: Option<String>,
    },
}

impl Event {
    /// The SSE event name it is sent under.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Job { .. } => "job",
            Event::Task { .. } => "task",
            Event::Frame { .. } => "frame",
            Event::Node { .. } => "node",
            Event::Progress { .. } => "progress",
            Event::Preview { .. } => "preview",
        }
    }
}

/// Where a job's preview video is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PreviewState {
    /// Not made (the job has not completed).
    None,
    /// FFmpeg is making it.
    Making,
    /// Ready at `GET /api/v1/jobs/{id}/preview.mp4`.
    Ready,
    /// Cannot be made; `note` says why (EXR frames, frames of different sizes, no FFmpeg).
    Unavailable,
}

/// `GET /api/v1/jobs/{id}/preview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PreviewView {
    pub state: PreviewState,
    /// Why it is unavailable, or what it is (frames, size, frame rate) once ready.
    pub note: Option<String>,
    /// Where the MP4 is, once ready.
    pub url: Option<String>,
    pub fps: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SubmitLimits = SubmitLimits {
        max_frames: 1000,
        default_chunk_size: Some(5),
    };

    #[test]
    fn frames_become_runs() {
        let spans = FrameSpan::runs([1, 2, 3, 7, 9, 10]);
        let pairs: Vec<_> = spans.iter().map(|s| (s.from, s.to)).collect();
        assert_eq!(pairs, [(1, 3), (7, 7), (9, 10)]);
        assert_eq!(spans[0].len(), 3);
        assert!(FrameSpan::runs([]).is_empty());
    }

    #[test]
    fn render_bodies_take_only_from_and_to() {
        let s = JobSubmission::from_render_body(br#"{"from":1,"to":20}"#, LIMITS).unwrap();
        assert_eq!((s.range.len(), s.chunk_size, s.priority), (20, Some(5), 0));
        let err = JobSubmission::from_render_body(br#"{"from":1,"to":2,"scene":"a"}"#, LIMITS)
            .unwrap_err();
        assert_eq!(err.field, "scene");
    }

    #[test]
    fn submissions_are_validated_field_by_field() {
        let cases = [
            (r#"{"to":2}"#, "from"),
            (r#"{"from":1,"to":2,"chunk_size":0}"#, "chunk_size"),
            (r#"{"from":1,"to":2,"chunk_size":-1}"#, "chunk_size"),
            (r#"{"from":1,"to":2,"priority":5000}"#, "priority"),
            (r#"{"from":1,"to":2,"priority":"high"}"#, "priority"),
            (r#"{"from":1,"to":2000}"#, "to"),
            (r#"{"from":1,"to":2,"scene":"../a.blend"}"#, "scene"),
            (r#"{"from":1,"to":2,"output":"/abs"}"#, "output"),
            (r#"{"from":1,"to":2,"output":"shots/"}"#, "output"),
            (r#"{"from":1,"to":2,"engine":"X"}"#, "engine"),
            (r#"{"from":1,"to":2,"manifest":"abc"}"#, "manifest"),
            (
                r#"{"from":1,"to":2,"scene":"a.blend","manifest":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
                "manifest",
            ),
        ];
        for (body, field) in cases {
            let err = JobSubmission::from_body(body.as_bytes(), LIMITS).unwrap_err();
            assert_eq!(err.field, field, "{body}");
        }
    }

    #[test]
    fn frame_rates_are_checked() {
        let fps = |body: &str| SubmitJob::fps_from_body(body.as_bytes());
        assert_eq!(fps(r#"{"from":1,"to":2}"#).unwrap(), None);
        assert_eq!(
            fps(r#"{"from":1,"to":2,"fps":23.976}"#).unwrap(),
            Some(23.976)
        );
        for bad in [r#"{"fps":0}"#, r#"{"fps":1000}"#, r#"{"fps":"24"}"#] {
            assert_eq!(fps(bad).unwrap_err().field, "fps", "{bad}");
        }
        // The rest of the body is checked as before, ignoring the frame rate.
        let s = JobSubmission::from_body(br#"{"from":1,"to":2,"fps":30}"#, LIMITS).unwrap();
        assert_eq!(s.range.len(), 2);
    }

    #[test]
    fn node_urls() {
        assert_eq!(
            validate_node_url("url", "http://node-1:3000/").unwrap(),
            "http://node-1:3000"
        );
        assert!(validate_node_url("url", "http://[::1]:3000").is_ok());
        assert!(validate_node_url("url", "ftp://x").is_err());
        assert!(validate_node_url("url", "http://x/path").is_err());
        assert!(validate_node_url("url", "http://").is_err());
        assert!(validate_node_url("url", "http://a b").is_err());
    }
}
