//! Builds the API's views (job summaries and details, the tutorial's status, nodes) from
//! database rows.

use crate::store::{JobRow, NodeRow, Store, StoreError, TaskRow};
use chrono::Utc;
use corral_core::orchestrator_api::{
    FrameView, JobDetail, JobSummary, NodeView, RenderStatus, TaskView,
};
use std::collections::HashMap;

/// A job's summary, with frames done and an ETA from the rate frames have arrived.
pub async fn job_summary(store: &Store, job: &JobRow) -> Result<JobSummary, StoreError> {
    let (done, _first, last) = store.frame_progress(job.seq).await?;
    let tasks = store.tasks_of(job.seq).await?;
    summary(job, &tasks, done, last)
}

fn summary(
    job: &JobRow,
    tasks: &[TaskRow],
    frames_done: u64,
    last_frame_at: Option<chrono::DateTime<Utc>>,
) -> Result<JobSummary, StoreError> {
    let state = job.job_state()?;
    let frames_total = (job.frame_to - job.frame_from + 1) as u64;
    let eta_seconds = match (state.is_terminal(), job.started_at, last_frame_at) {
        (false, Some(start), Some(last)) if frames_done > 0 => {
            let elapsed = (last - start).num_milliseconds().max(1) as f64 / 1000.0;
            let per_frame = elapsed / frames_done as f64;
            Some((per_frame * frames_total.saturating_sub(frames_done) as f64).ceil() as u64)
        }
        _ => None,
    };
    Ok(JobSummary {
        id: job.job_id()?,
        state,
        status: state.status_text().to_string(),
        scene: job.scene.clone(),
        from: job.frame_from,
        to: job.frame_to,
        chunk_size: job.chunk_size as u64,
        priority: job.priority,
        engine: job.engine.parse().unwrap_or_default(),
        format: job.format.as_deref().and_then(|f| f.parse().ok()),
        output: job.output.clone(),
        frames_total,
        frames_done,
        tasks_total: tasks.len() as u64,
        tasks_done: tasks.iter().filter(|t| t.state == "completed").count() as u64,
        failure: job.failure.clone(),
        submitted_at: job.submitted_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
        eta_seconds,
    })
}

/// A job with every task and frame.
pub async fn job_detail(store: &Store, job: &JobRow) -> Result<JobDetail, StoreError> {
    let tasks = store.tasks_of(job.seq).await?;
    let frames = store.frames_of(job.seq).await?;
    let (done, _, last) = store.frame_progress(job.seq).await?;
    let summary = summary(job, &tasks, done, last)?;
    let done: HashMap<i64, _> = frames.iter().map(|f| (f.frame, f)).collect();
    let frames = (job.frame_from..=job.frame_to)
        .map(|frame| match done.get(&frame) {
            Some(f) => FrameView {
                frame,
                state: "done".into(),
                node: Some(f.node_id.clone()),
                path: Some(f.path.clone()),
            },
            None => FrameView {
                frame,
                state: "pending".into(),
                node: None,
                path: None,
            },
        })
        .collect();
    let tasks = tasks
        .iter()
        .map(|t| {
            Ok(TaskView {
                id: t.id,
                index: t.idx,
                from: t.frame_from,
                to: t.frame_to,
                state: t.task_state()?,
                attempts: t.attempts as u32,
                node: t.node_id.clone(),
                started_at: t.started_at,
                finished_at: t.finished_at,
                failure: t.failure.clone(),
                log_tail: t
                    .log_tail
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(JobDetail {
        job: summary,
        tasks,
        frames,
    })
}

/// The tutorial's `/status` view: frames done, and which did not render and why.
pub async fn render_status(store: &Store, job: &JobRow) -> Result<RenderStatus, StoreError> {
    let state = job.job_state()?;
    let frames = store.frames_of(job.seq).await?;
    let failed_frames =
        if state.is_terminal() && state != corral_core::orchestrator_api::JobState::Completed {
            let done: std::collections::HashSet<i64> = frames.iter().map(|f| f.frame).collect();
            (job.frame_from..=job.frame_to)
                .filter(|f| !done.contains(f))
                .collect()
        } else {
            Vec::new()
        };
    Ok(RenderStatus {
        job_id: job.job_id()?,
        status: state.status_text().to_string(),
        state,
        frames_done: frames.len() as u64,
        frames_total: (job.frame_to - job.frame_from + 1) as u64,
        failed_frames,
        failure: job.failure.clone(),
    })
}

pub fn node_view(n: &NodeRow, running: &HashMap<String, Vec<i64>>) -> NodeView {
    NodeView {
        id: n.id.clone(),
        url: n.url.clone(),
        state: n.node_state(),
        draining: n.draining,
        slots: n.slots.max(0) as u64,
        running_tasks: running.get(&n.id).cloned().unwrap_or_default(),
        hostname: n.hostname.clone(),
        blender_version: n.blender_version.clone(),
        last_seen: n.last_seen,
        registered_at: n.registered_at,
    }
}
