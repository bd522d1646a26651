//! The commands that drive a farm over its `/api/v1` API: `submit`, `status`, `jobs`,
//! `nodes`, `cancel`, `logs`. Each talks to `--server` (default: the local farm of
//! `corral up`), prints tables for people or `--json` for programs, and turns every
//! failure into one line that names what was wrong.

use crate::fetch::Downloader;
use crate::progress::{follow, print_frame_folders, report_end, Followed};
use crate::table::{age, between, duration, for_terminal, plural, terminal_width, Table};
use crate::{pack, scene, upload};
use anyhow::{anyhow, Context};
use clap::Args;
use corral_client::FullJob;
use corral_client::{ClientError, OrchestratorClient, Pins};
use corral_core::frames::FrameRange;
use corral_core::orchestrator_api::{JobDetail, JobState, NodeState, SubmitJob, TaskStateKind};
use corral_core::render::{Engine, ImageFormat};
use corral_core::tls::{Fingerprint, JoinString};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Where client commands look for a farm when neither `--server` nor `CORRAL_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:4000";

pub const SUBMIT_EXAMPLES: &str = "\
Examples:
  corral submit scene.blend --wait              # the scene's own frame range, with a progress bar
  corral submit shots/a.blend --frames 1-250 --batch-size 10
  corral submit scene.blend --frames 42 --format JPEG --output stills
  corral submit scene.blend --server http://farm:4000 --priority 10
  corral submit shot.blend --upload --wait       # send the scene's files; frames into ./JOBID/
  corral submit shot.blend --upload --wait --download renders/

A farm on this machine (a loopback --server) renders the scene from the farm's scenes
folder (`corral up --scenes DIR`, default the folder `corral up` was started in): it must
be inside it, and is sent as a path relative to it. With --upload, or when the server is
not on this machine and --scenes is not given, the scene is packed and uploaded instead:
Blender lists every file it uses (textures, linked libraries, caches...), paths are
rewritten in temporary copies (your files are never changed), and only the files the farm
lacks are sent. A missing file stops the submission unless --allow-missing.
With --wait: exit 0 when the job completed, 3 when it failed, 4 when it was cancelled,
130 when Ctrl-C stopped following (the job keeps running).";

pub const STATUS_EXAMPLES: &str = "\
Examples:
  corral status 0190d6a2-7c1e-7b4a-9f3e-2a1b3c4d5e6f
  corral status JOB --watch                     # progress bar until the job ends
  corral status JOB --json | jq .frames_done";

pub const JOBS_EXAMPLES: &str = "\
Examples:
  corral jobs
  corral jobs --state failed
  corral jobs --json | jq -r '.[].id'";

pub const NODES_EXAMPLES: &str = "\
Examples:
  corral nodes
  corral nodes --server http://farm:4000 --json";

pub const CANCEL_EXAMPLES: &str = "\
Examples:
  corral cancel 0190d6a2-7c1e-7b4a-9f3e-2a1b3c4d5e6f";

pub const LOGS_EXAMPLES: &str = "\
Examples:
  corral logs JOB                 # the last lines Blender printed, task by task
  corral logs JOB --frame 42      # only the task that renders frame 42
  corral logs JOB --json

The server keeps the last 40 lines of each task's latest attempt; a node keeps every
attempt's full log in its data folder (`logs/`).";

/// `--server`, on every command that talks to a farm.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The farm's server: `corral up` or `corral orchestrator` (`http://HOST:PORT`, or the
    /// `corral://...` string a farm prints, which carries its token and certificate
    /// fingerprint); several orchestrators of one farm, comma-separated, are tried in turn.
    #[arg(long, env = "CORRAL_SERVER", default_value = DEFAULT_SERVER, value_name = "URL", hide_env_values = true)]
    server: String,
    /// A client token for a farm that needs one (`corral_...`, sent as
    /// `Authorization: Bearer`; see `corral token`).
    #[arg(
        long,
        env = "CORRAL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The SHA-256 fingerprint of the farm's certificate, for an `https://` --server (a
    /// `corral://` one carries it): the farm is trusted only with exactly that
    /// certificate. The orchestrator logs it at every start and prints it in its first
    /// join strings.
    #[arg(long, env = "CORRAL_FINGERPRINT", value_name = "SHA256", value_parser = parse_fingerprint)]
    fingerprint: Option<Fingerprint>,
}

