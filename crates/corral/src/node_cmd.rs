//! `corral node`: flags, start-up checks, and signal handling for a render node.

use anyhow::{bail, Context};
use clap::Args;
use corral_client::Pins;
use corral_core::tls::{Fingerprint, JoinString};
use corral_http::tls::TlsIdentity;
use corral_node::{Node, NodeConfig, RenderMode, ShutdownPolicy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const EXAMPLES: &str = "\
Examples:
  corral node --blend scene.blend --output ./frames
  corral node --scenes /srv/scenes --output /srv/frames --slots 2 --threads 1
  curl -X POST localhost:3000/job -H 'Content-Type: application/json' -d '{\"from\": 1, \"to\": 20}'";

/// Defaults shared by `corral node`'s flags and `corral up`'s in-process nodes.
const DEFAULT_MAX_FRAMES: u64 = 10_000;
const DEFAULT_MAX_QUEUED: u64 = 1000;
const DEFAULT_KEEP_JOBS: u64 = 1000;
const DEFAULT_RECYCLE_AFTER_FRAMES: u64 = 500;
const DEFAULT_STALL_TIMEOUT: u64 = 600;
const DEFAULT_CACHE_SIZE: &str = "20G";

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, env = "CORRAL_LISTEN", default_value = "0.0.0.0:3000")]
    listen: SocketAddr,
    /// Blender executable.
    #[arg(long, env = "CORRAL_BLENDER", default_value = "blender")]
    blender: PathBuf,
    /// Scene rendered when a job names none.
    #[arg(long, env = "CORRAL_BLEND")]
    blend: Option<PathBuf>,
    /// Folder that per-job `scene` paths are relative to and confined to.
    #[arg(long, env = "CORRAL_SCENES")]
    scenes: Option<PathBuf>,
    /// Folder rendered frames are written to.
    #[arg(long, env = "CORRAL_OUTPUT", default_value = "output")]
    output: PathBuf,
    /// Folder for the node's own files (one Blender log per job).
    #[arg(long, env = "CORRAL_DATA", default_value = "corral-data/node")]
    data: PathBuf,
    /// Blender processes run at once; further jobs wait in a FIFO queue.
    #[arg(long, env = "CORRAL_SLOTS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    slots: u16,
    /// Blender render threads (`-t`) for jobs that name none; 0 uses every core.
    #[arg(long, env = "CORRAL_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1024))]
    threads: u32,
    /// Most frames one job may ask for.
    #[arg(long, env = "CORRAL_MAX_FRAMES", default_value_t = DEFAULT_MAX_FRAMES, value_parser = clap::value_parser!(u64).range(1..=2_097_149))]
    max_frames: u64,
    /// Most jobs waiting in the queue; more are refused with 503.
    #[arg(long, env = "CORRAL_MAX_QUEUED", default_value_t = DEFAULT_MAX_QUEUED, value_parser = clap::value_parser!(u64).range(1..))]
    max_queued: u64,
    /// Ended jobs remembered, with their logs; the oldest are forgotten beyond this.
    #[arg(long, env = "CORRAL_KEEP_JOBS", default_value_t = DEFAULT_KEEP_JOBS, value_parser = clap::value_parser!(u64).range(1..))]
    keep_jobs: u64,
    /// On SIGTERM/SIGINT: `cancel` kills running renders at once, `finish` lets them end.
    #[arg(long, env = "CORRAL_ON_SHUTDOWN", default_value = "cancel", value_parser = parse_policy)]
    on_shutdown: ShutdownPolicy,
    /// `warm`: a Blender per slot, started with the node and kept between tasks (no start-up
    /// per task); `cold`: a Blender started for each task.
    #[arg(long, env = "CORRAL_RENDER_MODE", default_value = "warm", value_parser = parse_mode)]
    render_mode: RenderMode,
    /// Warm mode: replace a worker after it rendered this many frames (0: never).
    #[arg(long, env = "CORRAL_RECYCLE_AFTER_FRAMES", default_value_t = DEFAULT_RECYCLE_AFTER_FRAMES)]
    recycle_after_frames: u64,
    /// Warm mode: replace a worker whose resident memory passes this many MB after a task
    /// (0: no limit).
    #[arg(long, env = "CORRAL_RECYCLE_ABOVE_MB", default_value_t = 0)]
    recycle_above_mb: u64,
    /// Kill a render, and fail its job, when Blender prints nothing for this many seconds
    /// (0: never).
    #[arg(long, env = "CORRAL_STALL_TIMEOUT", default_value_t = DEFAULT_STALL_TIMEOUT)]
    stall_timeout: u64,
    /// Orchestrator to join: the `corral://HOST:PORT?token=...&fp=...` join string the
    /// farm prints (its address, join token and certificate fingerprint), or
    /// `http://HOST:4000`. The node registers and heartbeats there, fetches uploaded
    /// scenes from it and uploads frames to it. Several addresses of one farm
    /// (orchestrators sharing a database), repeated or comma-separated, are tried in turn.
    // Read as text and parsed later: clap would print a value it refuses, token included.
    #[arg(
        long,
        env = "CORRAL_ORCHESTRATOR",
        value_delimiter = ' ',
        hide_env_values = true
    )]
    orchestrator: Vec<String>,
    /// URL the orchestrator reaches this node at (default: this host's name and the port
    /// listened on, or the listen address when it names one).
    #[arg(long, env = "CORRAL_ADVERTISE", value_parser = parse_url)]
    advertise: Option<String>,
    /// Most bytes of uploaded scenes' files kept in DATA/cache (`500M`, `20G`, `1T`: powers
    /// of 1024; a plain number is bytes); the least recently used go first, never one a
    /// render uses.
    #[arg(long, env = "CORRAL_CACHE_SIZE", default_value = DEFAULT_CACHE_SIZE, value_parser = parse_size)]
    cache_size: u64,
    /// The farm's join token (`corral_...`, printed by the orchestrator's first start or
    /// made with `corral token create join`). With it the node joins with a secret of its
    /// own (kept in DATA/node-secret) and then answers only its orchestrator.
    #[arg(
        long,
        env = "CORRAL_TOKEN",
        value_name = "JOIN_TOKEN",
        requires = "orchestrator"
    )]
    token: Option<String>,
    /// The SHA-256 fingerprint of the orchestrator's certificate, for an `https://`
    /// --orchestrator (a join string carries it).
    #[arg(long, env = "CORRAL_FINGERPRINT", value_name = "SHA256", value_parser = crate::client_cmds::parse_fingerprint)]
    fingerprint: Option<Fingerprint>,
    /// Serve this node's API over plain HTTP even off loopback after joining with a token
    /// (by default it then serves HTTPS, with a certificate made in DATA/tls whose
    /// fingerprint it registers, so the orchestrator accepts only this node's).
    #[arg(long, env = "CORRAL_NO_TLS")]
    no_tls: bool,
}

