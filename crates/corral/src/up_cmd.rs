//! `corral up`: a whole farm in one process for a workstation or a laptop: the
//! orchestrator with its SQLite database, serving the same API as a full farm, and N render
//! nodes on loopback ports that render scenes from one folder. Ctrl-C stops it all, and no
//! Blender outlives it.

use crate::node_cmd::{self, NodeArgs};
use anyhow::{bail, Context};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use corral_client::{LocalFarm, LOCAL_FARM_PATH};
use corral_core::tls::Fingerprint;
use corral_http::tls::TlsIdentity;
use corral_orchestrator::{Orchestrator, OrchestratorConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const EXAMPLES: &str = "\
Examples:
  corral up                                 # one node using every core; scenes from this folder
  corral up --nodes 2 --threads 1           # two Blender processes at once, one thread each
  corral up --scenes ~/shots --output ~/renders
  corral submit scene.blend --wait          # then, in another terminal

Scenes: `corral submit` renders only .blend files inside --scenes (default: the folder
`corral up` starts in); the nodes refuse any path that leads out of it. The API listens
on 127.0.0.1 unless --listen says otherwise; off loopback (or with --auth) it requires
tokens, and the first start prints a client token (README, \"Tokens\").";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Render nodes to run in this process; each renders one task at a time.
    #[arg(long, env = "CORRAL_UP_NODES", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    nodes: u32,
    /// Blender threads per node, 0 for every core (default: every core for one node, the
    /// cores shared out among several).
    #[arg(long, env = "CORRAL_THREADS", value_parser = clap::value_parser!(u32).range(0..=1024))]
    threads: Option<u32>,
    /// Address of the farm's API (what `corral submit --server` and nodes talk to).
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// Folder of the scenes the farm may render (`corral submit` takes any .blend inside).
    #[arg(long, env = "CORRAL_SCENES", default_value = ".", value_name = "DIR")]
    scenes: PathBuf,
    /// The scene of a job that names none, such as the tutorial's `POST /render`: a
    /// .blend inside --scenes [default: scene.blend in --scenes]
    #[arg(long, env = "CORRAL_BLEND", value_name = "FILE")]
    blend: Option<PathBuf>,
    /// Folder the frames are written to, one sub-folder per job.
    #[arg(
        long,
        env = "CORRAL_OUTPUT",
        default_value = "frames",
        value_name = "DIR"
    )]
    output: PathBuf,
    /// Folder for the database (jobs survive a restart) and the nodes' Blender logs.
    #[arg(
        long,
        env = "CORRAL_DATA",
        default_value = "corral-data/local",
        value_name = "DIR"
    )]
    data: PathBuf,
    /// Frames per task when a job names no --batch-size. Without it, the farm sizes tasks
    /// from the frame time it measures, smaller toward the end.
    #[arg(long, env = "CORRAL_BATCH_SIZE",
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: Option<u64>,
    /// Blender executable.
    #[arg(long, env = "CORRAL_BLENDER", default_value = "blender")]
    blender: PathBuf,
    /// Require tokens even on loopback (off loopback they are required anyway unless
    /// --no-auth); the first start prints a client token.
    #[arg(long, env = "CORRAL_AUTH", conflicts_with = "no_auth")]
    auth: bool,
    /// Require no tokens, whatever the listen address (warned about on every start).
    #[arg(long, env = "CORRAL_NO_AUTH")]
    no_auth: bool,
    /// Serve plain HTTP off loopback even though tokens are required (by default the
    /// farm serves HTTPS there, with a certificate made in DATA on first start).
    #[arg(long, env = "CORRAL_NO_TLS")]
    no_tls: bool,
}