/// A certificate fingerprint from the command line.
pub fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    Fingerprint::parse(s)
}

impl ServerArgs {
    pub fn connect(&self) -> anyhow::Result<OrchestratorClient> {
        let (bases, token, pins) = if JoinString::is_join_string(&self.server) {
            let join = JoinString::parse(&self.server).map_err(|why| anyhow!("--server: {why}"))?;
            let mut pins = join.fingerprints.clone();
            pins.extend(self.fingerprint);
            (join.bases(), join.token.clone(), pins)
        } else {
            let pinned = self.fingerprint.is_some();
            let bases = self
                .server
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                // `host:4000` is what people type; the API is plain HTTP unless they say
                // otherwise, or pin a certificate.
                .map(|url| {
                    if url.contains("://") {
                        url.to_string()
                    } else if pinned {
                        format!("https://{url}")
                    } else {
                        format!("http://{url}")
                    }
                })
                .collect();
            (bases, None, self.fingerprint.into_iter().collect())
        };
        let client = OrchestratorClient::pinned(&bases, &Pins(pins)).map_err(|e| match e {
            ClientError::Tls(why) => anyhow!("--server: {why}"),
            // Never the raw --server: a join string holds a token.
            _ => anyhow!(
                "`{}` is not a server address; expected http://HOST:PORT or corral://HOST:PORT?token=...&fp=...",
                for_terminal(&bases.join(","))
            ),
        })?;
        // A token given on its own wins over the one in a join string.
        client.set_token(self.token.clone().or(token));
        Ok(client)
    }

    /// ` --server URL` when it is not the default, for commands printed as hints.
    /// A join string is shown without its token (a hint must not print a secret).
    fn flag(&self, client: &OrchestratorClient) -> String {
        if client.bases() == [DEFAULT_SERVER] {
            return String::new();
        }
        match JoinString::parse(&self.server) {
            Ok(join) => {
                let shown = JoinString {
                    token: None,
                    ..join
                };
                format!(" --server {shown}")
            }
            Err(_) => format!(" --server {}", client.bases().join(",")),
        }
    }
}

/// One line that says what went wrong, for people: the server's own words when it refused,
/// a hint when it cannot be reached; never a stack of HTTP internals.
pub fn explain(e: ClientError, server: &str) -> anyhow::Error {
    let server = for_terminal(server);
    let server = server.as_ref();
    match e {
        ClientError::Unreachable { source, .. } => {
            let cause = root_cause(&source);
            if let Some(refusal) = corral_client::pin_refusal(&source) {
                return anyhow!("refused to talk to {server}: {refusal}");
            }
            let hint = if server == DEFAULT_SERVER {
                "is `corral up` running?".to_string()
            } else {
                "is it running, and is the address right (--server or CORRAL_SERVER)?".into()
            };
            if source.is_timeout() {
                anyhow!("the Corral server at {server} did not answer in time: {hint}")
            } else {
                anyhow!("cannot reach the Corral server at {server} ({cause}): {hint}")
            }
        }
        ClientError::NotFound { url } => anyhow!(
            "{} was not found on the Corral server",
            for_terminal(url.as_str())
        ),
        ClientError::Status {
            status: 401,
            problem,
            ..
        } => anyhow!(
            "the server at {server} refused the call: {}; pass a client token with --token or CORRAL_TOKEN",
            for_terminal(problem.detail.as_deref().unwrap_or(&problem.title))
        ),
        ClientError::Status {
            status: 403,
            problem,
            ..
        } => anyhow!(
            "the server at {server} refused the token: {}",
            for_terminal(problem.detail.as_deref().unwrap_or(&problem.title))
        ),
        ClientError::Status {
            status, problem, ..
        } => {
            // The server's own words, shown but never obeyed by the terminal.
            let detail = for_terminal(problem.detail.as_deref().unwrap_or(&problem.title));
            match &problem.field {
                Some(field) => anyhow!("the server refused `{}`: {detail}", for_terminal(field)),
                None => anyhow!("the server answered {status}: {detail}"),
            }
        }
        ClientError::Decode { message, .. } => anyhow!(
            "{server} answered something that is not Corral's API ({}); is it a Corral server?",
            for_terminal(&message)
        ),
        ClientError::BadUrl(url) => {
            anyhow!("`{url}` is not a server address; expected http://HOST:PORT")
        }
        ClientError::TooLarge { limit, .. } => anyhow!(
            "{server} sent an answer larger than {} MiB, which was not read; is it a Corral server?",
            limit / (1024 * 1024)
        ),
        ClientError::Redirect {
            status, location, ..
        } => anyhow!(
            "{server} answered {status}, a redirect to {}; redirects are not followed: give --server the farm's own address",
            for_terminal(&location)
        ),
        ClientError::File { path, source } => {
            anyhow!("cannot read `{}`: {source}", for_terminal(&path))
        }
        ClientError::Tls(why) => anyhow!("cannot set up TLS: {why}"),
    }
}

