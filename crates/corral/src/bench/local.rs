//! `corral bench local SCENE`: real Blender on this machine, side by side in one run: one
//! plain `blender -b SCENE -a -t 0`, then the same frames through `corral up` with warm
//! render nodes and with cold ones, each submitted with `corral submit --wait`. Prints each
//! wall time and its ratio to the plain Blender (below 1: the farm was faster).

use crate::scene;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use corral_core::FrameRange;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const EXAMPLES: &str = "\
Examples:
  corral bench local shot.blend
  corral bench local shot.blend --frames 1-24 --json
  corral bench local shot.blend --nodes 1 --threads 0

Each farm is started and its render nodes are ready before its clock starts (a farm is
started once and renders many jobs); the clock runs from `corral submit` to the end of
`corral submit --wait`. Absolute times on a shared machine vary; compare the ratios.";

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// The .blend file to render.
    scene: PathBuf,
    /// Frames to render (default: the scene's own range).
    #[arg(long, value_name = "A-B", value_parser = scene::parse_frames)]
    frames: Option<FrameRange>,
    /// Render nodes of each `corral up` (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    nodes: Option<u32>,
    /// Blender threads per node (default: 1 with several nodes, every core with one).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1024))]
    threads: Option<u32>,
    /// Frames per task (default: sized by the farm).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: Option<u64>,
    /// Blender executable.
    #[arg(long, env = "CORRAL_BLENDER", default_value = "blender")]
    blender: PathBuf,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Results {
    scene: String,
    frames: String,
    nodes: u32,
    threads: u32,
    blender_s: f64,
    warm_s: f64,
    cold_s: f64,
    ratio_warm: f64,
    ratio_cold: f64,
    /// From the last frame landing under its final name (its file's time) to
    /// `corral submit --wait` exiting with the job's end, in milliseconds.
    end_latency_warm_ms: f64,
    end_latency_cold_ms: f64,
}

/// A `corral up` started for one measurement; stopped (SIGINT, then SIGKILL) on drop.
struct Farm {
    child: Child,
    url: String,
}

