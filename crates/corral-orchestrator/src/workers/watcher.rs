//! Watchers: one per task this orchestrator follows, long-polling the task's node
//! (`GET /job/{id}?wait=&since=&batch=`) so the render's end is known within milliseconds
//! and its saved frames a batch at a time, and reporting each to the store under the
//! task's lease. A watcher ends when
//! the render ends, when its lease moves on (a report is refused as stale), or when another
//! orchestrator took the task over.
//!
//! A report the store cannot take (the database is down) is retried until it is taken or
//! the orchestrator stops: a node's finished work is never dropped on the floor.

use crate::orchestrator::{AtWork, Following, Orchestrator};
use crate::store::{Applied, Note, RunningTask, SavedFrame, StoreError};
use chrono::Utc;
use corral_client::ClientError;
use corral_core::lifecycle::{Command, Refusal, TaskState};
use corral_core::node_api::JobView;
use corral_core::JobState as RenderState;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Progress that brings no new frame (samples of a long frame) is written at most this
/// often: it only moves the stall clock, which counts in minutes.
const SAMPLE_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// New frames are written at most this often per task: a render saving frames faster than
/// this (small images, a farm of a thousand nodes) has them recorded a few at a time, in
/// one transaction, instead of one each. A frame that takes longer than this to render is
/// recorded the moment it is saved.
const FRAMES_EVERY: Duration = Duration::from_millis(200);

/// The progress writes all watchers together aim to stay under, per second. The store
/// applies writes one at a time (SQLite has one writer), so at a thousand renders saving
/// frames every 100 ms, writing each watcher's frames every 200 ms queued every write,
/// completions included, for seconds (measured with `corral bench sim --nodes 1000`).
const PROGRESS_WRITES_PER_S: u32 = 1000;

/// How long a watcher holds new frames (and sample progress) before writing them: 200 ms,
/// or longer when this orchestrator follows so many renders that their writes together
/// would pass [`PROGRESS_WRITES_PER_S`]. A render's end is written at once either way.
fn progress_every(o: &Orchestrator, base: Duration) -> Duration {
    let followed = o.inner.followed.lock().map_or(0, |set| set.len());
    let followed = u32::try_from(followed).unwrap_or(u32::MAX);
    base.max(Duration::from_secs(1) * followed / PROGRESS_WRITES_PER_S)
}

/// Reports a command about `task`, retrying while the store is unavailable. Answers
/// whether it was applied, or `None` if the orchestrator is shutting down first.
pub(crate) async fn report(
    o: &Orchestrator,
    task: &RunningTask,
    command: Command,
    note: Note,
) -> Option<bool> {
    loop {
        match o.apply(task.task, command.clone(), note.clone()).await {
            Ok(Applied::Changed(changes)) => {
                let owned = changes.first().is_some_and(|c| match &c.task.state {
                    TaskState::Running(r) => r.owner == *o.id(),
                    _ => true,
                });
                return Some(owned);
            }
            Ok(Applied::Refused(refusal)) => {
                tracing::debug!(task = %task.task, %refusal, "report refused");
                return Some(false);
            }
            Ok(Applied::Unknown) => return Some(false),
            Err(e) => {
                log_store_error(task, &e);
                if o.inner.shutdown.is_cancelled() {
                    return None;
                }
                o.pause(Duration::from_secs(1)).await;
                if o.inner.shutdown.is_cancelled() {
                    return None;
                }
            }
        }
    }
}

fn log_store_error(task: &RunningTask, e: &StoreError) {
    tracing::warn!(task = %task.task, error = %e, "could not record a report; retrying");
}

/// Ends an attempt as failed.
pub(crate) async fn fail(o: &Orchestrator, task: &RunningTask, reason: String, note: Note) {
    tracing::warn!(task = %task.task, node = %task.node, reason, "task attempt failed");
    let command = Command::Fail {
        lease: task.lease,
        reason,
        max_attempts: o.config().max_attempts,
    };
    report(o, task, command, note).await;
}

/// Starts a watcher for a task whose node already accepted it.
pub(crate) fn spawn(o: &Orchestrator, task: RunningTask, following: Following) {
    let w = o.clone();
    o.inner
        .workers
        .spawn(async move { watch(&w, task, following).await });
}

/// Follows one task on its node until it ends, its lease moves on, or it changes hands.
pub(crate) async fn watch(o: &Orchestrator, task: RunningTask, _following: Following) {
    follow(o, &task).await;
    // Whatever ended the watch, the render's progress is no longer news.
    o.inner.media.note_progress(task.task, None);
}