/// The innermost error (`Connection refused (os error 111)`), without reqwest's wrappers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    // `Connection refused (os error 111)` reads better as `connection refused`.
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Fetches a job, saying plainly when there is none by that id.
async fn fetch_job(client: &OrchestratorClient, id: &str) -> anyhow::Result<JobDetail> {
    client
        .job(id)
        .await
        .map_err(|e| not_found_or(e, client, id))
}

/// The job with every task and frame (what `status` and the end report show).
async fn fetch_full_job(client: &OrchestratorClient, id: &str) -> anyhow::Result<FullJob> {
    client
        .full_job(id)
        .await
        .map_err(|e| not_found_or(e, client, id))
}

fn not_found_or(e: ClientError, client: &OrchestratorClient, id: &str) -> anyhow::Error {
    match e {
        ClientError::NotFound { .. } => anyhow!(
            "no job `{}` on the server at {}",
            for_terminal(id),
            client.base()
        ),
        e => explain(e, client.base()),
    }
}

/// An error whose text quotes what a server or Blender said, made safe to print.
fn terminal_safe(e: anyhow::Error) -> anyhow::Error {
    anyhow!("{}", for_terminal(&format!("{e:#}")))
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot write JSON")?;
    println!("{text}");
    Ok(())
}

// ---- submit --------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The .blend file to render (inside the farm's scenes folder).
    scene: PathBuf,
    /// Frames to render: `A-B` or one frame `N` (default: the scene's own range, which
    /// Blender reads from the file).
    #[arg(long, env = "CORRAL_FRAMES", value_name = "A-B", value_parser = scene::parse_frames)]
    frames: Option<FrameRange>,
    /// Frames per task (default: the server's --batch-size).
    #[arg(long, env = "CORRAL_BATCH_SIZE", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: Option<u64>,
    /// Render the first, middle and last frames before the rest, to see problems early.
    #[arg(long)]
    preview_first: bool,
    /// Higher runs first, from -1000 to 1000.
    #[arg(long, env = "CORRAL_PRIORITY", value_name = "P", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1000..=1000))]
    priority: Option<i64>,
    /// Folder for the frames, inside the farm's output folder (default: the job's id).
    #[arg(long, env = "CORRAL_JOB_OUTPUT", value_name = "DIR")]
    output: Option<PathBuf>,
    /// Render engine: CYCLES, BLENDER_EEVEE or BLENDER_WORKBENCH (default: CYCLES).
    #[arg(long, env = "CORRAL_ENGINE", value_name = "E", value_parser = parse_engine)]
    engine: Option<Engine>,
    /// Image format, e.g. PNG, JPEG, OPEN_EXR, TIFF (default: the scene's own).
    #[arg(long, env = "CORRAL_FORMAT", value_name = "F", value_parser = parse_format)]
    format: Option<ImageFormat>,
    /// The farm's scenes folder as seen from here (default: what `corral up` announces;
    /// for a farm of separate machines, the current folder).
    #[arg(long, env = "CORRAL_SCENES", value_name = "DIR")]
    scenes: Option<PathBuf>,
    /// Follow the job with a progress bar until it ends; the exit status tells how.
    #[arg(long)]
    wait: bool,
    /// Print the job as JSON (with --wait: the ended job, and no progress bar).
    #[arg(long)]
    json: bool,
    /// Pack the scene with every file it uses and upload it (the default when the
    /// server is not on this machine and --scenes is not given).
    #[arg(long)]
    upload: bool,
    /// Upload even if files the scene uses are missing (they stay missing on the farm).
    #[arg(long)]
    allow_missing: bool,
    /// With --wait: download each frame here as it is rendered (default for uploaded
    /// scenes: `./JOBID/` in the current folder).
    #[arg(long, value_name = "DIR", requires = "wait")]
    download: Option<PathBuf>,
    /// Blender, used to read the scene's frame range when --frames is not given and to
    /// list the files an uploaded scene uses.
    #[arg(long, env = "CORRAL_BLENDER", default_value = "blender")]
    blender: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