impl Drop for Farm {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_farm(
    args: &LocalArgs,
    mode: &str,
    scenes: &Path,
    work: &Path,
    nodes: u32,
    threads: u32,
) -> anyhow::Result<Farm> {
    let exe = std::env::current_exe().context("this program's path")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("up")
        .args(["--listen", "127.0.0.1:0", "--nodes"])
        .arg(nodes.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--scenes")
        .arg(scenes)
        .arg("--output")
        .arg(work.join(format!("{mode}-frames")))
        .arg("--data")
        .arg(work.join(format!("{mode}-data")))
        .arg("--blender")
        .arg(&args.blender)
        .env("CORRAL_RENDER_MODE", mode)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(batch) = args.batch_size {
        cmd.arg("--batch-size").arg(batch.to_string());
    }
    let mut child = cmd.spawn().context("cannot start corral up")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let url = first
        .strip_prefix("corral up listening on ")
        .ok_or_else(|| anyhow!("corral up did not start: {first}"))?
        .to_string();
    // The rest of its banner is read (and dropped) in the background.
    std::thread::spawn(move || for _ in lines {});
    let farm = Farm { child, url };
    wait_ready(&farm.url, nodes, mode)?;
    Ok(farm)
}

/// Waits until every node is up and, in warm mode, has its Blender workers started.
fn wait_ready(url: &str, nodes: u32, mode: &str) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list: Vec<serde_json::Value> = client
            .get(format!("{url}/api/v1/nodes"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        let up: Vec<&serde_json::Value> = list.iter().filter(|n| n["state"] == "up").collect();
        let ready = up.len() as u32 >= nodes
            && (mode != "warm"
                || up.iter().all(|n| {
                    let info: serde_json::Value = n["url"]
                        .as_str()
                        .and_then(|u| client.get(format!("{u}/info")).send().ok())
                        .and_then(|r| r.json().ok())
                        .unwrap_or_default();
                    info["workers"]
                        .as_array()
                        .is_some_and(|w| !w.is_empty() && w.iter().all(|w| w["state"] == "idle"))
                }));
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the {mode} farm's nodes were not ready within two minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The newest modification time of the files under `dir` (the last frame placed).
fn newest_file(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(time);
    }
    newest
}

/// Runs `corral submit --wait`; answers its wall time and when it exited.
fn time_submit(
    farm: &Farm,
    scene: &Path,
    scenes: &Path,
    range: FrameRange,
) -> anyhow::Result<(f64, std::time::SystemTime)> {
    let exe = std::env::current_exe().context("this program's path")?;
    let started = Instant::now();
    let out = Command::new(exe)
        .arg("submit")
        .arg(scene)
        .arg("--frames")
        .arg(format!("{}-{}", range.from(), range.to()))
        .args(["--wait", "--server", &farm.url])
        .current_dir(scenes)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run corral submit")?;
    let took = started.elapsed().as_secs_f64();
    let exited = std::time::SystemTime::now();
    if !out.status.success() {
        bail!(
            "corral submit --wait failed: {}",
            crate::table::for_terminal(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok((took, exited))
}

pub async fn run(args: LocalArgs) -> anyhow::Result<std::process::ExitCode> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("the benchmark panicked")?
}

fn run_blocking(args: LocalArgs) -> anyhow::Result<std::process::ExitCode> {
    let scene_path = args
        .scene
        .canonicalize()
        .with_context(|| format!("cannot open `{}`", args.scene.display()))?;
    let scenes = scene_path
        .parent()
        .ok_or_else(|| anyhow!("the scene has no folder"))?
        .to_path_buf();
    let range = match args.frames {
        Some(range) => range,
        None => {
            let runtime = tokio::runtime::Handle::current();
            runtime
                .block_on(scene::read_scene(&args.blender, &scene_path))?
                .range
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let nodes = args.nodes.unwrap_or(cores);
    let threads = args.threads.unwrap_or(if nodes > 1 { 1 } else { 0 });
    let work = tempfile::Builder::new()
        .prefix("corral-bench-local-")
        .tempdir()
        .context("temporary folder")?;
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    say(format!(
        "{} frames {range} · plain Blender, then corral up with {nodes} node(s) x {threads} thread(s), warm and cold",
        scene_path.display()
    ));

    let started = Instant::now();
    let plain = Command::new(&args.blender)
        .arg("-b")
        .arg(&scene_path)
        .arg("-o")
        .arg(work.path().join("plain").join("frame_####"))
        .arg("-s")
        .arg(range.from().to_string())
        .arg("-e")
        .arg(range.to().to_string())
        .args(["-t", "0", "-a"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run Blender")?;
    let blender_s = started.elapsed().as_secs_f64();
    if !plain.success() {
        bail!("plain Blender failed ({plain})");
    }
    say(format!("  blender -b -a -t 0   {blender_s:7.2} s"));

    let mut times = Vec::new();
    let mut latencies = Vec::new();
    for mode in ["warm", "cold"] {
        let farm = start_farm(&args, mode, &scenes, work.path(), nodes, threads)?;
        let (took, exited) = time_submit(&farm, &scene_path, &scenes, range)?;
        drop(farm);
        let last_frame = newest_file(&work.path().join(format!("{mode}-frames")));
        let latency = last_frame
            .and_then(|t| exited.duration_since(t).ok())
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        say(format!(
            "  corral up, {mode:<4}     {took:7.2} s   {:.2}x the plain Blender; the end reached submit --wait {latency:.0} ms after the last frame landed",
            took / blender_s
        ));
        times.push(took);
        latencies.push(latency);
    }
    let results = Results {
        scene: scene_path.display().to_string(),
        frames: range.to_string(),
        nodes,
        threads,
        blender_s,
        warm_s: times[0],
        cold_s: times[1],
        ratio_warm: times[0] / blender_s,
        ratio_cold: times[1] / blender_s,
        end_latency_warm_ms: latencies[0],
        end_latency_cold_ms: latencies[1],
    };
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