/// Threads per node when `--threads` is not given: every core for a lone node (Blender's
/// `-t 0`), else the cores shared out, at least one each.
fn default_threads(nodes: u32, cores: u32) -> u32 {
    if nodes <= 1 {
        0
    } else {
        (cores / nodes).max(1)
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // The address first: a second `corral up` should fail at once, touching nothing.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} ({e}): is another `corral up` running? --listen picks another address",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let blender = corral_blender::probe_blender(&args.blender, Duration::from_secs(60)).await?;
    if !args.scenes.is_dir() {
        bail!("--scenes `{}` is not a folder", args.scenes.display());
    }
    let scenes = args
        .scenes
        .canonicalize()
        .with_context(|| format!("cannot open the scenes folder `{}`", args.scenes.display()))?;
    let output = node_cmd::prepare_dir(&args.output, "output")?;
    let data = node_cmd::prepare_dir(&args.data, "data")?;
    let cores = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let threads = args
        .threads
        .unwrap_or_else(|| default_threads(args.nodes, cores));

    let mut nodes = Vec::new();
    for i in 1..=args.nodes {
        let node_args = NodeArgs::local(
            scenes.clone(),
            output.clone(),
            data.join(format!("node-{i}")),
            threads,
        );
        let config = node_cmd::resolve_config(&node_args, blender.clone())?;
        let node_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot open a loopback port for a render node")?;
        let url = format!("http://{}", node_listener.local_addr()?);
        nodes.push((corral_node::Node::new(config), node_listener, url));
    }
    let urls: Vec<String> = nodes.iter().map(|(_, _, url)| url.clone()).collect();

    let orchestrator_data = node_cmd::prepare_dir(&data.join("orchestrator"), "database")?;
    let mut config = OrchestratorConfig::new(orchestrator_data.clone());
    config.static_nodes = urls.clone();
    config.forget_other_loopback_nodes = true;
    config.batch_size = args.batch_size;
    config.scenes_dir = Some(scenes.clone());
    config.default_scene = Some(default_scene(args.blend.as_deref(), &scenes)?);
    // The nodes write into this process's own output folder: the dashboard may read it.
    config.frames_dir = Some(output.clone());
    config.auth = !args.no_auth && (args.auth || !args.listen.ip().is_loopback());
    if args.no_auth {
        tracing::warn!(listen = %args.listen, "--no-auth: this farm requires no tokens; anyone who reaches it can render any scene in the scenes folder");
    }
    let auth = config.auth;
    let tls = crate::orchestrator_cmd::choose_tls(
        args.listen,
        auth && !args.no_tls,
        None,
        &orchestrator_data.join("tls"),
    )?;
    let pins: Vec<Fingerprint> = tls.iter().map(TlsIdentity::fingerprint).collect();
    if args.no_tls && auth && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "--no-tls: tokens, scenes and frames cross the network unencrypted");
    }
    let acceptor = match &tls {
        Some(identity) => Some(identity.acceptor().context("cannot serve TLS")?),
        None => None,
    };
    let orchestrator = Orchestrator::start(config).await.with_context(|| {
        format!(
            "cannot open the database in `{}`",
            orchestrator_data.display()
        )
    })?;
    if auth {
        let first = corral_orchestrator::auth::first_tokens(orchestrator.store())
            .await
            .context("cannot make the farm's first tokens")?;
        if let Some((client, join)) = first {
            crate::orchestrator_cmd::print_first_tokens(addr, &pins, &client, &join);
        }
    }

    let farm = LocalFarm {
        scenes: scenes.display().to_string(),
        output: output.display().to_string(),
        nodes: args.nodes,
        threads,
    };
    // The local farm's own routes sit behind the same token check as the API's.
    let app = corral_orchestrator::auth::protect(
        orchestrator.clone(),
        corral_orchestrator::routes(orchestrator.clone())
            .merge(Router::new().route(LOCAL_FARM_PATH, get(move || async move { Json(farm) })))
            .merge(crate::up_scenes::router(
                scenes.clone(),
                args.blender.clone(),
            )),
    );

    // Stopping order: the orchestrator's loops first, so no task is dispatched or marked
    // failed while the nodes go down; then the nodes, which kill their Blender processes
    // and return only when none is left.
    let (stop_nodes, nodes_stopping) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for (node, node_listener, _) in nodes {
        let mut stopping = nodes_stopping.clone();
        servers.spawn(corral_node::serve(node, node_listener, async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }));
    }
    let first_signal = crate::shutdown_signal();
    // The first line is for scripts and tests, which read the address from it.
    let scheme = if pins.is_empty() { "http" } else { "https" };
    println!("corral up listening on {scheme}://{addr}");
    print_banner(
        &args,
        addr,
        pins.first(),
        &blender.version,
        threads,
        &scenes,
        &output,
        &data,
    );
    let stopping = orchestrator.clone();
    let shutdown = async move {
        first_signal.await;
        eprintln!("Stopping the farm: cancelling renders…");
        // A second Ctrl-C quits at once; the kernel still kills every Blender (each is
        // started with a parent-death signal).
        tokio::spawn(async {
            crate::shutdown_signal().await;
            eprintln!("Second signal: exiting now.");
            std::process::exit(i32::from(crate::exit::INTERRUPTED));
        });
        stopping.shut_down().await;
        let _ = stop_nodes.send(true);
    };
    corral_http::serve_tls(
        listener,
        app,
        shutdown,
        corral_http::ServerLimits::default(),
        acceptor,
    )
    .await
    .context("the farm's API server failed")?;
    while let Some(result) = servers.join_next().await {
        result
            .context("a render node's task panicked")?
            .context("a render node's server failed")?;
    }
    eprintln!(
        "Farm stopped; no render left running. Jobs not finished resume at the next `corral up`."
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_banner(
    args: &UpArgs,
    addr: SocketAddr,
    pin: Option<&Fingerprint>,
    blender_version: &str,
    threads: u32,
    scenes: &Path,
    output: &Path,
    data: &Path,
) {
    use console::style;
    let threads = match threads {
        0 => "all cores".to_string(),
        1 => "1 thread".to_string(),
        n => format!("{n} threads"),
    };
    let nodes = match args.nodes {
        1 => "1 render node".to_string(),
        n => format!("{n} render nodes"),
    };
    // Clients default to 127.0.0.1:4000; any other address must be named to them, and
    // over TLS with the certificate's fingerprint.
    let scheme = if pin.is_some() { "https" } else { "http" };
    let client_url = if addr.ip().is_unspecified() {
        format!("{scheme}://127.0.0.1:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    };
    let server_flag = match pin {
        _ if client_url == crate::client_cmds::DEFAULT_SERVER => String::new(),
        Some(fp) => format!(" --server {client_url} --fingerprint {fp}"),
        None => format!(" --server {client_url}"),
    };
    println!();
    println!(
        "  {} {} · {nodes} × {threads} · Blender {blender_version}",
        style("Corral").bold().cyan(),
        style("local farm").bold()
    );
    println!(
        "  {}  {}  {}",
        style("scenes").dim(),
        scenes.display(),
        style("(any .blend inside it can be submitted)").dim()
    );
    println!("  {}  {}", style("frames").dim(), output.display());
    println!("  {}    {}", style("data").dim(), data.display());
    println!();
    println!(
        "  {}    {client_url}/  {}",
        style("open").bold(),
        style("(the dashboard, in a browser)").dim()
    );
    println!(
        "  {}  corral submit scene.blend --wait{server_flag}",
        style("render").bold()
    );
    println!(
        "  {}   corral jobs{server_flag} · corral nodes{server_flag}",
        style("watch").bold()
    );
    println!(
        "  {}    Ctrl-C (cancels running renders)",
        style("stop").bold()
    );
    println!();
}

/// The default scene's path relative to the scenes folder: `--blend` (which must be a file
/// inside it), or `scene.blend` (checked at each submission, so it may appear later).
fn default_scene(blend: Option<&Path>, scenes: &Path) -> anyhow::Result<String> {
    let Some(blend) = blend else {
        return Ok("scene.blend".into());
    };
    let path = blend
        .canonicalize()
        .with_context(|| format!("--blend `{}` cannot be opened", blend.display()))?;
    let inside = path
        .strip_prefix(scenes)
        .ok()
        .filter(|_| path.is_file())
        .and_then(Path::to_str)
        .with_context(|| {
            format!(
                "--blend `{}` must be a .blend file inside the scenes folder `{}`",
                blend.display(),
                scenes.display()
            )
        })?;
    Ok(inside.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_shared_out() {
        assert_eq!(default_threads(1, 8), 0);
        assert_eq!(default_threads(2, 8), 4);
        assert_eq!(default_threads(3, 2), 1);
    }
}
