//! Builds the API's views (job summaries and details, task and frame pages, the tutorial's
//! status, nodes) from the store's read models. A summary is built from the job's own
//! record (its tally and frame count), so its cost does not grow with the job.

use crate::store::{JobRecord, NodeRecord, Store, StoreError, TaskRecord};
use corral_core::lifecycle::TaskState;
use corral_core::orchestrator_api::{
    FramePage, FrameView, JobDetail, JobState, JobSummary, NodeView, RenderStatus, TaskView,
    DETAIL_TASKS,
};
use corral_core::FrameRange;
use std::collections::HashMap;

/// A job's summary, with an ETA from the rate frames have arrived.
pub fn job_summary(job: &JobRecord) -> JobSummary {
    let life = &job.life;
    let state = life.state;
    let frames_total = life.frames_total;
    let frames_done = life.frames_done;
    let eta_seconds = match (state.is_terminal(), life.started_at, job.last_frame_at) {
        (false, Some(start), Some(last)) if frames_done > 0 => {
            let elapsed = (last - start).num_milliseconds().max(1) as f64 / 1000.0;
            let per_frame = elapsed / frames_done as f64;
            Some((per_frame * frames_total.saturating_sub(frames_done) as f64).ceil() as u64)
        }
        _ => None,
    };
    JobSummary {
        id: job.id(),
        state,
        status: state.status_text().to_string(),
        scene: job.render.scene.clone(),
        manifest: job.render.manifest.as_ref().map(|m| m.to_string()),
        from: job.range.from(),
        to: job.range.to(),
        chunk_size: job.chunk_size,
        priority: job.priority,
        engine: job.render.engine,
        format: job.render.format,
        output: job.render.output.clone(),
        frames_total,
        frames_done,
        tasks_total: life.tally.total(),
        tasks_done: life.tally.completed,
        tasks_running: life.tally.running,
        tasks_failed: life.tally.failed,
        failure: life.failure.clone(),
        submitted_at: job.submitted_at,
        started_at: life.started_at,
        finished_at: life.finished_at,
        eta_seconds,
    }
}

pub fn task_view(t: &TaskRecord) -> TaskView {
    let failure = match &t.task.state {
        TaskState::Failed { reason, .. } => Some(reason.clone()),
        _ => t.task.last_failure.clone(),
    };
    TaskView {
        id: t.task.id,
        index: t.task.index,
        from: t.task.range.from(),
        to: t.task.range.to(),
        state: t.task.state.kind(),
        attempts: t.task.attempts,
        node: t.task.last_node.clone(),
        started_at: t.started_at,
        finished_at: t.finished_at,
        failure,
        log_tail: t.log_tail.clone(),
    }
}

/// A job with its first tasks.
pub async fn job_detail(store: &dyn Store, job: &JobRecord) -> Result<JobDetail, StoreError> {
    let tasks = store.tasks(job.id(), 0, DETAIL_TASKS).await?;
    Ok(JobDetail {
        job: job_summary(job),
        tasks: tasks.iter().map(task_view).collect(),
    })
}

/// Frames `job.from + offset ..` (at most `limit`), each done or pending.
pub async fn frame_page(
    store: &dyn Store,
    job: &JobRecord,
    offset: u64,
    limit: u64,
) -> Result<FramePage, StoreError> {
    let total = job.range.len();
    let first = job.range.from().saturating_add(offset.min(total) as i64);
    let last = first.saturating_add(limit as i64 - 1).min(job.range.to());
    let frames = match FrameRange::new(first, last) {
        Ok(range) if offset < total && limit > 0 => {
            let done: HashMap<i64, _> = store
                .frames(job.id(), range)
                .await?
                .into_iter()
                .map(|f| (f.frame, f))
                .collect();
            range
                .frames()
                .map(|frame| match done.get(&frame) {
                    Some(f) => FrameView {
                        frame,
                        state: "done".into(),
                        node: Some(f.node.clone()),
                        path: Some(f.path.clone()),
                    },
                    None => FrameView {
                        frame,
                        state: "pending".into(),
                        node: None,
                        path: None,
                    },
                })
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(FramePage {
        frames,
        total,
        offset,
        limit,
    })
}

/// The tutorial's `/status` view: frames done and, when the job failed, which frames
/// failed (as runs) and why.
pub async fn render_status(store: &dyn Store, job: &JobRecord) -> Result<RenderStatus, StoreError> {
    let state = job.state();
    let failed_frames = if state == JobState::Failed {
        store.failed_frames(job.id()).await?
    } else {
        Vec::new()
    };
    Ok(RenderStatus {
        job_id: job.id(),
        status: state.status_text().to_string(),
        state,
        frames_done: job.life.frames_done,
        frames_total: job.life.frames_total,
        failed_frames,
        failure: job.life.failure.clone(),
    })
}

pub fn node_view(n: &NodeRecord) -> NodeView {
    NodeView {
        id: n.id.clone(),
        url: n.url.clone(),
        state: n.state,
        draining: n.draining,
        slots: n.slots,
        running_tasks: n.running.clone(),
        hostname: n.hostname.clone(),
        blender_version: n.blender_version.clone(),
        cores: n.cores,
        memory_bytes: n.memory_bytes,
        max_frames: n.max_frames,
        frames_rendered: n.frames_rendered,
        last_seen: n.last_seen,
        registered_at: n.registered_at,
        credential: None,
    }
}