/// One `--orchestrator`: its addresses, and what a join string adds.
struct Farm {
    bases: Vec<String>,
    token: Option<String>,
    pins: Vec<Fingerprint>,
}

/// One `--orchestrator`; an error never repeats the value (a join string holds a token).
fn parse_orchestrator(s: &str) -> Result<Farm, String> {
    if JoinString::is_join_string(s) {
        let join = JoinString::parse(s)?;
        return Ok(Farm {
            bases: join.bases(),
            token: join.token,
            pins: join.fingerprints,
        });
    }
    let bases = s
        .split(',')
        .filter(|b| !b.trim().is_empty())
        .map(parse_url)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Farm {
        bases,
        token: None,
        pins: Vec::new(),
    })
}

/// Everything the node knows of the farm it joins.
struct Joining {
    bases: Vec<String>,
    /// The join token: --token, else the one in the join string.
    token: Option<String>,
    pins: Pins,
}

impl NodeArgs {
    /// The farm to join, from every --orchestrator, --token and --fingerprint.
    fn joining(&self) -> anyhow::Result<Option<Joining>> {
        if self.orchestrator.is_empty() {
            return Ok(None);
        }
        let mut pins: Vec<Fingerprint> = self.fingerprint.into_iter().collect();
        let mut bases = Vec::new();
        let mut token = self.token.clone();
        for text in &self.orchestrator {
            let farm =
                parse_orchestrator(text).map_err(|why| anyhow::anyhow!("--orchestrator: {why}"))?;
            bases.extend(farm.bases.iter().cloned());
            pins.extend(farm.pins.iter().copied());
            if token.is_none() {
                token = farm.token.clone();
            }
        }
        Ok(Some(Joining {
            bases,
            token,
            pins: Pins(pins),
        }))
    }

    /// Off loopback, a node that joins with a token serves HTTPS (unless --no-tls): its
    /// secret and the farm's scenes would otherwise cross the network in the clear.
    fn serves_tls(&self, joining: Option<&Joining>) -> bool {
        let joins_with_token = joining.is_some_and(|j| j.token.is_some());
        joins_with_token && !self.no_tls && !self.listen.ip().is_loopback()
    }

