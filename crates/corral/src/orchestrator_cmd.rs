//! `corral orchestrator`: flags and start-up of the farm's orchestrator.

use anyhow::Context;
use clap::Args;
use corral_core::orchestrator_api::validate_node_url;
use corral_core::tls::{Fingerprint, JoinString};
use corral_http::tls::TlsIdentity;
use corral_orchestrator::{DatabaseUrl, Orchestrator, OrchestratorConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const EXAMPLES: &str = "\
Examples:
  corral orchestrator --node http://render1:3000 --node http://render2:3000
  CORRAL_NODES=http://render1:3000,http://render2:3000 corral orchestrator
  corral orchestrator            # nodes join with `corral node --orchestrator http://HOST:4000`
  curl -X POST localhost:4000/render -H 'Content-Type: application/json' -d '{\"from\": 1, \"to\": 20}'";

#[derive(Debug, Args)]
pub struct OrchestratorArgs {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, env = "CORRAL_LISTEN", default_value = "0.0.0.0:4000")]
    listen: SocketAddr,
    /// A render node's URL; repeat for more. Nodes can also register themselves.
    #[arg(long = "node", env = "CORRAL_NODES", value_delimiter = ',', value_parser = parse_node_url)]
    nodes: Vec<String>,
    /// Folder for the orchestrator's files: its SQLite database unless --database says
    /// otherwise, and, whatever the database, uploaded scenes' blobs (`blobs/`), frames
    /// nodes upload (`frames/`) and the dashboard's media (`media/`).
    #[arg(long, env = "CORRAL_DATA", default_value = "corral-data/orchestrator")]
    data: PathBuf,
    /// The database: `sqlite:///path/corral.db` (default: corral.db in --data) or
    /// `postgres://user:password@host:5432/db`, which several orchestrators may share.
    #[arg(long, env = "CORRAL_DATABASE", value_name = "URL", value_parser = parse_database)]
    database: Option<DatabaseUrl>,
    /// Frames per task when a job names no chunk size (the tutorial's BATCH_SIZE). Without
    /// it, the farm sizes tasks from the frame time it measures, smaller toward the end.
    #[arg(long, env = "CORRAL_BATCH_SIZE", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: Option<u64>,
    /// Seconds of rendering a task the farm sizes aims at (jobs with no chunk size): long
    /// enough that starting a task is a small part of it, short enough that a job
    /// submitted later gets a slot soon.
    #[arg(long, env = "CORRAL_TASK_LENGTH", default_value_t = corral_core::schedule::TARGET_TASK_MS as u64 / 1000, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    task_length: u64,
    /// Most frames one job may ask for.
    #[arg(long, env = "CORRAL_MAX_FRAMES", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=2_097_149))]
    max_frames: u64,
    /// Most unfinished (queued, running, paused) jobs; more are refused with 503.
    #[arg(long, env = "CORRAL_MAX_JOBS", default_value_t = 10_000)]
    max_jobs: u64,
    /// Attempts a task gets before its job fails.
    #[arg(long, env = "CORRAL_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Failed tasks of one job after which a node gets none of that job's tasks.
    #[arg(long, env = "CORRAL_BLOCKLIST_AFTER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    blocklist_after: u32,
    /// Seconds without an answer after which a node is down and its tasks re-queued.
    #[arg(long, env = "CORRAL_NODE_TIMEOUT", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=3600))]
    node_timeout: u64,
    /// Seconds a running task may go without progress before it counts as failed.
    #[arg(long, env = "CORRAL_STALL_TIMEOUT", default_value_t = 600, value_parser = clap::value_parser!(u64).range(5..=604_800))]
    stall_timeout: u64,
    /// The folder the nodes write frames to, when this machine shares it (an NFS mount, a
    /// Docker volume): the dashboard shows thumbnails and makes preview videos of frames
    /// inside it, and reads nothing outside it.
    #[arg(long, env = "CORRAL_FRAMES", value_name = "DIR")]
    frames: Option<PathBuf>,
    /// FFmpeg, which makes the preview video of a completed job.
    #[arg(
        long,
        env = "CORRAL_FFMPEG",
        default_value = "ffmpeg",
        value_name = "PATH"
    )]
    ffmpeg: PathBuf,
    /// Largest file of an uploaded scene (a blob), or uploaded frame, accepted, in bytes.
    #[arg(long, env = "CORRAL_MAX_BLOB_SIZE", value_name = "BYTES",
          default_value_t = corral_orchestrator::storage::DEFAULT_MAX_BLOB_BYTES)]
    max_blob_size: u64,
    /// How long an uploaded blob (a scene's file or manifest) that no job names is kept
    /// after its last use, then deleted: `7d`, `12h`, `30m`, `0s`. Unfinished uploads are
    /// kept a day, or this long if shorter.
    #[arg(long, env = "CORRAL_BLOB_RETENTION", value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    blob_retention: Duration,
    /// Free space the data folder keeps: an upload that would leave less is refused with
    /// 507 before any byte is written (`1G`, `500M`, `0`).
    #[arg(long, env = "CORRAL_MIN_FREE_SPACE", value_name = "BYTES", default_value = "1G", value_parser = crate::node_cmd::parse_size)]
    min_free_space: u64,
    /// Require tokens even on loopback. Off loopback (0.0.0.0 included) they are
    /// required anyway unless --no-auth; see `corral token`.
    #[arg(long, env = "CORRAL_AUTH", conflicts_with = "no_auth")]
    auth: bool,
    /// Require no tokens, whatever the listen address: anyone who reaches the port can
    /// render anything and read every job. Warned about on every start.
    #[arg(long, env = "CORRAL_NO_AUTH")]
    no_auth: bool,
    /// Serve HTTPS with this certificate (PEM, leaf first) instead of the one the
    /// orchestrator makes in DATA/tls on its first start off loopback.
    #[arg(
        long,
        env = "CORRAL_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "CORRAL_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP even where tokens are required (off loopback): tokens and scenes
    /// then cross the network readable by anyone on the path. Warned about on every start.
    #[arg(long, env = "CORRAL_NO_TLS", conflicts_with = "tls_cert")]
    no_tls: bool,
}

