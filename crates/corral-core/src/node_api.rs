//! The render node's HTTP API types: the `POST /job` request (and its validation), the job
//! view that `GET /job/{id}` returns, and `GET /info`.

use crate::frames::{FrameRange, MAX_FRAME, MIN_FRAME};
use crate::job::{JobId, JobState};
use crate::manifest::BlobHash;
use crate::render::{Engine, ImageFormat};
use crate::validate::{output_pattern, parse_json_object, render_fields, FieldError, RenderFields};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Blender's `-t` accepts at most this many threads (`BLENDER_MAX_THREADS`).
pub const MAX_THREADS: u32 = 1024;

/// The default output pattern, relative to the node's output folder (the tutorial's).
pub const DEFAULT_OUTPUT_PATTERN: &str = "blender-render_####";

/// `POST /job` as it arrives. Every field is optional here so that a missing one is
/// reported by name with the same wording as a wrong one.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// Scene path relative to the node's `--scenes` folder; the node's `--blend` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Blender's `-t`: render threads, 0 for all cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Output pattern relative to the node's output folder, e.g. `shot1/frame_####`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// A label the client gives the render and finds again in `GET /jobs` (the
    /// orchestrator names the task and lease it dispatched, so a render it lost track of
    /// is recognised, never guessed at). Up to 128 of `A-Z a-z 0-9 : _ . -`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The scene as a manifest on the orchestrator (`GET /api/v1/manifests/{id}`), instead
    /// of `scene`: the node fetches its blobs and renders the manifest's root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Where frames go: `local` (the default: the node's `--output`) or `upload` (each
    /// frame is uploaded to the orchestrator, `PUT /api/v1/jobs/{job}/frames/{n}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver: Option<String>,
    /// The orchestrator's job this render is part of: where uploaded frames go (required
    /// with `deliver: upload`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// Where a render's frames go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Written to the node's `--output` folder (a folder the farm may share).
    #[default]
    Local,
    /// Uploaded to the orchestrator, frame by frame, as Blender saves them.
    Upload,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Local => "local",
            Delivery::Upload => "upload",
        }
    }
}

/// Longest render tag accepted.
pub const MAX_TAG_BYTES: usize = 128;

/// A validated job request: every value is within bounds and typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub range: FrameRange,
    pub scene: Option<String>,
    pub engine: Engine,
    pub format: Option<ImageFormat>,
    pub threads: Option<u32>,
    pub output: String,
    pub tag: Option<String>,
    /// The scene as a manifest to fetch from the orchestrator (never with `scene`).
    pub manifest: Option<BlobHash>,
    pub deliver: Delivery,
    /// The orchestrator's job (always there when `deliver` is [`Delivery::Upload`]).
    pub job: Option<JobId>,
}

impl JobSpec {
    /// Parses and validates a `POST /job` body. `max_frames` bounds the range's length.
    pub fn from_body(body: &[u8], max_frames: u64) -> Result<JobSpec, FieldError> {
        let req: JobRequest = parse_json_object(body)?;
        JobSpec::validate(req, max_frames)
    }

    pub fn validate(req: JobRequest, max_frames: u64) -> Result<JobSpec, FieldError> {
        let RenderFields {
            range,
            engine,
            format,
        } = render_fields(
            req.from,
            req.to,
            max_frames,
            req.scene.as_deref(),
            req.engine.as_deref(),
            req.format.as_deref(),
        )?;
        if let Some(t) = req.threads {
            if t > MAX_THREADS {
                return Err(FieldError::new(
                    "threads",
                    format!("at most {MAX_THREADS} (0 means all cores)"),
                ));
            }
        }
        let output = req.output.unwrap_or_else(|| DEFAULT_OUTPUT_PATTERN.into());
        output_pattern("output", &output)?;
        if let Some(tag) = &req.tag {
            let valid = !tag.is_empty()
                && tag.len() <= MAX_TAG_BYTES
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":_.-".contains(c));
            if !valid {
                return Err(FieldError::new(
                    "tag",
                    format!("must be 1 to {MAX_TAG_BYTES} of A-Z a-z 0-9 : _ . -"),
                ));
            }
        }
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
        let deliver = match req.deliver.as_deref() {
            None | Some("local") => Delivery::Local,
            Some("upload") => Delivery::Upload,
            Some(_) => {
                return Err(FieldError::new(
                    "deliver",
                    "must be `local` (frames in --output) or `upload` (to the orchestrator)",
                ))
            }
        };
        let job = req
            .job
            .as_deref()
            .map(|j| {
                j.parse::<JobId>().map_err(|_| {
                    FieldError::new("job", "must be the orchestrator's job id (a UUID)")
                })
            })
            .transpose()?;
        if deliver == Delivery::Upload && job.is_none() {
            return Err(FieldError::new(
                "job",
                "required with `deliver: upload`: frames are uploaded under their job",
            ));
        }
        Ok(JobSpec {
            range,
            scene: req.scene,
            engine,
            format,
            threads: req.threads,
            output,
            tag: req.tag,
            manifest,
            deliver,
            job,
        })
    }
}