    /// A node of `corral up`'s local farm: what `corral node --listen 127.0.0.1:0 --scenes
    /// SCENES --output OUTPUT --data DATA --threads THREADS` would run, with one slot (and
    /// `CORRAL_RENDER_MODE`, when set, as its render mode).
    pub fn local(scenes: PathBuf, output: PathBuf, data: PathBuf, threads: u32) -> Self {
        NodeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            blender: PathBuf::from("blender"),
            blend: None,
            scenes: Some(scenes),
            output,
            data,
            slots: 1,
            threads,
            max_frames: DEFAULT_MAX_FRAMES,
            max_queued: DEFAULT_MAX_QUEUED,
            keep_jobs: DEFAULT_KEEP_JOBS,
            on_shutdown: ShutdownPolicy::Cancel,
            render_mode: std::env::var("CORRAL_RENDER_MODE")
                .ok()
                .and_then(|mode| mode.parse().ok())
                .unwrap_or_default(),
            recycle_after_frames: DEFAULT_RECYCLE_AFTER_FRAMES,
            recycle_above_mb: 0,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            orchestrator: Vec::new(),
            advertise: None,
            cache_size: parse_size(DEFAULT_CACHE_SIZE).unwrap_or(u64::MAX),
            token: None,
            fingerprint: None,
            no_tls: false,
        }
    }
}

/// A size in bytes: a number with an optional `K`, `M`, `G` or `T` (powers of 1024, an
/// `iB` or `B` after it allowed, any case).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size (a number, then K, M, G or T)"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("`{s}`: the unit must be K, M, G or T")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_url(s: &str) -> Result<String, String> {
    corral_core::orchestrator_api::validate_node_url("url", s).map_err(|e| e.message)
}

/// `SCHEME://ADDR` for a specific listen address, `SCHEME://HOSTNAME:PORT` for a wildcard
/// one.
fn default_advertise(addr: SocketAddr, scheme: &str) -> String {
    if addr.ip().is_unspecified() {
        let host = crate::orchestrator_cmd::hostname().unwrap_or_else(|| "localhost".into());
        format!("{scheme}://{host}:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

/// Removes this node's `.corral-partial-{job}` folders under `output` (at most a few
/// levels deep): they hold what Blender wrote for jobs that a crash or SIGKILL cut short,
/// never a final frame. A folder is this node's when its job has a log in `logs` (written
/// before the folder is made). The output folder is often shared by the whole farm: the
/// partial folders of other nodes' renders in flight are theirs to remove, and removing
/// one fails that render (found by the fault soak: a restarted node failed a render on
/// another node).
fn sweep_partial_folders(output: &Path, logs: &Path) {
    fn walk(dir: &Path, logs: &Path, depth: u32) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(job) = name.strip_prefix(".corral-partial-") {
                if !logs.join(format!("{job}.log")).is_file() {
                    continue;
                }
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a partial folder left by an earlier run")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove partial folder")
                    }
                }
            } else if depth > 0 {
                walk(&path, logs, depth - 1);
            }
        }
    }
    walk(output, logs, 4);
}

/// How often a node re-announces itself to its orchestrator.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Registers with the orchestrator, then again every [`HEARTBEAT`], so an orchestrator
/// that restarted or lost its database learns of the node again. Logs only changes.
/// With a join token (`join`), the first registration sends the node's `secret` under
/// it and the answer's credential is used for every later call; a credential the
/// orchestrator no longer takes (401/403: revoked, or a database started afresh) sends
/// the node back to the join token at once.
async fn register_loop(
    client: corral_client::OrchestratorClient,
    advertise: String,
    join: Option<String>,
    secret: Option<String>,
    tls: Option<Fingerprint>,
) {
    let mut registered = None;
    let mut has_credential = false;
    loop {
        let ok = match client
            .register_node(&advertise, secret.as_deref(), tls.as_ref())
            .await
        {
            Ok(view) => {
                if let Some(credential) = view.credential {
                    client.set_token(Some(credential));
                    has_credential = true;
                }
                true
            }
            Err(corral_client::ClientError::Status {
                status: 401 | 403, ..
            }) if has_credential => {
                tracing::warn!(
                    orchestrator = client.base(),
                    "the node's credential was refused; joining again with the join token"
                );
                client.set_token(join.clone());
                has_credential = false;
                continue;
            }
            Err(e) => {
                if registered != Some(false) {
                    tracing::warn!(orchestrator = client.base(), error = %e, "cannot register; will retry");
                }
                false
            }
        };
        if ok && registered != Some(true) {
            tracing::info!(orchestrator = client.base(), advertise = %advertise, "registered with the orchestrator");
        }
        registered = Some(ok);
        tokio::time::sleep(HEARTBEAT).await;
    }
}

