//! The benchmarks that BENCHMARKS.md quotes run from a clean checkout and report every
//! figure issue 8 names: `corral bench sim` (SIMULATED nodes, a small farm, also nodes of
//! an earlier version) and `corral bench local` (real Blender, a tiny scene). These tests
//! check what the reports say and that the runs end; never how fast (timings are written
//! down in BENCHMARKS.md, not asserted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{scene, Scene, CORRAL};
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `corral ARGS`, killed if it takes longer than `timeout`; answers its standard
/// output after checking it exited 0.
fn run(args: &[&str], timeout: Duration) -> String {
    let mut child = Command::new(CORRAL)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corral");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read both pipes as the run goes, so a chatty run never blocks on a full pipe.
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) if status.success() => out,
        Some(status) => panic!("corral {args:?} exited {status}\n{out}\n{err}"),
        None => panic!("corral {args:?} still ran after {timeout:?}\n{out}\n{err}"),
    }
}

/// The one JSON object a `--json` run prints.
fn report(args: &[&str], timeout: Duration) -> Value {
    let out = run(args, timeout);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"))
}

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {report}"))
}

/// `bench sim` with a node loss (renders of 5 s, two nodes killed once a third of the
/// frames is heard, found lost after the bench's 5 s node timeout): every figure of issue
/// 8, each a sane number, and the tutorial's round-robin run beside it.
#[test]
fn bench_sim_reports_every_figure() {
    let r = report(
        &[
            "bench",
            "sim",
            "--nodes",
            "20",
            "--frames",
            "2000",
            "--frame-ms",
            "50",
            "--kill",
            "2",
            "--json",
        ],
        Duration::from_secs(180),
    );
    assert_eq!(r["simulated"], true, "{r}");
    assert_eq!(r["nodes"], 20, "{r}");
    assert_eq!(r["frames"], 2000, "{r}");
    // The measured makespan is never shorter than the ideal one: a simulated frame
    // sleeps its whole time.
    for key in ["efficiency", "tutorial_efficiency"] {
        let e = number(&r, key);
        assert!(e > 0.0 && e <= 1.0, "{key} {e}: {r}");
    }
    assert!(
        number(&r, "makespan_s") >= number(&r, "ideal_makespan_s"),
        "{r}"
    );
    for key in [
        "dispatch_per_s",
        "completion_latency_p50_ms",
        "completion_latency_p99_ms",
        "time_to_full_s",
        "requeue_after_node_loss_s",
        "peak_rss_mb",
    ] {
        assert!(number(&r, key) >= 0.0, "{key}: {r}");
    }
    assert!(number(&r, "peak_rss_mb") > 0.0, "{r}");
    assert_eq!(r["events_missed"], 0, "{r}");
    assert_eq!(r["batch_refused"], 0, "{r}");
}

/// Nodes of a version before the long-poll's `batch` refuse it with a 400: the
/// orchestrator's watchers fall back to an answer per change, and the job still ends
/// (without the fallback no render's end would ever be heard, and the run would time out).
#[test]
fn bench_sim_with_nodes_that_refuse_batch_completes() {
    let r = report(
        &[
            "bench",
            "sim",
            "--nodes",
            "8",
            "--frames",
            "200",
            "--frame-ms",
            "20",
            "--old-nodes",
            "--no-tutorial",
            "--json",
        ],
        Duration::from_secs(120),
    );
    assert!(
        number(&r, "batch_refused") > 0.0,
        "no batch was refused: {r}"
    );
    let e = number(&r, "efficiency");
    assert!(e > 0.0 && e <= 1.0, "{r}");
}

/// `bench local`: plain Blender, a warm farm and a cold farm render the same frames of a
/// real scene; the report has each wall time and each ratio to plain Blender.
#[test]
fn bench_local_renders_plain_warm_and_cold() {
    let blend = scene(Scene::Tiny);
    let r = report(
        &[
            "bench",
            "local",
            blend.to_str().unwrap(),
            "--frames",
            "1-4",
            "--json",
        ],
        Duration::from_secs(300),
    );
    assert_eq!(r["frames"], "1-4", "{r}");
    for key in ["blender_s", "warm_s", "cold_s"] {
        assert!(number(&r, key) > 0.0, "{key}: {r}");
    }
    for (ratio, farm) in [("ratio_warm", "warm_s"), ("ratio_cold", "cold_s")] {
        let want = number(&r, farm) / number(&r, "blender_s");
        assert!((number(&r, ratio) - want).abs() < 0.01, "{ratio}: {r}");
    }
    for key in ["end_latency_warm_ms", "end_latency_cold_ms"] {
        assert!(r[key].as_f64().is_some(), "{key}: {r}");
    }
}