/// Cycles or EEVEE sample progress of the frame being rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleProgress {
    pub done: u32,
    pub total: u32,
}

/// One frame written by Blender, moved to its final name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameOutput {
    pub frame: i64,
    pub path: String,
}

/// What `GET /job/{id}` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    /// The tutorial-compatible handle: a small number that `GET /job/{pid}` also accepts.
    /// It is not an operating-system process id (see `blender_pid` for that).
    pub pid: u64,
    pub state: JobState,
    /// `"Job still running"`, `"Job completed"`, `"Job failed"` or `"Job cancelled"`.
    pub status: String,
    pub from: i64,
    pub to: i64,
    pub scene: String,
    pub engine: Engine,
    pub format: Option<ImageFormat>,
    pub threads: u32,
    pub frames_total: u64,
    pub frames_done: u64,
    pub current_frame: Option<i64>,
    pub current_sample: Option<SampleProgress>,
    pub outputs: Vec<FrameOutput>,
    pub exit_code: Option<i32>,
    pub failure: Option<String>,
    pub log_tail: Vec<String>,
    /// Why the job's log file stopped being written (a full disk, ...); the render goes on.
    #[serde(default)]
    pub log_error: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub blender_pid: Option<u32>,
    /// Bumped on every change; pass it back as `?since=` with `?wait=` to long-poll.
    pub version: u64,
    /// The client's label for the render, as given in `POST /job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A Blender process a node keeps running between tasks (render mode `warm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Blender's process id.
    pub pid: u32,
    /// `idle` or `rendering`.
    pub state: String,
    /// Tasks and frames it rendered since it started.
    pub tasks: u64,
    pub frames: u64,
}

/// What `GET /info` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub hostname: String,
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub blender_version: String,
    pub corral_version: String,
    pub slots: usize,
    pub running: usize,
    pub queued: usize,
    pub engines: Vec<Engine>,
    pub formats: Vec<ImageFormat>,
    pub max_frames_per_job: u64,
    /// `warm` (a Blender per slot, kept running) or `cold` (a Blender per task).
    #[serde(default)]
    pub render_mode: String,
    /// The Blender processes kept running (warm mode).
    #[serde(default)]
    pub workers: Vec<WorkerInfo>,
}

/// `POST /job/{id}/truncate`: end the render after frame `to`, or after the frame it is
/// rendering, whichever comes later (tail stealing: the rest of the range goes to another
/// node).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncateRequest {
    /// The last frame wanted. Optional here so a missing one is named like a wrong one.
    pub to: Option<i64>,
}

impl TruncateRequest {
    /// Parses and checks a body: `to` is required and a frame Blender can render.
    pub fn from_body(body: &[u8]) -> Result<i64, FieldError> {
        let req: TruncateRequest = parse_json_object(body)?;
        let to = req
            .to
            .ok_or_else(|| FieldError::new("to", "required: the last frame to render"))?;
        if !(MIN_FRAME..=MAX_FRAME).contains(&to) {
            return Err(FieldError::new(
                "to",
                format!("must be a frame from {MIN_FRAME} to {MAX_FRAME}"),
            ));
        }
        Ok(to)
    }
}