async fn follow(o: &Orchestrator, task: &RunningTask) {
    let task = task.clone();
    let (Some(url), Some(node_job)) = (task.node_url.clone(), task.node_job.clone()) else {
        return;
    };
    let mut since = 0;
    let mut recorded: HashSet<i64> = HashSet::new();
    // The task's last frame as this watcher knows it: lower once a tail was cut off.
    let mut range_to = task.range.to();
    let _at_work = AtWorkEntry {
        o: o.clone(),
        task: task.task,
    };
    let mut last_write: Option<Instant> = None;
    // When this watcher first saw a frame of the render saved, and how many were saved
    // then: the frames saved since, over the time since, are the render's frame time.
    // Counting from the render's start instead would count Blender's start-up and scene
    // loading as frame time: a cold render measured at a few seconds a frame was cut to
    // pieces so short that each spent most of its time starting Blender.
    let mut first_saved: Option<(Instant, usize)> = None;
    let mut measured = false;
    // When frames are waiting to be written, the next long-poll ends in time to write them.
    let mut wait = o.config().long_poll;
    // The node holds progress short of the render's end for this long, so a render saving
    // frames every few milliseconds is one answer per batch rather than one per frame (at
    // a thousand renders, the answers alone kept the orchestrator's two cores busy, and
    // every write and dispatch queued behind them). The end is answered at once. A node
    // of an earlier version refuses the parameter (`400`): it is then asked without it.
    let mut batching = true;
    loop {
        if o.inner.shutdown.is_cancelled() {
            return;
        }
        let batch = if batching {
            progress_every(o, FRAMES_EVERY).min(wait)
        } else {
            Duration::ZERO
        };
        let answer = tokio::select! {
            () = o.inner.shutdown.cancelled() => return,
            answer = o.gateway().wait(&url, node_job.as_str(), since, wait, batch) => answer,
        };
        wait = o.config().long_poll;
        match answer {
            Ok(view) => {
                // The node bumps a render's version only on progress (a new frame, a
                // sample, a saved file, the end), so an unchanged version after a
                // long-poll means the render made no progress meanwhile.
                let progressed = view.version != since;
                since = view.version;
                if progressed {
                    publish_progress(o, &task, &view);
                }
                // The node ends the render earlier than the task's range (a tail was
                // stolen, and the orchestrator that stole it may have stopped before it
                // recorded the cut): the cut is recorded now, under the lease.
                if view.to < range_to {
                    let cut = Command::Cut {
                        lease: Some(task.lease),
                        keep_to: view.to,
                    };
                    match o.apply(task.task, cut, Note::default()).await {
                        Ok(Applied::Changed(_)) => range_to = view.to,
                        Ok(Applied::Refused(Refusal::NotAllowed { .. })) => range_to = view.to,
                        Ok(_) => return,
                        Err(e) => {
                            log_store_error(&task, &e);
                            o.pause(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                let current = view.current_frame.unwrap_or_else(|| {
                    view.outputs
                        .iter()
                        .map(|f| f.frame + 1)
                        .max()
                        .unwrap_or(view.from)
                });
                let saved = view.outputs.len();
                if first_saved.is_none() && saved > 0 {
                    first_saved = Some((Instant::now(), saved));
                }
                let frame_ms = first_saved
                    .filter(|(_, at_first)| task.sized_by_farm && saved > *at_first)
                    .map(|(seen_at, at_first)| {
                        seen_at.elapsed().as_secs_f64() * 1000.0 / (saved - at_first) as f64
                    });
                if let (Some(ms), Ok(mut speeds)) = (frame_ms, o.inner.frame_ms.lock()) {
                    speeds.insert((task.job, task.node.clone()), ms);
                }
                if frame_ms.is_some() && !measured {
                    // The dispatcher may cut this render to the task length now, rather
                    // than at its next round.
                    measured = true;
                    o.wake();
                }
                if let Ok(mut at_work) = o.inner.at_work.lock() {
                    // Asked to stop at the task length once per render (per lease).
                    let trimmed = at_work
                        .get(&task.task)
                        .is_some_and(|a| a.lease == task.lease && a.trimmed);
                    at_work.insert(
                        task.task,
                        AtWork {
                            job: task.job,
                            lease: task.lease,
                            url: url.clone(),
                            node_job: node_job.as_str().to_string(),
                            current,
                            to: view.to,
                            frame_ms,
                            trimmed,
                            seen: Instant::now(),
                        },
                    );
                }
                let new: Vec<SavedFrame> = view
                    .outputs
                    .iter()
                    .filter(|f| !recorded.contains(&f.frame))
                    .map(|f| SavedFrame {
                        frame: f.frame,
                        // An uploaded frame is recorded where this orchestrator stored it
                        // (the node names only the file it uploaded).
                        path: if task.render.manifest.is_some() {
                            o.storage().frames.recorded_path(task.job, f.frame, &f.path)
                        } else {
                            f.path.clone()
                        },
                    })
                    .collect();
                if view.state.is_terminal() {
                    ended(o, &task, view, new).await;
                    return;
                }
                let since_write = last_write.map_or(Duration::MAX, |t| t.elapsed());
                let samples_due =
                    progressed && since_write >= progress_every(o, SAMPLE_PROGRESS_EVERY);
                if new.is_empty() && !samples_due {
                    continue;
                }
                let frames_every = progress_every(o, FRAMES_EVERY);
                if !new.is_empty() && since_write < frames_every {
                    wait = frames_every - since_write;
                    continue;
                }
                // As many watchers as the store applies together are writing their
                // progress: these frames wait for a later look (the render's end writes
                // whatever is left).
                let Ok(_writing) = o.inner.progress_writers.try_acquire() else {
                    wait = frames_every;
                    continue;
                };
                let command = Command::Progress {
                    lease: task.lease,
                    new_frames: 0,
                };
                let note = Note {
                    frames: new.clone(),
                    log_tail: None,
                };
                match o.apply(task.task, command, note).await {
                    Ok(Applied::Changed(changes)) => {
                        recorded.extend(new.iter().map(|f| f.frame));
                        last_write = Some(Instant::now());
                        let still_ours = changes.first().is_some_and(|c| {
                            matches!(&c.task.state, TaskState::Running(r) if r.owner == *o.id())
                        });
                        if !still_ours {
                            tracing::info!(task = %task.task, "another orchestrator follows this task now");
                            return;
                        }
                    }
                    // The lease moved on: another node has (or will have) the task.
                    Ok(Applied::Refused(_) | Applied::Unknown) => return,
                    // Not recorded: the frames stay new and go with the next report.
                    Err(e) => {
                        log_store_error(&task, &e);
                        o.pause(Duration::from_secs(1)).await;
                    }
                }
            }
            Err(ClientError::Status { status: 400, .. }) if batching => batching = false,
            Err(ClientError::NotFound { .. }) => {
                // The node restarted or forgot the render: run the task again elsewhere.
                tracing::warn!(task = %task.task, node = %task.node, "node lost the task; re-queued");
                let command = Command::TakeBack { lease: task.lease };
                report(o, &task, command, Note::default()).await;
                return;
            }
            Err(e) => {
                // Unreachable: the health worker decides whether the node is down (which
                // takes the task back and ends this watcher's reports as stale).
                tracing::debug!(task = %task.task, error = %e, "watch failed; retrying");
                o.pause(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Tells this orchestrator's event subscribers (the dashboard) which frame the render is
/// on and how many of its samples are done. Not stored: it changes several times a second.
fn publish_progress(o: &Orchestrator, task: &RunningTask, view: &JobView) {
    if view.state.is_terminal() {
        return;
    }
    let (Some(frame), Some(sample)) = (view.current_frame, view.current_sample) else {
        return;
    };
    let event = corral_core::orchestrator_api::Event::Progress {
        job: task.job,
        task: task.task,
        node: task.node.clone(),
        frame,
        sample_done: sample.done,
        sample_total: sample.total,
    };
    o.inner.media.note_progress(task.task, Some(event.clone()));
    o.publish_local(event);
}

/// Removes a watched render from the renders at work when its watcher ends.
struct AtWorkEntry {
    o: Orchestrator,
    task: corral_core::TaskId,
}

impl Drop for AtWorkEntry {
    fn drop(&mut self) {
        if let Ok(mut at_work) = self.o.inner.at_work.lock() {
            at_work.remove(&self.task);
        }
    }
}

/// Reports a render's end: completed only with every frame of the range saved.
async fn ended(o: &Orchestrator, task: &RunningTask, view: JobView, new: Vec<SavedFrame>) {
    if let Some(finished) = view.finished_at {
        let delay = (Utc::now() - finished).to_std().unwrap_or_default();
        o.metrics().observe_completion_notice(delay);
    }
    let note = Note {
        frames: new,
        log_tail: Some(view.log_tail.clone()),
    };
    match view.state {
        RenderState::Completed => {
            // The store checks that every frame of the task's range (as it is now: a tail
            // may have been cut off and given to another node) is recorded.
            let command = Command::Complete {
                lease: task.lease,
                frames_recorded: 0,
                render_ms: view
                    .started_at
                    .zip(view.finished_at)
                    .and_then(|(start, end)| u64::try_from((end - start).num_milliseconds()).ok()),
            };
            loop {
                match o.apply(task.task, command.clone(), note.clone()).await {
                    Ok(Applied::Changed(_)) => {
                        tracing::info!(task = %task.task, node = %task.node, "task completed");
                        return;
                    }
                    Ok(Applied::Refused(Refusal::Incomplete { missing })) => {
                        let reason =
                            format!("node reported completion with {missing} frame(s) missing");
                        return fail(o, task, reason, note).await;
                    }
                    Ok(Applied::Refused(_) | Applied::Unknown) => return,
                    Err(e) => {
                        log_store_error(task, &e);
                        if o.inner.shutdown.is_cancelled() {
                            return;
                        }
                        o.pause(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        RenderState::Failed => {
            let reason = view.failure.unwrap_or_else(|| "Blender failed".to_string());
            fail(o, task, format!("on {}: {reason}", task.node), note).await;
        }
        // Cancelled on the node by someone else (or the node shut down): not the task's
        // fault, run it again.
        _ => {
            let command = Command::TakeBack { lease: task.lease };
            report(o, task, command, note).await;
        }
    }
}
