//! `corral bench sim`: the real orchestrator (the `corral orchestrator` binary: scheduler,
//! store, HTTP) driving N SIMULATED nodes served by this process (real HTTP on loopback,
//! no Blender), and the same workload under the tutorial's static round-robin for
//! comparison. Every line it prints says SIMULATED.

use super::sim_node::{Finishes, SimNode};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use corral_core::orchestrator_api::{Event, JobState, TaskStateKind};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const EXAMPLES: &str = "\
Examples:
  corral bench sim --nodes 100 --frames 10000
  corral bench sim --nodes 1000 --frames 100000 --speeds 1,2,4 --kill 10 --json
  corral bench sim --nodes 200 --frames 20000 --database postgres://corral@127.0.0.1/corral

Everything is SIMULATED: the nodes sleep instead of rendering. The orchestrator is the real
`corral orchestrator` (started by this command, on a temporary SQLite database unless
--database names one), so its scheduler, store and HTTP API are what is measured.";

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Simulated render nodes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5000))]
    nodes: u32,
    /// Frames of the job.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    frames: u64,
    /// Frames per task (default: the orchestrator's --batch-size).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    chunk: Option<u64>,
    /// Node speeds, cycled over the nodes (`1,2,4`: a third of the nodes twice, a third four
    /// times as fast as the rest).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    speeds: Vec<f64>,
    /// A frame's time on a speed-1 node, in milliseconds.
    #[arg(long, default_value_t = 100.0)]
    frame_ms: f64,
    /// Kill this many rendering nodes when a third of the frames are done.
    #[arg(long, default_value_t = 0)]
    kill: u32,
    /// The orchestrator's database (default: a temporary SQLite file).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Skip the tutorial's round-robin run.
    #[arg(long)]
    no_tutorial: bool,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also print how many simulated nodes were rendering, every half second of the run.
    #[arg(long)]
    timeline: bool,
    /// Simulate nodes of an earlier version, which refuse the long-poll's `batch`
    /// parameter (a 400): the orchestrator then follows each render an answer per change.
    #[arg(long)]
    old_nodes: bool,
}

/// What `bench sim` reports.
#[derive(Debug, Default, Serialize)]
struct Results {
    simulated: bool,
    nodes: u32,
    frames: u64,
    tasks: u64,
    speeds: Vec<f64>,
    frame_ms: f64,
    database: String,
    ideal_makespan_s: f64,
    makespan_s: f64,
    efficiency: f64,
    dispatch_per_s: f64,
    dispatch_per_s_mean: f64,
    completion_latency_p50_ms: f64,
    completion_latency_p99_ms: f64,
    time_to_full_s: f64,
    requeue_after_node_loss_s: Option<f64>,
    peak_rss_mb: f64,
    tutorial_makespan_s: Option<f64>,
    tutorial_efficiency: Option<f64>,
    events_missed: u64,
    /// Long-polls the simulated nodes refused for asking for `batch` (`--old-nodes`).
    batch_refused: u64,
}

