//! Frames back to the artist: each done frame downloaded from the orchestrator
//! (`GET /api/v1/jobs/{id}/frames/{n}`), hashed as it streams, checked against
//! `X-Content-SHA256`, written under a temporary name and renamed into place. A frame held
//! already is sent as `If-None-Match`, so only what is missing or differs travels.
//! `corral submit --wait --download` uses it as frames arrive; `corral fetch` for a job.

use crate::client_cmds::{explain, ServerArgs};
use crate::table::{for_terminal, plural};
use crate::upload::{bytes_text, hash_file};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use corral_client::{ClientError, OrchestratorClient};
use corral_core::render::frame_extension;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const FETCH_EXAMPLES: &str = "\
Examples:
  corral fetch 0190d6a2-7c1e-7b4a-9f3e-2a1b3c4d5e6f            # into ./0190d6a2-.../
  corral fetch JOB --to renders/shot1
  corral fetch JOB --server http://farm:4000

Downloads the job's rendered frames that are missing in the folder or differ from the
farm's (by SHA-256); frames already there and identical are not downloaded again.";

/// Downloads a job's frames into one folder.
pub struct Downloader {
    client: OrchestratorClient,
    job: String,
    dir: PathBuf,
    /// Frames fetched or found identical, so each is asked for once.
    handled: BTreeSet<i64>,
    pub downloaded: u64,
    pub bytes: u64,
    pub unchanged: u64,
}

/// The file name of frame `n`: Blender's four digits, the extension of the farm's file
/// (`hint`, a path the farm reported) when it is a frame format, else the content type's.
fn frame_name(n: i64, hint: Option<&str>, content_type: Option<&str>) -> String {
    let from_hint = hint
        .and_then(|p| Path::new(p).extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .filter(|e| corral_core::render::FRAME_TYPES.iter().any(|(x, _)| x == e));
    let ext = from_hint
        .or_else(|| content_type.and_then(frame_extension).map(str::to_string))
        .unwrap_or_else(|| "png".to_string());
    format!("frame_{n:04}.{ext}")
}

impl Downloader {
    /// Downloads into `dir`, made if needed.
    pub fn new(client: &OrchestratorClient, job: &str, dir: &Path) -> anyhow::Result<Self> {
        if dir.exists() && !dir.is_dir() {
            bail!("`{}` is not a folder", dir.display());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the folder `{}`", dir.display()))?;
        Ok(Downloader {
            client: client.clone(),
            job: job.to_string(),
            dir: dir.to_path_buf(),
            handled: BTreeSet::new(),
            downloaded: 0,
            bytes: 0,
            unchanged: 0,
        })
    }

    /// Fetches frame `n` unless it was handled already or the copy here is the farm's.
    pub async fn frame(&mut self, n: i64, hint: Option<&str>) -> anyhow::Result<()> {
        if self.handled.contains(&n) {
            return Ok(());
        }
        let name = frame_name(n, hint, None);
        let target = self.dir.join(&name);
        let held = if target.is_file() {
            let path = target.clone();
            tokio::task::spawn_blocking(move || hash_file(&path))
                .await
                .context("hashing stopped")?
                .ok()
                .map(|(hash, _)| hash)
        } else {
            None
        };
        let download = match self.client.frame(&self.job, n, held.as_ref()).await {
            Ok(download) => download,
            Err(ClientError::NotFound { .. }) => {
                bail!("frame {n} of job {} is not on the farm", self.job)
            }
            Err(e) => return Err(explain(e, self.client.base())),
        };
        let Some(mut download) = download else {
            self.unchanged += 1;
            self.handled.insert(n);
            return Ok(());
        };
        let target = self
            .dir
            .join(frame_name(n, hint, Some(&download.content_type)));
        // A temporary file beside the target, renamed over it once checked: a frame is
        // never seen half-written, and a failed download leaves nothing.
        let mut part = tempfile::Builder::new()
            .prefix(".frame-")
            .suffix(".part")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot write in `{}`", self.dir.display()))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = download
            .chunk()
            .await
            .map_err(|e| explain(e, self.client.base()))?
        {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            part.write_all(&chunk)
                .with_context(|| format!("cannot write in `{}`", self.dir.display()))?;
        }
        let actual = corral_core::BlobHash::from_digest(&hasher.finalize());
        if actual != download.sha256 {
            bail!(
                "frame {n} arrived as {actual}, not the {} the farm announced; not kept",
                download.sha256
            );
        }
        part.as_file()
            .sync_all()
            .with_context(|| format!("cannot write `{}`", target.display()))?;
        part.persist(&target)
            .map_err(|e| anyhow!("cannot write `{}`: {}", target.display(), e.error))?;
        self.downloaded += 1;
        self.bytes += size;
        self.handled.insert(n);
        Ok(())
    }

    /// Fetches every frame the farm has done that was not handled yet; answers how many
    /// of the job's frames are not done.
    pub async fn sweep(&mut self) -> anyhow::Result<u64> {
        let job = self
            .client
            .full_job(&self.job)
            .await
            .map_err(|e| explain(e, self.client.base()))?;
        let mut not_done = 0;
        for frame in &job.frames {
            if frame.state == "done" {
                self.frame(frame.frame, frame.path.as_deref()).await?;
            } else {
                not_done += 1;
            }
        }
        Ok(not_done)
    }

    /// `3 frames downloaded (1.2 MiB), 2 unchanged, to DIR/`.
    pub fn summary(&self) -> String {
        format!(
            "{} frame{} downloaded ({}), {} already here, to {}/",
            self.downloaded,
            plural(self.downloaded),
            bytes_text(self.bytes),
            self.unchanged,
            for_terminal(&self.dir.display().to_string())
        )
    }
}

/// A job id typed by a user, checked before it names a folder.
pub fn job_id(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    uuid::Uuid::parse_str(text)
        .map(|id| id.to_string())
        .map_err(|_| {
            anyhow!(
                "`{}` is not a job id (as `corral jobs` prints it)",
                for_terminal(text)
            )
        })
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The job's id.
    job: String,
    /// Folder for the frames (default: `./JOBID/` in the current folder).
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let id = job_id(&args.job)?;
    let client = args.server.connect()?;
    let dir = args.to.unwrap_or_else(|| PathBuf::from(&id));
    // Asked first, so an unknown job makes no folder.
    client.job(&id).await.map_err(|e| match e {
        ClientError::NotFound { .. } => {
            anyhow!("no job `{id}` on the server at {}", client.base())
        }
        e => explain(e, client.base()),
    })?;
    let mut downloader = Downloader::new(&client, &id, &dir)?;
    let not_done = downloader.sweep().await?;
    println!("{}", downloader.summary());
    if not_done > 0 {
        println!(
            "{not_done} frame{} not rendered yet; fetch again later",
            plural(not_done)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_named_as_blender_names_them() {
        assert_eq!(frame_name(7, None, None), "frame_0007.png");
        assert_eq!(
            frame_name(7, Some("/data/frames/j/frame_0007.exr"), None),
            "frame_0007.exr"
        );
        assert_eq!(
            frame_name(12, Some("x.sh"), Some("image/jpeg")),
            "frame_0012.jpg"
        );
    }

    #[test]
    fn job_ids_are_checked_before_naming_a_folder() {
        assert!(job_id("../../etc").is_err());
        assert!(job_id("0190d6a2-7c1e-7b4a-9f3e-2a1b3c4d5e6f").is_ok());
    }
}