impl OrchestratorArgs {
    /// Tokens are required off loopback or with --auth, unless --no-auth.
    fn needs_tokens(&self) -> bool {
        !self.no_auth && (self.auth || !self.listen.ip().is_loopback())
    }

    fn tls(&self) -> anyhow::Result<Option<TlsIdentity>> {
        let given = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        choose_tls(
            self.listen,
            self.needs_tokens() && !self.no_tls,
            given,
            &self.data.join("tls"),
        )
    }
}

/// HTTPS with a given certificate, or, off loopback where tokens are required (they would
/// otherwise cross the network in the clear), with one made in `dir` on the first start;
/// plain HTTP on loopback, with --no-auth, or with --no-tls (`tokens_need_tls` false).
pub fn choose_tls(
    listen: SocketAddr,
    tokens_need_tls: bool,
    given: Option<(&Path, &Path)>,
    dir: &Path,
) -> anyhow::Result<Option<TlsIdentity>> {
    if let Some((cert, key)) = given {
        return TlsIdentity::from_pem_files(cert, key)
            .map(Some)
            .context("cannot use --tls-cert/--tls-key");
    }
    if !tokens_need_tls || listen.ip().is_loopback() {
        return Ok(None);
    }
    TlsIdentity::load_or_create(dir, &certificate_names(listen))
        .map(Some)
        .with_context(|| format!("cannot make or read the certificate in `{}`", dir.display()))
}

/// This machine's name, when it has one that is text.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}

/// The names a made certificate carries (only for people looking at it: clients pin the
/// certificate itself, not a name).
pub fn certificate_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    names.extend(hostname());
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names
}

fn parse_database(s: &str) -> Result<DatabaseUrl, String> {
    DatabaseUrl::parse(s)
}

fn parse_node_url(s: &str) -> Result<String, String> {
    validate_node_url("--node", s).map_err(|e| e.message)
}

/// A duration: a whole number and a unit, `s`, `m`, `h` or `d` (`7d`, `12h`, `30m`, `0s`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (a number, then s, m, h or d)"))?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    number
        .checked_mul(seconds)
        .filter(|&n| n <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long (at most 100 years)"))
}