/// The orchestrator child process; killed when dropped.
struct Orchestrator {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_orchestrator(args: &SimArgs) -> anyhow::Result<Orchestrator> {
    let dir = tempfile::Builder::new()
        .prefix("corral-bench-sim-")
        .tempdir()
        .context("temporary folder")?;
    let exe = std::env::current_exe().context("this program's path")?;
    let mut cmd = Command::new(exe);
    cmd.arg("orchestrator")
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--node-timeout", "5", "--max-frames"])
        .arg(args.frames.to_string())
        // `CORRAL_SIM_LOG` (a `RUST_LOG` filter) shows more of the orchestrator's log, e.g.
        // `warn,corral_orchestrator::workers::dispatcher=info` for its cuts and dispatches.
        .env(
            "RUST_LOG",
            std::env::var("CORRAL_SIM_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(db) = &args.database {
        cmd.args(["--database", db]);
    }
    if let Some(chunk) = args.chunk {
        cmd.args(["--batch-size", &chunk.to_string()]);
    }
    let mut child = cmd.spawn().context("cannot start corral orchestrator")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("corral orchestrator listening on ")
        .ok_or_else(|| anyhow!("the orchestrator did not start: {line}"))?
        .to_string();
    Ok(Orchestrator {
        child,
        url,
        _dir: dir,
    })
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What the event stream told, with when.
#[derive(Default)]
struct Heard {
    /// Task id -> times it started running.
    running: HashMap<i64, Vec<Instant>>,
    /// Task id -> when it completed.
    completed: HashMap<i64, Instant>,
    job_done: Option<(Instant, JobState)>,
    frames_done: u64,
    missed: u64,
}

/// Follows the orchestrator's event stream into `heard`.
async fn listen(url: String, heard: Arc<Mutex<Heard>>) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .get(format!("{url}/api/v1/events"))
        .send()
        .await?;
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let Ok(event) = serde_json::from_slice::<Event>(data.trim_ascii()) else {
                continue;
            };
            let now = Instant::now();
            let Ok(mut h) = heard.lock() else { continue };
            match event {
                Event::Task { id, state, .. } => match state {
                    TaskStateKind::Running => h.running.entry(id.0).or_default().push(now),
                    TaskStateKind::Completed => {
                        h.completed.insert(id.0, now);
                    }
                    _ => {}
                },
                Event::Job {
                    state, frames_done, ..
                } => {
                    h.frames_done = h.frames_done.max(frames_done);
                    if state.is_terminal() && h.job_done.is_none() {
                        h.job_done = Some((now, state));
                    }
                }
                _ => {}
            }
        }
    }
    if let Ok(mut h) = heard.lock() {
        h.missed += 1;
    }
    Ok(())
}

fn speed_of(args: &SimArgs, i: usize) -> f64 {
    let speeds = if args.speeds.is_empty() {
        &[1.0][..]
    } else {
        &args.speeds[..]
    };
    speeds[i % speeds.len()].max(0.001)
}