fn parse_mode(s: &str) -> Result<RenderMode, String> {
    s.parse()
}

fn parse_policy(s: &str) -> Result<ShutdownPolicy, String> {
    match s {
        "cancel" => Ok(ShutdownPolicy::Cancel),
        "finish" => Ok(ShutdownPolicy::Finish),
        _ => Err(format!("`{s}` is not `cancel` or `finish`")),
    }
}

/// Creates `dir` if needed and returns its canonical path.
pub fn prepare_dir(dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the {what} folder `{}`", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("cannot open the {what} folder `{}`", dir.display()))
}

/// Checks the folders and files `args` name, creates the output and data folders, removes
/// partial folders an earlier run left, and returns the node's configuration.
pub fn resolve_config(
    args: &NodeArgs,
    blender: corral_blender::BlenderInfo,
) -> anyhow::Result<NodeConfig> {
    let scenes_root = match &args.scenes {
        Some(dir) if !dir.is_dir() => bail!("--scenes `{}` is not a folder", dir.display()),
        Some(dir) => Some(
            dir.canonicalize()
                .with_context(|| format!("cannot open the scenes folder `{}`", dir.display()))?,
        ),
        None => None,
    };
    let default_scene = match &args.blend {
        Some(blend) if !blend.is_file() => {
            bail!("--blend `{}` is not a file", blend.display())
        }
        Some(blend) => {
            corral_node::check_blend_file(blend)
                .map_err(|why| anyhow::anyhow!("--blend `{}` {why}", blend.display()))?;
            Some(
                blend
                    .canonicalize()
                    .with_context(|| format!("cannot open `{}`", blend.display()))?,
            )
        }
        None => None,
    };
    let output_dir = prepare_dir(&args.output, "output")?;
    let data_dir = prepare_dir(&args.data, "data")?;
    let logs_dir = prepare_dir(&data_dir.join("logs"), "log")?;
    sweep_partial_folders(&output_dir, &logs_dir);
    let joining = args.joining()?;
    let orchestrator = match &joining {
        None => None,
        Some(joining) => {
            prepare_dir(&data_dir.join("cache"), "cache")?;
            let client = corral_client::OrchestratorClient::pinned(&joining.bases, &joining.pins)?;
            client.set_token(joining.token.clone());
            Some(client)
        }
    };
    let secret = match joining.and_then(|j| j.token) {
        Some(_) => Some(node_secret(&data_dir)?),
        None => None,
    };
    let warm_driver = match args.render_mode {
        RenderMode::Warm => Some(corral_blender::warm::write_driver(&data_dir).with_context(
            || {
                format!(
                    "cannot write the warm workers' driver script into `{}`",
                    data_dir.display()
                )
            },
        )?),
        RenderMode::Cold => None,
    };
    Ok(NodeConfig {
        blender: blender.path,
        blender_version: blender.version,
        default_scene,
        scenes_root,
        output_dir,
        data_dir,
        slots: usize::from(args.slots),
        threads: args.threads,
        max_frames: args.max_frames,
        max_queued: usize::try_from(args.max_queued).unwrap_or(usize::MAX),
        keep_jobs: usize::try_from(args.keep_jobs).unwrap_or(usize::MAX),
        on_shutdown: args.on_shutdown,
        max_wait: Duration::from_secs(120),
        render_mode: args.render_mode,
        warm_driver,
        recycle_after_frames: args.recycle_after_frames,
        recycle_above_mb: args.recycle_above_mb,
        stall_timeout: (args.stall_timeout > 0).then(|| Duration::from_secs(args.stall_timeout)),
        orchestrator,
        cache_size: args.cache_size,
        secret,
    })
}

/// The secret this node joins with: read from DATA/node-secret, or made (32 random bytes,
/// base64url) and written there readable by this user only.
fn node_secret(data_dir: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("node-secret");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim().to_string();
            corral_core::orchestrator_api::validate_node_secret("node-secret", &secret)
                .map_err(|e| anyhow::anyhow!("`{}` {}", path.display(), e.message))?;
            return Ok(secret);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    }
    let secret =
        corral_orchestrator::auth::random_secret().context("cannot make the node's secret")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(secret)
}