/// The answer to `POST /job/{id}/truncate`: the render's last frame from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncateAnswer {
    pub to: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(body: &str) -> Result<JobSpec, FieldError> {
        JobSpec::from_body(body.as_bytes(), 1000)
    }

    #[test]
    fn the_tutorial_body_is_accepted_with_defaults() {
        let s = spec(r#"{"from": 1, "to": 20}"#).unwrap();
        assert_eq!((s.range.from(), s.range.to()), (1, 20));
        assert_eq!(s.engine, Engine::Cycles);
        assert_eq!(s.output, DEFAULT_OUTPUT_PATTERN);
        assert_eq!((s.scene, s.format, s.threads), (None, None, None));
        assert_eq!((s.manifest, s.deliver), (None, Delivery::Local));
    }

    #[test]
    fn manifests_and_delivery_are_parsed() {
        let m = "ab".repeat(32);
        let job = JobId::new();
        let s = spec(&format!(
            r#"{{"from":1,"to":2,"manifest":"{m}","deliver":"upload","tag":"corral:1:2","job":"{job}"}}"#
        ))
        .unwrap();
        assert_eq!(s.job, Some(job));
        assert_eq!(s.manifest.as_ref().map(BlobHash::as_str), Some(m.as_str()));
        assert_eq!(s.deliver, Delivery::Upload);
        assert_eq!(s.scene, None);
        // The orchestrator's request serialises to what the node reads back.
        let req = JobRequest {
            from: Some(1),
            to: Some(2),
            manifest: Some(m.clone()),
            deliver: Some(Delivery::Upload.as_str().into()),
            job: Some(job.to_string()),
            ..JobRequest::default()
        };
        let again = JobSpec::from_body(&serde_json::to_vec(&req).unwrap(), 10).unwrap();
        assert_eq!(again.deliver, Delivery::Upload);
    }

    #[test]
    fn every_optional_field_is_parsed() {
        let s = spec(
            r#"{"from":3,"to":4,"scene":"a/b.blend","engine":"BLENDER_EEVEE","format":"JPEG","threads":2,"output":"shot/f_####"}"#,
        )
        .unwrap();
        assert_eq!(s.scene.as_deref(), Some("a/b.blend"));
        assert_eq!(s.engine, Engine::Eevee);
        assert_eq!(s.format, Some(ImageFormat::Jpeg));
        assert_eq!(s.threads, Some(2));
        assert_eq!(s.output, "shot/f_####");
    }

    #[test]
    fn truncations_name_a_frame() {
        assert_eq!(TruncateRequest::from_body(br#"{"to": 3}"#), Ok(3));
        for (body, field) in [
            (&br#"{}"#[..], "to"),
            (br#"{"to": -1}"#, "to"),
            (br#"{"to": 1048575}"#, "to"),
            (br#"{"to": "3"}"#, "to"),
            (br#"{"to": 3, "from": 1}"#, "from"),
            (br#"[3]"#, "body"),
        ] {
            let err = TruncateRequest::from_body(body).unwrap_err();
            assert_eq!(err.field, field, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let cases = [
            (r#"{"to": 2}"#, "from"),
            (r#"{"from": 1}"#, "to"),
            (r#"{"from": null, "to": 2}"#, "from"),
            (r#"{"from": "1; touch /tmp/x", "to": 2}"#, "from"),
            (r#"{"from": 1, "to": 2.5}"#, "to"),
            (r#"{"from": [1], "to": 2}"#, "from"),
            (r#"{"from": 5, "to": 2}"#, "to"),
            (r#"{"from": -2000000, "to": 2}"#, "from"),
            (r#"{"from": -3, "to": -1}"#, "from"),
            (r#"{"from": 1, "to": 5000}"#, "to"),
            (r#"{"from": 1, "to": 2, "scene": "../x.blend"}"#, "scene"),
            (r#"{"from": 1, "to": 2, "scene": "/etc/passwd"}"#, "scene"),
            (r#"{"from": 1, "to": 2, "engine": "LUXCORE"}"#, "engine"),
            (r#"{"from": 1, "to": 2, "format": "FFMPEG"}"#, "format"),
            (r#"{"from": 1, "to": 2, "threads": -1}"#, "threads"),
            (r#"{"from": 1, "to": 2, "threads": 5000}"#, "threads"),
            (r#"{"from": 1, "to": 2, "output": "../../etc/x"}"#, "output"),
            (r#"{"from": 1, "to": 2, "output": "dir/"}"#, "output"),
            (r#"{"from": 1, "to": 2, "form": 1}"#, "form"),
            (r#"{"from": 1, "to": 2, "manifest": "../x"}"#, "manifest"),
            (r#"{"from": 1, "to": 2, "manifest": 7}"#, "manifest"),
            (
                r#"{"from": 1, "to": 2, "scene": "a.blend", "manifest": "0000000000000000000000000000000000000000000000000000000000000000"}"#,
                "manifest",
            ),
            (r#"{"from": 1, "to": 2, "deliver": "ftp"}"#, "deliver"),
            (r#"{"from": 1, "to": 2, "deliver": "upload"}"#, "job"),
            (r#"{"from": 1, "to": 2, "job": "../x"}"#, "job"),
            (r#"[1, 2]"#, "body"),
            (r#"nonsense"#, "body"),
            (r#""#, "body"),
        ];
        for (body, field) in cases {
            let err = spec(body).expect_err(body);
            assert_eq!(err.field, field, "{body}: {err}");
        }
    }
}