pub async fn run(args: SimArgs) -> anyhow::Result<std::process::ExitCode> {
    let say = |line: &str| {
        if !args.json {
            println!("SIMULATED: {line}");
        }
    };
    let orchestrator = start_orchestrator(&args)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let finishes: Finishes = Arc::new(Mutex::new(HashMap::new()));
    let mut nodes = Vec::new();
    let mut capacity = 0.0;
    for i in 0..args.nodes as usize {
        let speed = speed_of(&args, i);
        capacity += speed;
        let node = SimNode::new(args.frame_ms, speed, 1, finishes.clone());
        if args.old_nodes {
            node.refuse_batch();
        }
        let url = node.serve().await?;
        nodes.push((node, url));
    }
    say(&format!(
        "{} simulated nodes (speeds {:?}), orchestrator at {}",
        args.nodes, args.speeds, orchestrator.url
    ));
    // Register every node (concurrently, as a farm's nodes start together).
    let registrations = nodes.iter().map(|(_, url)| {
        let http = http.clone();
        let api = format!("{}/api/v1/nodes", orchestrator.url);
        let body = serde_json::json!({ "url": url });
        async move { http.post(api).json(&body).send().await }
    });
    for r in futures_util::future::join_all(registrations).await {
        r.context("registering a simulated node")?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list: Vec<serde_json::Value> = http
            .get(format!("{}/api/v1/nodes", orchestrator.url))
            .send()
            .await?
            .json()
            .await?;
        let up = list.iter().filter(|n| n["state"] == "up").count();
        if up as u32 >= args.nodes {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {up} of {} simulated nodes came up", args.nodes);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let heard = Arc::new(Mutex::new(Heard::default()));
    let listener = tokio::spawn(listen(orchestrator.url.clone(), heard.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut body = serde_json::json!({ "from": 1, "to": args.frames });
    if let Some(chunk) = args.chunk {
        body["chunk_size"] = chunk.into();
    }
    let started = Instant::now();
    let resp = http
        .post(format!("{}/api/v1/jobs", orchestrator.url))
        .json(&body)
        .send()
        .await?;
    if resp.status().as_u16() != 202 {
        bail!("the orchestrator refused the job: {}", resp.text().await?);
    }
    let job: serde_json::Value = resp.json().await?;
    let tasks = job["tasks_total"].as_u64().unwrap_or(0);
    say(&format!(
        "job of {} frames in {tasks} tasks submitted",
        args.frames
    ));

    // Time until every idle node renders (or every task is out, when there are fewer). A
    // job the farm sizes is one task at submission, cut into a piece per slot.
    let pieces = if args.chunk.is_some() {
        tasks
    } else {
        tasks.max(args.frames)
    };
    let full_at = usize::try_from(pieces)
        .unwrap_or(usize::MAX)
        .min(nodes.len());
    let mut time_to_full = None;
    let mut killed_at = None;
    let mut killed_tags: Vec<String> = Vec::new();
    let job_deadline = Instant::now() + Duration::from_secs(3600);
    // Rendering nodes, sampled every half second (`--timeline`).
    let mut timeline: Vec<(f64, usize)> = Vec::new();
    loop {
        let sample = args.timeline
            && timeline
                .last()
                .is_none_or(|(t, _)| started.elapsed().as_secs_f64() - t >= 0.5);
        if time_to_full.is_none() || sample {
            let running: usize = nodes.iter().map(|(n, _)| n.running()).sum();
            if time_to_full.is_none() && running >= full_at {
                time_to_full = Some(started.elapsed());
            }
            if sample {
                timeline.push((started.elapsed().as_secs_f64(), running));
            }
        }
        let (done, frames_done) = heard
            .lock()
            .map(|h| (h.job_done, h.frames_done))
            .unwrap_or((None, 0));
        if args.kill > 0 && killed_at.is_none() && frames_done * 3 >= args.frames {
            let mut n = 0;
            for (node, _) in &nodes {
                if n >= args.kill {
                    break;
                }
                let tags = node.running_tags();
                if !tags.is_empty() {
                    killed_tags.extend(tags);
                    node.kill();
                    n += 1;
                }
            }
            killed_at = Some(Instant::now());
            say(&format!(
                "killed {n} rendering nodes with {} tasks",
                killed_tags.len()
            ));
        }
        if let Some((_, state)) = done {
            if state != JobState::Completed {
                bail!("the job ended {}", state.as_str());
            }
            break;
        }
        if Instant::now() > job_deadline {
            bail!("the job did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rss = peak_rss_mb(orchestrator.child.id());
    let (makespan, mut results) = {
        let h = heard
            .lock()
            .map_err(|_| anyhow!("the event listener panicked"))?;
        let end = h.job_done.map_or(Instant::now(), |(t, _)| t);
        let makespan = end.duration_since(started).as_secs_f64();
        let finishes = finishes.lock().map_err(|_| anyhow!("lock"))?;
        let mut latencies: Vec<f64> = finishes
            .iter()
            .filter_map(|(tag, finished)| {
                let task: i64 = tag.split(':').nth(1)?.parse().ok()?;
                let heard_at = h.completed.get(&task)?;
                Some(heard_at.saturating_duration_since(*finished).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        // Dispatches per second: the busiest second of the run, and the mean.
        let mut starts: Vec<f64> = h
            .running
            .values()
            .flatten()
            .map(|t| t.saturating_duration_since(started).as_secs_f64())
            .collect();
        starts.sort_by(f64::total_cmp);
        let mut peak = 0usize;
        let mut lo = 0;
        for hi in 0..starts.len() {
            while starts[hi] - starts[lo] > 1.0 {
                lo += 1;
            }
            peak = peak.max(hi - lo + 1);
        }
        // The last of the killed renders' tasks to be heard running again; none when no
        // render was killed (the job may end before a third of its frames is heard) or
        // none ran again (its frames all went to other tasks as stolen tails).
        let requeue = killed_at.and_then(|at| {
            killed_tags
                .iter()
                .filter_map(|tag| tag.split(':').nth(1)?.parse::<i64>().ok())
                .filter_map(|task| h.running.get(&task)?.iter().find(|t| **t > at).copied())
                .map(|t| t.duration_since(at).as_secs_f64())
                .reduce(f64::max)
        });
        let ideal = args.frames as f64 * args.frame_ms / 1000.0 / capacity;
        (
            makespan,
            Results {
                simulated: true,
                nodes: args.nodes,
                frames: args.frames,
                tasks,
                speeds: args.speeds.clone(),
                frame_ms: args.frame_ms,
                database: if args.database.is_some() {
                    "postgresql".into()
                } else {
                    "sqlite".into()
                },
                ideal_makespan_s: ideal,
                makespan_s: makespan,
                efficiency: ideal / makespan,
                dispatch_per_s: peak as f64,
                dispatch_per_s_mean: starts.len() as f64 / makespan,
                completion_latency_p50_ms: percentile(&latencies, 0.50),
                completion_latency_p99_ms: percentile(&latencies, 0.99),
                time_to_full_s: time_to_full.map_or(makespan, |d| d.as_secs_f64()),
                requeue_after_node_loss_s: requeue,
                peak_rss_mb: rss,
                events_missed: h.missed,
                batch_refused: nodes.iter().map(|(n, _)| n.batch_refused()).sum(),
                ..Results::default()
            },
        )
    };
    listener.abort();
    drop(orchestrator);
    for (node, _) in &nodes {
        node.kill();
    }
    say(&format!(
        "makespan {makespan:.2} s against {:.2} s ideal: efficiency {:.3}",
        results.ideal_makespan_s, results.efficiency
    ));
    say(&format!(
        "dispatches/s {:.0} (busiest second), {:.0} mean; every idle node rendering after {:.2} s",
        results.dispatch_per_s, results.dispatch_per_s_mean, results.time_to_full_s
    ));
    say(&format!(
        "completion reaches an event-stream client: p50 {:.1} ms, p99 {:.1} ms",
        results.completion_latency_p50_ms, results.completion_latency_p99_ms
    ));
    if let Some(r) = results.requeue_after_node_loss_s {
        say(&format!(
            "killed nodes' tasks rendering elsewhere after {r:.1} s"
        ));
    }
    say(&format!(
        "orchestrator peak RSS {:.0} MB",
        results.peak_rss_mb
    ));
    for (t, running) in &timeline {
        say(&format!("at {t:5.1} s: {running} nodes rendering"));
    }

    if !args.no_tutorial {
        let t = tutorial_round_robin(&args, capacity).await?;
        results.tutorial_makespan_s = Some(t);
        results.tutorial_efficiency = Some(results.ideal_makespan_s / t);
        // The tutorial's orchestrator never gives a lost node's chunks to another node (its
        // job would never end), so its run loses no node.
        let unkilled = if args.kill > 0 {
            " (no node killed: it never re-queues a lost node's chunks)"
        } else {
            ""
        };
        say(&format!(
            "the tutorial's static round-robin: makespan {t:.2} s, efficiency {:.3}{unkilled}",
            results.ideal_makespan_s / t
        ));
    }
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The tutorial's orchestrator on the same workload: every chunk posted at once,
/// round-robin over the nodes (each queues what it cannot start), then wait for all. No
/// node is killed here even with `--kill`: that orchestrator would wait for a lost node's
/// chunks for ever.
async fn tutorial_round_robin(args: &SimArgs, _capacity: f64) -> anyhow::Result<f64> {
    let finishes: Finishes = Arc::new(Mutex::new(HashMap::new()));
    let mut nodes = Vec::new();
    for i in 0..args.nodes as usize {
        let node = SimNode::new(args.frame_ms, speed_of(args, i), 1, finishes.clone());
        let url = node.serve().await?;
        nodes.push((node, url));
    }
    let chunk = args.chunk.unwrap_or(5) as i64;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()?;
    let started = Instant::now();
    let mut from = 1i64;
    let mut i = 0usize;
    let mut posts = Vec::new();
    while from <= args.frames as i64 {
        let to = (from + chunk - 1).min(args.frames as i64);
        let url = format!("{}/job", nodes[i % nodes.len()].1);
        let body =
            serde_json::json!({ "from": from, "to": to, "tag": format!("tutorial:{from}:0") });
        posts.push((url, body));
        from = to + 1;
        i += 1;
    }
    let chunks = posts.len();
    // In order, at most 256 at a time: tens of thousands of connections at once would run
    // this process out of descriptors (the tutorial's Node.js posts them all at once).
    let mut sent = futures_util::stream::iter(posts)
        .map(|(url, body)| http.post(url).json(&body).send())
        .buffered(256);
    while let Some(r) = sent.next().await {
        r.context("posting a chunk")?;
    }
    loop {
        let done = finishes.lock().map(|f| f.len()).unwrap_or(0);
        if done >= chunks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let makespan = started.elapsed().as_secs_f64();
    for (node, _) in &nodes {
        node.kill();
    }
    Ok(makespan)
}