pub async fn run(args: OrchestratorArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create the data folder `{}`", args.data.display()))?;
    // The certificate before anything else: a bad --tls-cert changes nothing.
    let tls = args.tls()?;
    let mut config = OrchestratorConfig::new(args.data.clone());
    config.auth = args.needs_tokens();
    if let Some(database) = args.database {
        config.database = database;
    }
    let database = config.database.redacted();
    config.static_nodes = args.nodes;
    config.batch_size = args.batch_size;
    config.task_length = Duration::from_secs(args.task_length);
    config.max_frames = args.max_frames;
    config.max_unfinished_jobs = args.max_jobs;
    config.max_attempts = args.max_attempts;
    config.blocklist_after = args.blocklist_after;
    config.node_timeout = Duration::from_secs(args.node_timeout);
    config.stall_timeout = Duration::from_secs(args.stall_timeout);
    if let Some(frames) = &args.frames {
        let frames = frames
            .canonicalize()
            .with_context(|| format!("cannot open the frames folder `{}`", frames.display()))?;
        config.frames_dir = Some(frames);
    }
    config.ffmpeg = args.ffmpeg;
    config.max_blob_bytes = args.max_blob_size;
    config.blob_retention = args.blob_retention;
    config.min_free_bytes = args.min_free_space;
    if args.no_auth {
        tracing::warn!(listen = %args.listen, "--no-auth: this orchestrator requires no tokens; anyone who reaches it can submit jobs, read every job and join nodes");
    }
    let config_auth = config.auth;
    let acceptor = match &tls {
        Some(identity) => Some(identity.acceptor().context("cannot serve TLS")?),
        None => None,
    };
    let pins: Vec<Fingerprint> = tls.iter().map(TlsIdentity::fingerprint).collect();
    if args.no_tls && config_auth && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "--no-tls: tokens, scenes and frames cross the network unencrypted");
    }
    let orchestrator = Orchestrator::start(config)
        .await
        .with_context(|| format!("cannot open the database {database}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if config_auth {
        let first = corral_orchestrator::auth::first_tokens(orchestrator.store())
            .await
            .context("cannot make the farm's first tokens")?;
        if let Some((client, join)) = first {
            print_first_tokens(addr, &pins, &client, &join);
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    match pins.first() {
        Some(fp) => {
            tracing::info!(data = %args.data.display(), %database, auth = config_auth, dashboard = %format!("https://{addr}/"), fingerprint = %fp, "orchestrator ready; clients pin this certificate fingerprint")
        }
        None => {
            tracing::info!(data = %args.data.display(), %database, auth = config_auth, dashboard = %format!("http://{addr}/"), "orchestrator ready")
        }
    }
    // Signal handlers first, then the line that tells the world it is up.
    let shutdown = crate::shutdown_signal();
    // One line only: scripts read it and may close the pipe after.
    println!("corral orchestrator listening on {scheme}://{addr}");
    corral_orchestrator::serve_tls(orchestrator, listener, shutdown, acceptor).await?;
    Ok(())
}

/// The farm's first tokens, on standard error, once: only their hashes are kept. With
/// TLS they are shown inside join strings, which carry the certificate's fingerprint too.
pub fn print_first_tokens(addr: SocketAddr, pins: &[Fingerprint], client: &str, join: &str) {
    let host = farm_address(addr);
    let string = |token: &str| JoinString {
        addresses: vec![host.clone()],
        token: Some(token.to_string()),
        fingerprints: pins.to_vec(),
    };
    let (client_line, join_line) = if pins.is_empty() {
        (
            format!("corral submit --server http://{host} --token {client} scene.blend   (or CORRAL_TOKEN)"),
            format!("corral node --orchestrator http://{host} --token {join}"),
        )
    } else {
        (
            format!(
                "corral submit --server '{}' scene.blend   (or CORRAL_SERVER)",
                string(client)
            ),
            format!("corral node --orchestrator '{}'", string(join)),
        )
    };
    let fingerprint = match pins.first() {
        Some(fp) => format!("  certificate fingerprint (SHA-256): {fp}\n"),
        None => String::new(),
    };
    eprintln!(
        "\
This farm requires tokens. Its first ones, shown only now (the farm keeps their hashes):
  client token: {client}
      {client_line}
      the dashboard asks for it once per browser
  join token:   {join}
      {join_line}
{fingerprint}\
If {host} is not how other machines reach this one, put their address in its place.
More, and revocation: corral token list|create KIND|revoke ID --data DIR"
    );
}

/// `HOST:PORT` as other machines would write it: this machine's name when listening on
/// every address.
pub fn farm_address(addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    let host = hostname().unwrap_or_else(|| "HOST".to_string());
    format!("{host}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "7", "d", "1.5h", "-1s", "3w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