/// True when every address of the farm is this machine (`localhost`, `127.x`, `::1`):
/// a farm whose nodes can read the scene where it lies.
fn on_loopback(client: &OrchestratorClient) -> bool {
    client.bases().iter().all(|base| {
        let Some(host) = reqwest::Url::parse(base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
        else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    s.to_ascii_uppercase().parse()
}

fn parse_format(s: &str) -> Result<ImageFormat, String> {
    s.to_ascii_uppercase().parse()
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect()?;
    // A missing file is the likeliest mistake: say so before anything else.
    if !args.scene.exists() {
        anyhow::bail!("scene file `{}` not found", args.scene.display());
    }
    if !args.scene.is_file() {
        anyhow::bail!("`{}` is not a file", args.scene.display());
    }
    if let Some(dir) = &args.download {
        if dir.exists() && !dir.is_dir() {
            anyhow::bail!("--download `{}` is not a folder", dir.display());
        }
    }
    // Asking the server first also tells at once when it cannot be reached.
    let farm = client
        .local_farm()
        .await
        .map_err(|e| explain(e, client.base()))?;
    let uploading = args.upload || (args.scenes.is_none() && !on_loopback(&client));
    // The scene's own range, and its frame rate for the preview video, read by Blender.
    let read_range = |path: PathBuf| {
        let blender = args.blender.clone();
        async move {
            match args.frames {
                Some(range) => Ok((range, None)),
                None => {
                    let info = scene::read_scene(&blender, &path)
                        .await
                        .map_err(terminal_safe)?;
                    anyhow::Ok((info.range, info.fps))
                }
            }
        }
    };
    let output = match &args.output {
        None => None,
        Some(dir) => Some(
            job_output(dir, farm.as_ref().map(|f| Path::new(&f.output))).map_err(terminal_safe)?,
        ),
    };
    let mut request = SubmitJob {
        scene: None,
        from: None,
        to: None,
        chunk_size: args.batch_size,
        preview_first: args.preview_first.then_some(true),
        priority: args.priority,
        engine: args.engine.map(|e| e.blender_name().to_string()),
        format: args.format.map(|f| f.blender_name().to_string()),
        output,
        fps: None,
        manifest: None,
    };
    let label = if uploading {
        let (range, fps) = read_range(args.scene.clone()).await?;
        (request.from, request.to, request.fps) = (Some(range.from()), Some(range.to()), fps);
        let packed = pack::pack(&args.blender, &args.scene)
            .await
            .map_err(terminal_safe)?;
        if !packed.missing.is_empty() {
            for m in &packed.missing {
                eprintln!(
                    "missing: {} ({}, named by {})",
                    for_terminal(&m.path),
                    m.kind,
                    for_terminal(&m.named_by.display().to_string())
                );
            }
            let n = packed.missing.len() as u64;
            if !args.allow_missing {
                anyhow::bail!(
                    "{n} file{} the scene uses {} missing; nothing was uploaded (fix, or pass --allow-missing to render without {})",
                    plural(n),
                    if n == 1 { "is" } else { "are" },
                    if n == 1 { "it" } else { "them" }
                );
            }
        }
        let sent = upload::upload(&client, &packed, args.json).await?;
        if !args.json {
            eprintln!(
                "Uploaded {} in {} blob{}; manifest {}",
                upload::bytes_text(sent.uploaded_bytes),
                sent.uploaded_blobs,
                plural(sent.uploaded_blobs as u64),
                sent.manifest
            );
        }
        request.manifest = Some(sent.manifest.to_string());
        packed.root.clone()
    } else {
        let (root, origin) = match (&args.scenes, &farm) {
            (Some(dir), _) => (dir.clone(), "--scenes".to_string()),
            (None, Some(farm)) => (
                PathBuf::from(&farm.scenes),
                "the folder `corral up --scenes` serves".to_string(),
            ),
            (None, None) => (
                std::env::current_dir().context("cannot read the current folder")?,
                "the current folder; --scenes names another".to_string(),
            ),
        };
        // These errors quote the farm's folders (from the server) and Blender's words.
        let scene = scene::locate(&args.scene, &root, &origin).map_err(terminal_safe)?;
        let (range, fps) = read_range(scene.path.clone()).await?;
        (request.from, request.to, request.fps) = (Some(range.from()), Some(range.to()), fps);
        request.scene = Some(scene.relative.clone());
        scene.relative
    };
    let job = client
        .submit(&request)
        .await
        .map_err(|e| explain(e, client.base()))?;
    let id = job.id.to_string();
    if !args.wait {
        if args.json {
            print_json(&job)?;
        } else {
            println!("{id}");
            let fetch = if uploading {
                format!(
                    "; its frames: corral fetch {id}{}",
                    args.server.flag(&client)
                )
            } else {
                String::new()
            };
            eprintln!(
                "Submitted {}: frames {}-{}, {}. Follow it: corral status {id} --watch{}{fetch}",
                for_terminal(&label),
                job.from,
                job.to,
                tasks_text(job.tasks_total, job.chunk_size),
                args.server.flag(&client)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Uploaded scenes' frames are only on the farm: they come back by default.
    let download_dir = match (&args.download, uploading) {
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => Some(PathBuf::from(&id)),
        (None, false) => None,
    };
    let mut downloader = match &download_dir {
        Some(dir) => Some(Downloader::new(&client, &id, dir)?),
        None => None,
    };
    if !args.json {
        println!(
            "Rendering {} · frames {}-{} · {} · job {id}",
            for_terminal(&label),
            job.from,
            job.to,
            tasks_text(job.tasks_total, job.chunk_size)
        );
    }
    let detail = fetch_job(&client, &id).await?;
    wait_for(
        &client,
        &args.server,
        detail,
        args.json,
        downloader.as_mut(),
    )
    .await
}

/// `1 task` or `4 tasks of up to 5 frames`.
fn tasks_text(tasks: u64, chunk: Option<u64>) -> String {
    match (tasks, chunk) {
        (1, Some(_)) => "1 task".into(),
        (tasks, Some(chunk)) => format!("{tasks} tasks of up to {chunk} frame{}", plural(chunk)),
        (_, None) => "tasks sized by the farm".into(),
    }
}

/// The job's output pattern: `DIR/frame_####` with DIR relative to the farm's output folder
/// (an absolute DIR inside the local farm's output folder is made relative to it).
fn job_output(dir: &Path, farm_output: Option<&Path>) -> anyhow::Result<String> {
    let relative = if dir.is_absolute() {
        let inside = farm_output.and_then(|root| {
            let root = root.canonicalize().ok()?;
            let dir = normalize(dir);
            dir.strip_prefix(&root).ok().map(Path::to_path_buf)
        });
        inside.ok_or_else(|| {
            anyhow!(
                "--output `{}` must be a folder inside the farm's output folder{}",
                dir.display(),
                farm_output
                    .map(|o| format!(" `{}`", o.display()))
                    .unwrap_or_default()
            )
        })?
    } else {
        dir.to_path_buf()
    };
    let relative = relative
        .to_str()
        .ok_or_else(|| anyhow!("--output `{}` is not UTF-8", dir.display()))?
        .trim_end_matches('/');
    if relative.is_empty() {
        anyhow::bail!(
            "--output must name a folder inside the farm's output folder, not the folder itself"
        );
    }
    Ok(format!("{relative}/frame_####"))
}

/// `dir` with its existing prefix resolved (symbolic links) and the rest kept, so a folder
/// that does not exist yet can still be compared with the canonical output folder.
fn normalize(dir: &Path) -> PathBuf {
    let mut existing = dir.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return dir.to_path_buf(),
        }
    }
    let mut path = existing.canonicalize().unwrap_or(existing);
    for name in rest.iter().rev() {
        path.push(name);
    }
    path
}

/// Follows a job to its end (or Ctrl-C) and reports; the exit status says how it ended.
async fn wait_for(
    client: &OrchestratorClient,
    server: &ServerArgs,
    job: JobDetail,
    json: bool,
    mut downloads: Option<&mut Downloader>,
) -> anyhow::Result<ExitCode> {
    let id = job.job.id.to_string();
    match follow(client, job, json, downloads.as_deref_mut()).await? {
        Followed::Ended => {
            let job = fetch_full_job(client, &id).await?;
            // Frames whose event was missed, or whose download failed, come now.
            if let Some(d) = downloads {
                d.sweep().await?;
                if json {
                    eprintln!("{}", d.summary());
                } else {
                    println!("{}", d.summary());
                }
            }
            if json {
                print_json(&job)?;
                Ok(end_code(job.job.state))
            } else {
                Ok(report_end(&job))
            }
        }
        Followed::Detached(job) => {
            let flag = server.flag(client);
            eprintln!(
                "\nStopped following job {id} ({}/{} frames); it keeps rendering on the farm.\n  \
                 follow it:  corral status {id} --watch{flag}\n  \
                 cancel it:  corral cancel {id}{flag}",
                job.job.frames_done, job.job.frames_total
            );
            Ok(ExitCode::from(crate::exit::INTERRUPTED))
        }
    }
}

fn end_code(state: JobState) -> ExitCode {
    match state {
        JobState::Failed => ExitCode::from(crate::exit::JOB_FAILED),
        JobState::Cancelled => ExitCode::from(crate::exit::JOB_CANCELLED),
        _ => ExitCode::SUCCESS,
    }
}

// ---- status --------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's id (as `corral submit` and `corral jobs` print it).
    job: String,
    /// Follow the job with a progress bar until it ends; the exit status tells how.
    #[arg(long)]
    watch: bool,
    /// Print the job, its tasks and frames as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect()?;
    let detail = fetch_job(&client, args.job.trim()).await?;
    if args.watch && !detail.job.state.is_terminal() {
        return wait_for(&client, &args.server, detail, args.json, None).await;
    }
    let job = fetch_full_job(&client, args.job.trim()).await?;
    if args.json {
        print_json(&job)?;
    } else {
        print_status(&job);
    }
    // `--watch` of a job that had already ended says how it ended, as following would.
    if args.watch {
        return Ok(end_code(job.job.state));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(job: &FullJob) {
    let s = &job.job;
    let state = styled_state(s.state);
    println!("Job {}  {state}", s.id);
    println!(
        "  scene     {}",
        for_terminal(s.scene.as_deref().unwrap_or("(the nodes' default scene)"))
    );
    let format = s
        .format
        .map(|f| f.blender_name().to_string())
        .unwrap_or_else(|| "the scene's format".into());
    println!(
        "  frames    {}-{} in {}, {}, {format}, priority {}",
        s.from,
        s.to,
        s.chunk_size.map_or_else(
            || "tasks sized by the farm".to_string(),
            |c| format!("tasks of {c}")
        ),
        s.engine.blender_name(),
        s.priority
    );
    let percent = s.frames_done * 100 / s.frames_total.max(1);
    let mut progress = format!(
        "  progress  {}/{} frames ({percent}%), {}/{} tasks",
        s.frames_done, s.frames_total, s.tasks_done, s.tasks_total
    );
    if let Some(eta) = s.eta_seconds {
        progress.push_str(&format!(
            ", about {} left",
            duration(Duration::from_secs(eta))
        ));
    }
    println!("{progress}");
    let mut times = format!("  submitted {}", age(s.submitted_at));
    if let Some(end) = s.finished_at {
        times.push_str(&format!(
            ", ended after {}",
            duration(between(s.submitted_at, end))
        ));
    }
    println!("{times}");
    if let Some(failure) = &s.failure {
        println!("  failure   {}", for_terminal(failure));
    }
    print_frame_folders(job, false);
    if job.tasks.is_empty() {
        return;
    }
    println!();
    let mut table = Table::new(&[
        "TASK",
        "FRAMES",
        "STATE",
        "NODE",
        "FAILS",
        "TIME",
        "LAST FAILURE",
    ])
    .flexible(6)
    .right(&[0, 4]);
    for t in &job.tasks {
        let time = match (t.started_at, t.finished_at) {
            (Some(start), Some(end)) => duration(between(start, end)),
            (Some(start), None) if t.state == TaskStateKind::Running => {
                duration(between(start, chrono::Utc::now()))
            }
            _ => String::new(),
        };
        table.row(vec![
            t.index.to_string(),
            format!("{}-{}", t.from, t.to),
            t.state.as_str().to_string(),
            t.node.as_ref().map(ToString::to_string).unwrap_or_default(),
            t.attempts.to_string(),
            time,
            t.failure.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", table.render(terminal_width()));
}

fn styled_state(state: JobState) -> console::StyledObject<&'static str> {
    let text = console::style(state.as_str()).bold();
    match state {
        JobState::Completed => text.green(),
        JobState::Failed => text.red(),
        JobState::Cancelled | JobState::Paused => text.yellow(),
        JobState::Queued | JobState::Running => text.cyan(),
    }
}

// ---- jobs ----------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state: queued, running, paused, completed, failed, cancelled.
    #[arg(long, value_parser = parse_state)]
    state: Option<JobState>,
    /// Most jobs listed (newest first).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=500))]
    limit: u64,
    /// Print a JSON list of jobs.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

fn parse_state(s: &str) -> Result<JobState, String> {
    JobState::parse(s).ok_or_else(|| {
        format!("`{s}` is not a job state (queued, running, paused, completed, failed, cancelled)")
    })
}

pub async fn jobs(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect()?;
    let page = client
        .jobs(args.state, 0, args.limit)
        .await
        .map_err(|e| explain(e, client.base()))?;
    if args.json {
        print_json(&page.jobs)?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.jobs.is_empty() {
        println!("No jobs yet. Render a scene: corral submit scene.blend --wait");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "DONE",
        "FRAMES",
        "SUBMITTED",
        "TIME",
        "SCENE",
    ])
    .flexible(6)
    .right(&[2]);
    for j in &page.jobs {
        let time = match (j.started_at, j.finished_at) {
            (_, Some(end)) => duration(between(j.submitted_at, end)),
            (Some(_), None) => j
                .eta_seconds
                .map(|eta| format!("{} left", duration(Duration::from_secs(eta))))
                .unwrap_or_default(),
            (None, None) => String::new(),
        };
        table.row(vec![
            j.id.to_string(),
            j.state.as_str().to_string(),
            format!("{}/{}", j.frames_done, j.frames_total),
            format!("{}-{}", j.from, j.to),
            age(j.submitted_at),
            time,
            j.scene.clone().unwrap_or_else(|| "(default)".into()),
        ]);
    }
    print!("{}", table.render(terminal_width()));
    if page.total > page.jobs.len() as u64 {
        println!(
            "({} of {} jobs; --limit shows more)",
            page.jobs.len(),
            page.total
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---- nodes ---------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Print a JSON list of nodes.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn nodes(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect()?;
    let nodes = client
        .nodes()
        .await
        .map_err(|e| explain(e, client.base()))?;
    if args.json {
        print_json(&nodes)?;
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        println!(
            "No render nodes yet. Add one: corral node --orchestrator {}",
            client.base()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["NODE", "STATE", "BUSY", "BLENDER", "LAST SEEN", "HOST"])
        .flexible(5)
        .right(&[2]);
    for n in &nodes {
        let state = match (n.state, n.draining) {
            (NodeState::Up, false) => "up",
            (NodeState::Up, true) => "draining",
            (NodeState::Down, _) => "down",
        };
        table.row(vec![
            n.url.clone(),
            state.to_string(),
            format!("{}/{}", n.running_tasks.len(), n.slots),
            n.blender_version.clone().unwrap_or_default(),
            n.last_seen.map(age).unwrap_or_else(|| "never".into()),
            n.hostname.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", table.render(terminal_width()));
    Ok(ExitCode::SUCCESS)
}

// ---- cancel --------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job's id.
    job: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect()?;
    let id = args.job.trim();
    let job = client.cancel(id).await.map_err(|e| match e {
        ClientError::NotFound { .. } => anyhow!(
            "no job `{}` on the server at {}",
            for_terminal(id),
            client.base()
        ),
        e => explain(e, client.base()),
    })?;
    let id = for_terminal(id);
    match job.state {
        JobState::Completed | JobState::Failed => println!(
            "Job {id} had already ended ({}); nothing to cancel.",
            job.state.as_str()
        ),
        _ => println!(
            "Cancelled job {id}: {} of {} frames had rendered.",
            job.frames_done, job.frames_total
        ),
    }
    Ok(ExitCode::SUCCESS)
}

// ---- logs ----------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job's id.
    job: String,
    /// Only the task that renders this frame.
    #[arg(long, value_name = "N")]
    frame: Option<i64>,
    /// Print the tasks with their log lines as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect()?;
    let job = fetch_full_job(&client, args.job.trim()).await?;
    let tasks: Vec<_> = match args.frame {
        None => job.tasks.iter().collect(),
        Some(frame) => {
            let found: Vec<_> = job
                .tasks
                .iter()
                .filter(|t| (t.from..=t.to).contains(&frame))
                .collect();
            if found.is_empty() {
                anyhow::bail!(
                    "frame {frame} is not in job {} (frames {}-{})",
                    job.job.id,
                    job.job.from,
                    job.job.to
                );
            }
            found
        }
    };
    if args.json {
        print_json(&tasks)?;
        return Ok(ExitCode::SUCCESS);
    }
    for task in tasks {
        let mut header = format!(
            "── frames {}-{} · {}",
            task.from,
            task.to,
            task.state.as_str()
        );
        if let Some(node) = &task.node {
            header.push_str(&format!(" on {}", for_terminal(node.as_str())));
        }
        if task.attempts > 0 {
            header.push_str(&format!(
                " · {} failed attempt{}",
                task.attempts,
                plural(u64::from(task.attempts))
            ));
        }
        println!("{}", console::style(header).bold());
        if let Some(failure) = &task.failure {
            println!("{}", for_terminal(failure));
        }
        if task.log_tail.is_empty() {
            let why = match task.state {
                TaskStateKind::Queued => "(no log yet: the task is waiting for a node)",
                TaskStateKind::Running => "(no log yet: the server gets it when the task ends)",
                _ => "(no log lines)",
            };
            println!("{why}");
        }
        for line in &task.log_tail {
            println!("{}", for_terminal(line));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_farm_on_this_machine_skips_the_upload() {
        let on = |bases: &[&str]| {
            let bases: Vec<String> = bases.iter().map(|b| b.to_string()).collect();
            on_loopback(&OrchestratorClient::with_bases(&bases).unwrap())
        };
        assert!(on(&["http://127.0.0.1:4000"]));
        assert!(on(&["http://localhost:4000", "http://[::1]:4000"]));
        assert!(!on(&["http://farm:4000"]));
        assert!(!on(&["http://0.0.0.0:4000"]));
        assert!(!on(&["http://127.0.0.1:4000", "http://10.0.0.5:4000"]));
    }

    #[test]
    fn outputs_become_patterns_inside_the_output_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(
            job_output(Path::new("shot1"), None).unwrap(),
            "shot1/frame_####"
        );
        assert_eq!(
            job_output(&root.join("a/b"), Some(&root)).unwrap(),
            "a/b/frame_####"
        );
        assert!(job_output(Path::new("/elsewhere"), Some(&root)).is_err());
        assert!(job_output(Path::new("/elsewhere"), None).is_err());
        assert!(job_output(&root, Some(&root)).is_err());
    }
}