/// How often the node kills and reaps processes handed to it as a subreaper.
const ORPHAN_SWEEP: Duration = Duration::from_secs(2);

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    // A helper process of Blender's whose supervisor was killed is handed to the node
    // rather than to init, so it can be ended (see corral_blender::process).
    match corral_blender::process::become_subreaper() {
        Ok(()) => {
            tokio::spawn(async {
                let mut every = tokio::time::interval(ORPHAN_SWEEP);
                loop {
                    every.tick().await;
                    let reaped = tokio::task::spawn_blocking(corral_blender::process::reap_orphans)
                        .await
                        .unwrap_or(0);
                    if reaped > 0 {
                        tracing::info!(processes = reaped, "killed processes Blender left behind");
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot become a child subreaper"),
    }
    let blender = corral_blender::probe_blender(&args.blender, Duration::from_secs(60)).await?;
    let config = resolve_config(&args, blender)?;
    let joining = args.joining()?;
    let serves_tls = args.serves_tls(joining.as_ref());
    // Checked before the node says it listens: scripts take that line for "up".
    if let Some(url) = args
        .advertise
        .as_deref()
        .filter(|u| !u.starts_with("https://"))
    {
        if serves_tls {
            bail!("--advertise `{url}` must be https:// : this node serves HTTPS (--no-tls serves plain HTTP)");
        }
    }
    if args.no_tls
        && joining.as_ref().is_some_and(|j| j.token.is_some())
        && !args.listen.ip().is_loopback()
    {
        tracing::warn!(listen = %args.listen, "--no-tls: this node's secret and the farm's scenes cross the network unencrypted");
    }
    let tls = if serves_tls {
        let dir = config.data_dir.join("tls");
        let names = crate::orchestrator_cmd::certificate_names(args.listen);
        Some(TlsIdentity::load_or_create(&dir, &names).with_context(|| {
            format!("cannot make or read the certificate in `{}`", dir.display())
        })?)
    } else {
        None
    };
    let acceptor = match &tls {
        Some(identity) => Some(identity.acceptor().context("cannot serve TLS")?),
        None => None,
    };
    let fingerprint = tls.as_ref().map(TlsIdentity::fingerprint);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        blender_version = %config.blender_version,
        render_mode = config.render_mode.name(),
        slots = config.slots,
        output = %config.output_dir.display(),
        "node ready"
    );
    // The one line on stdout: scripts and tests read the bound address from it.
    // Signal handlers first, then the line that tells the world the node is up.
    let first_signal = crate::shutdown_signal();
    println!("corral node listening on {scheme}://{addr}");
    let orchestrator = config.orchestrator.clone();
    let secret = config.secret.clone();
    let node = Node::new(config);
    if let Some(client) = orchestrator {
        let advertise = match &args.advertise {
            Some(url) => url.clone(),
            None => default_advertise(addr, scheme),
        };
        let join = joining.and_then(|j| j.token);
        tokio::spawn(register_loop(client, advertise, join, secret, fingerprint));
    }
    // The first signal stops the node gracefully (per --on-shutdown); a second one kills
    // the renders still running, for an operator who will not wait.
    let stopping = node.clone();
    let shutdown = async move {
        first_signal.await;
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            tracing::warn!("second signal: killing the running renders");
            stopping.cancel_running();
        });
    };
    corral_node::serve_tls(node, listener, shutdown, acceptor).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_size, sweep_partial_folders};

    #[test]
    fn sizes_are_read_in_powers_of_1024() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("500mb"), Ok(500 << 20));
        assert_eq!(parse_size("1 T"), Ok(1 << 40));
        for bad in ["", "G", "-1G", "1.5G", "1X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    /// A restarted node removes the partial folders of its own cut-short renders, and
    /// leaves those of other nodes sharing the output folder, which may be rendering.
    #[test]
    fn the_sweep_removes_only_this_nodes_partial_folders() {
        let root = tempfile::tempdir().unwrap();
        let (output, logs) = (root.path().join("out"), root.path().join("logs"));
        let mine = output.join("job-a/.corral-partial-01aa");
        let theirs = output.join("job-a/.corral-partial-01bb");
        for dir in [&mine, &theirs, &logs] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(mine.join("frame_0001.png"), b"half").unwrap();
        std::fs::write(theirs.join("frame_0002.png"), b"half").unwrap();
        std::fs::write(logs.join("01aa.log"), b"").unwrap();
        sweep_partial_folders(&output, &logs);
        assert!(!mine.exists());
        assert!(theirs.join("frame_0002.png").is_file());
    }
}
