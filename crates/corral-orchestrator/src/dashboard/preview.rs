//! Preview videos: when a job completes, its frames become an H.264 MP4 at the scene's
//! frame rate, made by Debian's `ffmpeg` (an argument vector, never a shell) into
//! `DATA/media/{job}/preview.mp4`. Frames a video cannot show as they are (EXR), frames of
//! different sizes, frames this orchestrator cannot read, or a missing FFmpeg leave a note
//! instead (`preview.json`), so the page can say why there is no video.
//!
//! A preview is started by the job's completion event, or by the first request for its
//! state when the orchestrator was not running then.

use super::{Media, MediaError};
use crate::orchestrator::Orchestrator;
use crate::store::JobRecord;
use corral_core::orchestrator_api::{Event, JobState, PreviewState, PreviewView};
use corral_core::{FrameRange, JobId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Frame rate of a job whose submission named none (Blender's default is 24).
pub const DEFAULT_FPS: f64 = 24.0;
/// Longest an encode may take before it is abandoned.
const ENCODE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Frames read from the store at a time.
const FRAME_PAGE: i64 = 5000;

/// Why a preview could not be made, kept so the page can say it without trying again.
#[derive(Debug, Serialize, Deserialize)]
struct Unavailable {
    note: String,
}

pub fn state_name(state: PreviewState) -> &'static str {
    match state {
        PreviewState::None => "not made yet",
        PreviewState::Making => "being made",
        PreviewState::Ready => "ready",
        PreviewState::Unavailable => "unavailable",
    }
}

pub fn video_path(media: &Media, job: JobId) -> PathBuf {
    media.job_dir(job).join("preview.mp4")
}

fn note_path(media: &Media, job: JobId) -> PathBuf {
    media.job_dir(job).join("preview.json")
}

/// Makes previews of jobs as they complete, until shutdown.
pub async fn run(o: Orchestrator) {
    let mut events = o.subscribe();
    let shutdown = o.shutdown_token();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(Event::Job {
                id,
                state: JobState::Completed,
                ..
            }) => start(&o, id),
            Ok(_) => {}
            // Missed events: a missed completion is made when its page asks.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Starts making a job's preview in the background unless it is made or being made.
pub fn start(o: &Orchestrator, job: JobId) {
    let media = &o.inner.media;
    if video_path(media, job).exists() || note_path(media, job).exists() {
        return;
    }
    let fresh = media.making.lock().is_ok_and(|mut set| set.insert(job));
    if !fresh {
        return;
    }
    let worker = o.clone();
    o.inner.workers.spawn(async move {
        worker.publish_local(Event::Preview {
            job,
            state: PreviewState::Making,
            note: None,
        });
        let outcome = tokio::select! {
            () = worker.inner.shutdown.cancelled() => None,
            outcome = make(&worker, job) => Some(outcome),
        };
        if let Ok(mut set) = worker.inner.media.making.lock() {
            set.remove(&job);
        }
        let Some(outcome) = outcome else { return };
        let event = match outcome {
            Ok(note) => {
                tracing::info!(job = %job, "preview video made");
                Event::Preview {
                    job,
                    state: PreviewState::Ready,
                    note: Some(note),
                }
            }
            Err(MediaError::Io(e)) => {
                // A passing failure (a full disk): not remembered, so it is tried again.
                tracing::warn!(job = %job, error = %e, "could not make the preview video");
                Event::Preview {
                    job,
                    state: PreviewState::None,
                    note: Some(e),
                }
            }
            Err(e) => {
                let note = e.to_string();
                tracing::info!(job = %job, note, "no preview video");
                let record = Unavailable { note: note.clone() };
                let path = note_path(&worker.inner.media, job);
                if let Ok(json) = serde_json::to_vec(&record) {
                    let _ = tokio::fs::write(&path, json).await;
                }
                Event::Preview {
                    job,
                    state: PreviewState::Unavailable,
                    note: Some(note),
                }
            }
        };
        worker.publish_local(event);
    });
}

/// The preview's state, starting it for a completed job that has none (the orchestrator
/// was not running when the job completed).
pub async fn status(o: &Orchestrator, job: &JobRecord) -> PreviewView {
    let media = &o.inner.media;
    let id = job.id();
    let fps = media.fps(id).await;
    let url = format!("/api/v1/jobs/{id}/preview.mp4");
    if tokio::fs::try_exists(video_path(media, id))
        .await
        .unwrap_or(false)
    {
        return PreviewView {
            state: PreviewState::Ready,
            note: None,
            url: Some(url),
            fps,
        };
    }
    if let Ok(bytes) = tokio::fs::read(note_path(media, id)).await {
        if let Ok(record) = serde_json::from_slice::<Unavailable>(&bytes) {
            return PreviewView {
                state: PreviewState::Unavailable,
                note: Some(record.note),
                url: None,
                fps,
            };
        }
    }
    if job.state() != JobState::Completed {
        return PreviewView {
            state: PreviewState::None,
            note: Some("made when the job completes".into()),
            url: None,
            fps,
        };
    }
    start(o, id);
    PreviewView {
        state: PreviewState::Making,
        note: None,
        url: None,
        fps,
    }
}

/// Checks the job's frames and encodes them; answers a note about the video.
async fn make(o: &Orchestrator, job: JobId) -> Result<String, MediaError> {
    let media = &o.inner.media;
    let record = o
        .store()
        .job(job)
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?
        .ok_or_else(|| MediaError::NoPreview("the job is gone".into()))?;
    let frames = frame_files(o, &record).await?;
    let first = frames
        .first()
        .ok_or_else(|| MediaError::NoPreview("the job has no frames".into()))?
        .clone();
    if super::frames::is_hdr(&first) {
        return Err(MediaError::NoPreview(
            "the frames are OpenEXR (linear, high dynamic range), which a video cannot show \
             as they are; render PNG or JPEG for a preview video"
                .into(),
        ));
    }
    let ext = first
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_string();
    let checked = frames.clone();
    let size = tokio::task::spawn_blocking(move || same_size(&checked))
        .await
        .map_err(|e| MediaError::Io(e.to_string()))??;
    if frames
        .iter()
        .any(|f| f.extension().and_then(|e| e.to_str()) != Some(ext.as_str()))
    {
        return Err(MediaError::NoPreview(
            "the frames are not all in one image format".into(),
        ));
    }

    let _permit = media
        .encoder
        .acquire()
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?;
    let dir = media.job_dir(job);
    // The frames in order under numbered names, so FFmpeg reads them as one sequence
    // whatever the nodes named them; links, not copies.
    let seq = dir.join(format!(".seq-{}", std::process::id()));
    let _ = tokio::fs::remove_dir_all(&seq).await;
    tokio::fs::create_dir_all(&seq)
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?;
    for (i, frame) in frames.iter().enumerate() {
        let link = seq.join(format!("{:06}.{ext}", i + 1));
        tokio::fs::symlink(frame, &link)
            .await
            .map_err(|e| MediaError::Io(e.to_string()))?;
    }
    let fps = media.fps(job).await;
    let tmp = dir.join(format!(".preview-{}.mp4", std::process::id()));
    let result = encode(&media.ffmpeg, &seq, &ext, fps, &tmp).await;
    let _ = tokio::fs::remove_dir_all(&seq).await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, video_path(media, job))
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?;
    Ok(format!(
        "{} frames, {}×{}, {} fps",
        frames.len(),
        size.0,
        size.1,
        fps
    ))
}

/// Every frame of the job as a local file, in order.
async fn frame_files(o: &Orchestrator, job: &JobRecord) -> Result<Vec<PathBuf>, MediaError> {
    let media = &o.inner.media;
    let mut files = Vec::with_capacity(job.range.len() as usize);
    let mut from = job.range.from();
    while from <= job.range.to() {
        let to = from.saturating_add(FRAME_PAGE - 1).min(job.range.to());
        let range = FrameRange::new(from, to).map_err(|e| MediaError::Io(e.to_string()))?;
        let records = o
            .store()
            .frames(job.id(), range)
            .await
            .map_err(|e| MediaError::Io(e.to_string()))?;
        for record in records {
            let path = media
                .source
                .local_path(job.id(), &record)
                .await
                .map_err(|e| match e {
                    MediaError::Unreadable(why) => MediaError::NoPreview(format!(
                        "frame {} cannot be read: {why}",
                        record.frame
                    )),
                    other => other,
                })?;
            files.push(path);
        }
        from = to.saturating_add(1);
    }
    Ok(files)
}

/// The frames' common size, read from their headers; a note when they differ.
fn same_size(frames: &[PathBuf]) -> Result<(u32, u32), MediaError> {
    let mut size = None;
    for frame in frames {
        let this = image::image_dimensions(frame).map_err(|e| {
            MediaError::NoPreview(format!("cannot read `{}`: {e}", frame.display()))
        })?;
        match size {
            None => size = Some(this),
            Some(first) if first != this => {
                return Err(MediaError::NoPreview(format!(
                    "the frames are not all one size ({}×{} and {}×{})",
                    first.0, first.1, this.0, this.1
                )))
            }
            Some(_) => {}
        }
    }
    size.ok_or_else(|| MediaError::NoPreview("the job has no frames".into()))
}

/// Runs FFmpeg on the numbered sequence in `seq`.
async fn encode(
    ffmpeg: &Path,
    seq: &Path,
    ext: &str,
    fps: f64,
    out: &Path,
) -> Result<(), MediaError> {
    let mut cmd = tokio::process::Command::new(ffmpeg);
    cmd.arg("-nostdin")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .arg("-framerate")
        .arg(fps.to_string())
        .arg("-i")
        .arg(seq.join(format!("%06d.{ext}")))
        // H.264 in yuv420p needs even sizes: pad odd ones by a pixel rather than refuse.
        .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20"])
        .args(["-movflags", "+faststart", "-f", "mp4"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        MediaError::NoPreview(if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "FFmpeg (`{}`) is not installed on the orchestrator's machine (Debian: apt-get install ffmpeg)",
                ffmpeg.display()
            )
        } else {
            format!("cannot start FFmpeg: {e}")
        })
    })?;
    let output = tokio::time::timeout(ENCODE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| MediaError::NoPreview("FFmpeg took too long".into()))?
        .map_err(|e| MediaError::Io(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("no message").trim();
        return Err(MediaError::NoPreview(format!(
            "FFmpeg failed ({}): {last}",
            output.status
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    fn png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
        let path = dir.join(name);
        ImageBuffer::from_pixel(w, h, Rgb([200u8, 100, 50]))
            .save(&path)
            .expect("write PNG");
        path
    }

    #[test]
    fn frames_of_different_sizes_get_a_note() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = png(dir.path(), "a.png", 64, 48);
        let b = png(dir.path(), "b.png", 64, 48);
        assert_eq!(same_size(&[a.clone(), b]).expect("one size"), (64, 48));
        let c = png(dir.path(), "c.png", 32, 48);
        let err = same_size(&[a, c]).unwrap_err();
        assert!(err.to_string().contains("64×48 and 32×48"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_ffmpeg_is_a_note_not_a_failure() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = encode(
            Path::new("/nonexistent/ffmpeg"),
            dir.path(),
            "png",
            24.0,
            &dir.path().join("out.mp4"),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, MediaError::NoPreview(note) if note.contains("not installed")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn ffmpeg_pads_odd_sizes_into_an_mp4() {
        // Debian's FFmpeg, installed by scripts/install-deps.sh.
        let dir = tempfile::tempdir().expect("temp dir");
        let seq = dir.path().join("seq");
        std::fs::create_dir_all(&seq).expect("sequence folder");
        for i in 1..=3 {
            png(&seq, &format!("{i:06}.png"), 33, 17);
        }
        let out = dir.path().join("out.mp4");
        encode(Path::new("ffmpeg"), &seq, "png", 12.0, &out)
            .await
            .expect("an MP4 of odd-sized frames");
        let bytes = std::fs::read(&out).expect("the MP4");
        assert_eq!(bytes.get(4..8), Some(&b"ftyp"[..]));
    }
}
