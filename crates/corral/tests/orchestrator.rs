//! Integration tests of `corral orchestrator`: a real orchestrator and real `corral node`
//! processes on port 0, real Blender on small generated scenes, frames checked on disk.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::farm::{frame_names, json_of, Farm, Join};
use common::{blender_processes_under, eventually, Scene};
use nix::sys::signal::Signal;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Long enough for anything a healthy farm does in these tests, even with two test farms
/// sharing two cores.
const JOB_DEADLINE: Duration = Duration::from_secs(240);

fn tasks(job: &Value) -> &Vec<Value> {
    job["tasks"].as_array().unwrap()
}

fn node_state(farm: &Farm, id: &str) -> Value {
    let (_, nodes) = farm.get("/api/v1/nodes");
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .map_or(Value::Null, |n| n["state"].clone())
}

#[test]
fn the_tutorial_api_renders_a_job_across_two_nodes() {
    // The tutorial's orchestrator cuts jobs into chunks of its BATCH_SIZE, 5.
    let farm = Farm::builder()
        .nodes(2)
        .orchestrator_args(&["--batch-size", "5"])
        .start();
    let resp = farm
        .http()
        .post(farm.url("/render"))
        .json(&json!({"from": 1, "to": 20}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let (_, accepted) = json_of(resp);
    let id = accepted["jobId"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/status/{id}"));

    // The tutorial's client: poll the Location until it answers 200.
    let deadline = Instant::now() + JOB_DEADLINE;
    let done = loop {
        assert!(Instant::now() < deadline, "job {id} never completed");
        let resp = farm.http().get(farm.url(&location)).send().unwrap();
        let status = resp.status();
        if status == StatusCode::ACCEPTED {
            assert_eq!(resp.headers()["location"], location.as_str());
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry >= 1, "Retry-After {retry}");
            let (_, body) = json_of(resp);
            assert_eq!(body["status"], "Job still running", "{body}");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        assert_eq!(status, StatusCode::OK);
        break json_of(resp).1;
    };
    assert_eq!(done["status"], "Job completed", "{done}");
    assert_eq!(done["state"], "completed");
    assert_eq!(done["jobId"], id.as_str());
    assert_eq!(
        (done["framesDone"].as_u64(), done["framesTotal"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(done["failedFrames"], json!([]));
    assert!(done["failure"].is_null());

    // Every frame, in one folder shared by both nodes, and nothing else (no partial debris).
    farm.assert_frames(&id, 1, 20);
    assert_eq!(farm.output_files(&id), frame_names(1, 20));

    let job = farm.job(&id);
    assert_eq!(job["state"], "completed");
    assert_eq!(job["status"], "Job completed");
    assert_eq!(
        (job["frames_done"].as_u64(), job["frames_total"].as_u64()),
        (Some(20), Some(20))
    );
    // Chunks of at most BATCH_SIZE frames that cover 1-20 once. An idle node may take the
    // unstarted tail of the other's chunk (issue 8), so there may be more than four.
    let tasks_total = job["tasks_total"].as_u64().unwrap();
    assert_eq!(job["tasks_done"].as_u64(), Some(tasks_total));
    assert!(tasks_total >= 4, "{job}");
    assert_eq!(tasks(&job).len() as u64, tasks_total);
    let mut spans: Vec<(i64, i64)> = tasks(&job)
        .iter()
        .map(|task| {
            assert_eq!(task["state"], "completed", "{task}");
            assert_eq!(task["attempts"], 0, "{task}");
            (task["from"].as_i64().unwrap(), task["to"].as_i64().unwrap())
        })
        .collect();
    spans.sort();
    let mut next = 1;
    for (from, to) in spans {
        assert_eq!(from, next, "chunks leave a gap or overlap: {job}");
        assert!(
            to >= from && to - from < 5,
            "chunk {from}-{to} is over 5 frames"
        );
        next = to + 1;
    }
    assert_eq!(next, 21);
    assert_eq!(tasks(&job)[0]["from"], 1);
    assert_eq!(tasks(&job)[1]["from"], 6);
    // Dynamic dispatch: both nodes got work.
    let used: BTreeSet<String> = Farm::task_nodes(&job).into_iter().collect();
    let expected: BTreeSet<String> = [farm.node_id(0), farm.node_id(1)].into();
    assert_eq!(used, expected);
    let out = farm.output_dir().canonicalize().unwrap();
    let frames = farm.frames(&id);
    assert_eq!(frames.len(), 20);
    for (i, frame) in frames.iter().enumerate() {
        let n = i + 1;
        assert_eq!(frame["frame"], n);
        assert_eq!(frame["state"], "done");
        let path = out.join(&id).join(format!("frame_{n:04}.png"));
        assert_eq!(frame["path"], path.to_str().unwrap(), "{frame}");
    }

    // Tasks and frames are paged (hardening defect 3: a job's views do not grow with it).
    let (status, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks?offset=1&limit=2"));
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (
            page["total"].as_u64(),
            page["tasks"].as_array().map(Vec::len)
        ),
        (Some(tasks_total), Some(2))
    );
    assert_eq!(page["tasks"][0]["from"], 6);
    let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/frames?offset=18&limit=5"));
    let numbers: Vec<i64> = page["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["frame"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [19, 20]);
    for bad in ["limit=0", "limit=5001", "offset=x", "frame=3"] {
        let (status, problem) = farm.get(&format!("/api/v1/jobs/{id}/frames?{bad}"));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert_eq!(
            problem["field"],
            bad.split('=').next().unwrap(),
            "{problem}"
        );
    }

    let (status, list) = farm.get("/api/v1/jobs");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1);
    assert_eq!(list["jobs"][0]["id"], id.as_str());
    assert_eq!(farm.get("/api/v1/jobs?state=completed").1["total"], 1);
    assert_eq!(farm.get("/api/v1/jobs?state=running").1["total"], 0);

    // An ended job can be neither paused, resumed, re-queued nor cancelled: one rule
    // (hardening defect 9: cancelling a completed job answered 200).
    for action in ["pause", "resume", "requeue", "cancel"] {
        let (status, problem) = farm.job_action(&id, action);
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {problem}");
    }
    assert_eq!(farm.job(&id)["state"], "completed");

    let metrics = farm
        .http()
        .get(farm.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let completed_tasks = format!("corral_tasks{{state=\"completed\"}} {tasks_total}");
    for line in [
        "corral_frames_rendered 20",
        "corral_jobs{state=\"completed\"} 1",
        &completed_tasks,
        "corral_nodes_up 2",
        "corral_nodes_known 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }

    let (status, openapi) = farm.get("/api/v1/openapi.json");
    assert_eq!(status, StatusCode::OK);
    let paths = openapi["paths"].as_object().unwrap();
    for path in [
        "/render",
        "/status/{id}",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/nodes",
    ] {
        assert!(
            paths.contains_key(path),
            "no {path} in the OpenAPI document"
        );
    }

    let (_, nodes) = farm.get("/api/v1/nodes");
    for node in nodes.as_array().unwrap() {
        assert_eq!(node["state"], "up", "{node}");
        assert_eq!(node["blender_version"], "3.4.1");
        assert_eq!(node["slots"], 1);
        assert_eq!(node["running_tasks"], json!([]));
    }
    assert_eq!(
        farm.get("/healthz"),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let (status, ready) = farm.get("/readyz");
    assert_eq!(
        (status, &ready["status"]),
        (StatusCode::OK, &json!("ready"))
    );
    assert_eq!(
        ready["dispatching"], true,
        "a lone orchestrator dispatches: {ready}"
    );
}

#[test]
fn a_killed_node_loses_only_its_lease_and_the_job_completes() {
    let mut farm = Farm::builder()
        .nodes(2)
        .orchestrator_args(&["--node-timeout", "3"])
        .start();
    let id = farm.submit(&json!({"from": 1, "to": 20, "chunk_size": 2}));
    farm.wait_task_running_on(&id, 0);
    let victim = farm.node_id(0);
    let survivor = farm.node_id(1);
    let lost_task = tasks(&farm.job(&id))
        .iter()
        .find(|t| t["state"] == "running" && t["node"] == victim.as_str())
        .map(|t| t["id"].clone())
        .unwrap();
    farm.nodes[0]
        .signal_and_wait(Signal::SIGKILL, Duration::from_secs(5))
        .expect("node did not die");
    assert!(
        eventually(Duration::from_secs(5), || blender_processes_under(
            farm.nodes[0].dir.path()
        )
        .is_empty()),
        "Blender outlived its SIGKILLed node"
    );

    let job = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["frames_done"], 20);
    assert!(
        tasks(&job).iter().all(|t| t["state"] == "completed"),
        "{job}"
    );
    // The task the dead node held was rendered again by the other one, without counting
    // a failed attempt (the node died, not the task).
    let retried = tasks(&job).iter().find(|t| t["id"] == lost_task).unwrap();
    assert_eq!(retried["node"], survivor.as_str(), "{retried}");
    assert_eq!(retried["attempts"], 0, "{retried}");
    farm.assert_frames(&id, 1, 20);
    let frames: Vec<String> = farm
        .output_files(&id)
        .into_iter()
        .filter(|f| !f.starts_with('.'))
        .collect();
    assert_eq!(frames, frame_names(1, 20));

    assert!(
        eventually(Duration::from_secs(30), || node_state(&farm, &victim)
            == "down"),
        "the killed node is still listed as {}",
        node_state(&farm, &victim)
    );
    assert_eq!(node_state(&farm, &survivor), "up");
}

#[test]
fn a_restarted_orchestrator_resumes_from_its_database() {
    let mut farm = Farm::builder().nodes(2).join(Join::Static).start();
    let id = farm.submit(&json!({"from": 1, "to": 20, "chunk_size": 2}));
    // Kill it with work both done and in flight.
    let mut last = Value::Null;
    let mid_job = eventually(JOB_DEADLINE, || {
        last = farm.job(&id);
        last["frames_done"].as_u64().unwrap() >= 2
            && tasks(&last).iter().any(|t| t["state"] == "running")
    });
    assert!(mid_job, "the job never got going: {last}");
    farm.kill_orchestrator();
    // The nodes keep rendering meanwhile; some tasks end while nobody watches.
    std::thread::sleep(Duration::from_secs(2));
    farm.restart_orchestrator();

    let (status, view) = farm.get(&format!("/status/{id}"));
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::OK,
        "{status} {view}"
    );
    assert_eq!(view["jobId"], id.as_str());
    let job = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["frames_done"], 20);
    farm.assert_frames(&id, 1, 20);
    assert_eq!(farm.output_files(&id), frame_names(1, 20));
    let (status, view) = farm.get(&format!("/status/{id}"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "Job completed");
    assert_eq!(farm.get("/api/v1/jobs").1["total"], 1);
    assert!(farm.busy_blenders().is_empty());
}

/// Every frame of a job's tasks (as its task list gives them), in order: each frame once
/// when the tasks cover the job without overlap.
fn task_frames(tasks: &[Value]) -> Vec<i64> {
    let mut frames: Vec<i64> = tasks
        .iter()
        .flat_map(|t| t["from"].as_i64().unwrap()..=t["to"].as_i64().unwrap())
        .collect();
    frames.sort_unstable();
    frames
}

/// Issue 8: a job that names no chunk size is cut at dispatch, an even share per node until
/// the frame time is measured, then pieces sized by it that shrink toward the end; with
/// `preview_first`, its first, middle and last frames render before the rest.
#[test]
fn the_farm_sizes_tasks_and_renders_preview_frames_first() {
    let farm = Farm::builder().nodes(2).start();
    let id = farm.submit(&json!({"from": 1, "to": 20, "preview_first": true}));
    let job = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(job["state"], "completed", "{job}");
    assert!(job["chunk_size"].is_null(), "{job}");
    farm.assert_frames(&id, 1, 20);
    assert_eq!(farm.output_files(&id), frame_names(1, 20));
    let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks?limit=500"));
    let tasks = page["tasks"].as_array().unwrap().clone();
    // Every frame in exactly one completed task.
    assert_eq!(task_frames(&tasks), (1..=20).collect::<Vec<_>>(), "{page}");
    assert!(tasks.iter().all(|t| t["state"] == "completed"), "{page}");
    // The preview frames (1, the middle 10, and 20) were one-frame tasks started first.
    let started = |t: &Value| t["started_at"].as_str().unwrap().to_string();
    let previews: Vec<&Value> = tasks
        .iter()
        .filter(|t| [1, 10, 20].contains(&t["from"].as_i64().unwrap()) && t["from"] == t["to"])
        .collect();
    assert_eq!(previews.len(), 3, "{page}");
    let last_preview = previews.iter().map(|t| started(t)).max().unwrap();
    let first_other = tasks
        .iter()
        .filter(|t| !previews.iter().any(|p| p["id"] == t["id"]))
        .map(started)
        .min()
        .unwrap();
    assert!(last_preview <= first_other, "{page}");
    // Sized by the farm: more tasks than the two nodes, fewer than the frames.
    assert!(tasks.len() > 2 && tasks.len() < 20, "{} tasks", tasks.len());
}

/// Issue 8: a job that names no chunk size starts as an even share of its frames per slot
/// (one node: every frame, in one render); once that render's frame time is measured, the
/// frames beyond the orchestrator's `--task-length` go back to the queue, so the node is
/// held no longer than that before the queue is looked at again.
#[test]
fn a_render_longer_than_the_task_length_gives_its_tail_back() {
    let farm = Farm::builder()
        .nodes(1)
        .orchestrator_args(&["--task-length", "1"])
        .start();
    let id = farm.submit(&json!({"from": 1, "to": 120}));
    let job = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(job["state"], "completed", "{job}");
    farm.assert_frames(&id, 1, 120);
    assert_eq!(farm.output_files(&id), frame_names(1, 120));
    let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks?limit=500"));
    let tasks = page["tasks"].as_array().unwrap();
    assert_eq!(task_frames(tasks), (1..=120).collect::<Vec<_>>(), "{page}");
    // One node and nothing else queued: without the cut, the first render kept all 120.
    let first = tasks.iter().find(|t| t["from"] == 1).unwrap();
    assert!(first["to"].as_i64().unwrap() < 120, "never cut: {page}");
    assert!(tasks.iter().all(|t| t["state"] == "completed"), "{page}");
}

/// A node started with `--max-frames` refuses a longer render: the dispatcher cuts every
/// task it gives that node to that length, whether the submitter fixed the chunk size or
/// the farm sizes it, and the rest waits for the next slot. Every frame renders once.
#[test]
fn no_node_is_given_more_frames_than_its_max_frames() {
    let farm = Farm::builder()
        .nodes(1)
        .node_args(&["--max-frames", "3"])
        .start();
    let (_, nodes) = farm.get("/api/v1/nodes");
    assert_eq!(nodes[0]["max_frames"], 3, "{nodes}");
    let fixed = farm.submit(&json!({"from": 1, "to": 8, "chunk_size": 8}));
    let sized = farm.submit(&json!({"from": 11, "to": 17}));
    for (id, from, to) in [(&fixed, 1, 8), (&sized, 11, 17)] {
        let job = farm.wait_job_ended(id, JOB_DEADLINE);
        assert_eq!(job["state"], "completed", "{job}");
        farm.assert_frames(id, from, to);
        assert_eq!(farm.output_files(id), frame_names(from, to));
        let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks?limit=500"));
        let tasks = page["tasks"].as_array().unwrap();
        assert_eq!(
            task_frames(tasks),
            (from..=to).collect::<Vec<_>>(),
            "{page}"
        );
        assert!(
            tasks.iter().all(|t| t["state"] == "completed"
                && t["to"].as_i64().unwrap() - t["from"].as_i64().unwrap() < 3),
            "a task longer than the node takes, or one that failed: {page}"
        );
    }
}

/// Issue 8: with a node idle and nothing queued, the running render's unstarted tail is
/// taken (the node stops after its current frame) and rendered by the idle node; every
/// frame exists once and the job completes.
#[test]
fn an_idle_node_takes_the_unstarted_tail_of_a_running_render() {
    let farm = Farm::builder().nodes(2).start();
    // One task of every frame: without tail stealing, one node would render all 20.
    let id = farm.submit(&json!({"from": 1, "to": 20, "chunk_size": 20}));
    let job = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(job["state"], "completed", "{job}");
    farm.assert_frames(&id, 1, 20);
    assert_eq!(farm.output_files(&id), frame_names(1, 20));
    let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks?limit=500"));
    let tasks = page["tasks"].as_array().unwrap();
    assert!(tasks.len() >= 2, "the tail was never taken: {page}");
    assert_eq!(task_frames(tasks), (1..=20).collect::<Vec<_>>(), "{page}");
    let nodes: BTreeSet<&str> = farm
        .frames(&id)
        .iter()
        .filter_map(|f| f["node"].as_str())
        .map(|n| if n == farm.node_id(0) { "a" } else { "b" })
        .collect();
    assert_eq!(nodes.len(), 2, "both nodes rendered frames");
}

#[test]
fn a_broken_scene_fails_the_job_after_three_attempts_with_blenders_error() {
    let farm = Farm::builder()
        .nodes(2)
        // A .blend header, then garbage: the node accepts it and Blender finds it broken.
        .scene_file(
            "broken.blend",
            &[&b"BLENDER-v304REND"[..], &b"not a blend file\n".repeat(256)].concat(),
        )
        .start();
    let id = farm.submit(&json!({"scene": "broken.blend", "from": 1, "to": 2, "chunk_size": 2}));
    let job = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["status"], "Job failed");
    assert_eq!(job["scene"], "broken.blend");
    let failure = job["failure"].as_str().unwrap();
    assert!(failure.contains("Failed to read blend file"), "{failure}");
    let [task] = tasks(&job).as_slice() else {
        panic!("one task expected: {job}");
    };
    assert_eq!(task["state"], "failed");
    assert_eq!(task["attempts"], 3, "{task}");
    assert!(
        task["failure"]
            .as_str()
            .unwrap()
            .contains("Failed to read blend file"),
        "{task}"
    );
    let tail = task["log_tail"].as_array().unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().starts_with("Error:")),
        "{task}"
    );
    assert!(farm.frames(&id).iter().all(|f| f["state"] == "pending"));

    let (status, view) = farm.get(&format!("/status/{id}"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "Job failed");
    assert_eq!(view["state"], "failed");
    // Frame lists are runs, not every frame.
    assert_eq!(view["failedFrames"], json!([{"from": 1, "to": 2}]));
    assert_eq!(view["framesDone"], 0);
    assert!(
        view["failure"]
            .as_str()
            .unwrap()
            .contains("Failed to read blend file"),
        "{view}"
    );

    // Re-queued, it gets three fresh attempts (and fails again: the file is still bad).
    let (status, requeued) = farm.job_action(&id, "requeue");
    assert_eq!(status, StatusCode::OK, "{requeued}");
    assert!(requeued["failure"].is_null(), "{requeued}");
    let again = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(again["state"], "failed", "{again}");
    assert_eq!(tasks(&again)[0]["attempts"], 3, "{again}");
    assert!(farm.busy_blenders().is_empty());
}

#[test]
fn cancel_stops_every_blender_of_the_job() {
    let farm = Farm::builder().nodes(2).scene(Scene::Slow).start();
    let id = farm.submit(&json!({"from": 1, "to": 4, "chunk_size": 1}));
    farm.wait_task_running_on(&id, 0);
    farm.wait_task_running_on(&id, 1);

    let (status, job) = farm.job_action(&id, "cancel");
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["status"], "Job cancelled");
    assert!(
        eventually(Duration::from_secs(2), || farm.busy_blenders().is_empty()),
        "Blender still running 2 s after cancel"
    );
    let job = farm.job(&id);
    assert!(
        tasks(&job).iter().all(|t| t["state"] == "cancelled"),
        "{job}"
    );
    for node in &farm.nodes {
        let (_, jobs) = json_of(
            farm.http()
                .get(format!("{}/jobs", node.url))
                .send()
                .unwrap(),
        );
        let jobs = jobs.as_array().unwrap();
        assert!(!jobs.is_empty());
        assert!(jobs.iter().all(|j| j["state"] == "cancelled"), "{jobs:?}");
    }
    let (status, view) = farm.get(&format!("/status/{id}"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "Job cancelled");
    // Hardening defect 9: cancelled frames did not fail.
    assert_eq!(view["failedFrames"], json!([]));
    // One rule for every command on an ended job: 409.
    for action in ["cancel", "pause", "resume"] {
        let (status, problem) = farm.job_action(&id, action);
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("cancelled"),
            "{problem}"
        );
    }
    // Nothing is dispatched afterwards.
    std::thread::sleep(Duration::from_secs(2));
    assert!(farm.busy_blenders().is_empty());
    assert!(tasks(&farm.job(&id))
        .iter()
        .all(|t| t["state"] == "cancelled"));
}

#[test]
fn a_node_that_joins_mid_job_gets_work() {
    let mut farm = Farm::builder().nodes(1).start();
    let id = farm.submit(&json!({"from": 1, "to": 20, "chunk_size": 2}));
    farm.wait_task_running_on(&id, 0);
    let late = farm.add_node();
    farm.wait_nodes_up(2);
    let job = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(job["state"], "completed", "{job}");
    let late_id = farm.node_id(late);
    let late_tasks = Farm::task_nodes(&job)
        .iter()
        .filter(|n| **n == late_id)
        .count();
    assert!(late_tasks >= 1, "the late node got no task: {job}");
    assert!(
        farm.frames(&id)
            .iter()
            .any(|f| f["node"] == late_id.as_str()),
        "{job}"
    );
    farm.assert_frames(&id, 1, 20);
    assert_eq!(farm.output_files(&id), frame_names(1, 20));
}

/// A bad request gets a 4xx problem naming the field, on both APIs, and changes nothing.
#[test]
fn bad_input_is_refused_with_a_problem_and_changes_nothing() {
    let farm = Farm::builder().nodes(0).start();
    let http = farm.http();
    let expect_problem = |resp: reqwest::blocking::Response, status: StatusCode, what: &str| {
        assert_eq!(resp.status(), status, "{what}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let (_, problem) = json_of(resp);
        assert_eq!(problem["status"], status.as_u16(), "{what}: {problem}");
        assert!(problem["title"].is_string(), "{what}: {problem}");
        problem
    };
    let post_raw = |path: &str, body: &str| {
        http.post(farm.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };

    let common_cases: Vec<(&str, String, &str)> = vec![
        ("missing from", json!({"to": 2}).to_string(), "from"),
        ("missing to", json!({"from": 1}).to_string(), "to"),
        ("null", json!({"from": null, "to": 2}).to_string(), "from"),
        ("string", json!({"from": "1", "to": 2}).to_string(), "from"),
        (
            "shell string",
            json!({"from": "1; touch /tmp/x", "to": 2}).to_string(),
            "from",
        ),
        ("float", r#"{"from": 1.5, "to": 2}"#.into(), "from"),
        ("float to", r#"{"from": 1, "to": 2.0}"#.into(), "to"),
        ("bool", json!({"from": true, "to": 2}).to_string(), "from"),
        ("reversed", json!({"from": 5, "to": 2}).to_string(), "to"),
        ("negative", json!({"from": -1, "to": 5}).to_string(), "from"),
        (
            "below Blender",
            json!({"from": -1048575, "to": 2}).to_string(),
            "from",
        ),
        (
            "above Blender",
            json!({"from": 1, "to": 1048575}).to_string(),
            "to",
        ),
        (
            "huge",
            json!({"from": 1, "to": 1u64 << 62}).to_string(),
            "to",
        ),
        (
            "unknown field",
            json!({"from": 1, "to": 2, "frm": 1}).to_string(),
            "frm",
        ),
        ("non-JSON", "from=1&to=2".into(), "body"),
        ("truncated", r#"{"from": 1, "#.into(), "body"),
        ("empty", "".into(), "body"),
        ("array", "[1, 2]".into(), "body"),
    ];
    let native_cases: Vec<(&str, String, &str)> = vec![
        (
            "too many frames",
            json!({"from": 1, "to": 100_001}).to_string(),
            "to",
        ),
        (
            "chunk 0",
            json!({"from": 1, "to": 2, "chunk_size": 0}).to_string(),
            "chunk_size",
        ),
        (
            "chunk -1",
            json!({"from": 1, "to": 2, "chunk_size": -1}).to_string(),
            "chunk_size",
        ),
        (
            "chunk float",
            r#"{"from": 1, "to": 2, "chunk_size": 2.5}"#.into(),
            "chunk_size",
        ),
        (
            "chunk string",
            json!({"from": 1, "to": 2, "chunk_size": "5"}).to_string(),
            "chunk_size",
        ),
        (
            "priority",
            json!({"from": 1, "to": 2, "priority": 5000}).to_string(),
            "priority",
        ),
        (
            "priority string",
            json!({"from": 1, "to": 2, "priority": "high"}).to_string(),
            "priority",
        ),
        (
            "scene escapes",
            json!({"from": 1, "to": 2, "scene": "../x.blend"}).to_string(),
            "scene",
        ),
        (
            "absolute scene",
            json!({"from": 1, "to": 2, "scene": "/etc/passwd"}).to_string(),
            "scene",
        ),
        (
            "empty scene",
            json!({"from": 1, "to": 2, "scene": ""}).to_string(),
            "scene",
        ),
        (
            "scene number",
            json!({"from": 1, "to": 2, "scene": 7}).to_string(),
            "scene",
        ),
        (
            "output escapes",
            json!({"from": 1, "to": 2, "output": "../../x_####"}).to_string(),
            "output",
        ),
        (
            "absolute output",
            json!({"from": 1, "to": 2, "output": "/tmp/x_####"}).to_string(),
            "output",
        ),
        (
            "engine",
            json!({"from": 1, "to": 2, "engine": "LUX"}).to_string(),
            "engine",
        ),
        (
            "movie format",
            json!({"from": 1, "to": 2, "format": "FFMPEG"}).to_string(),
            "format",
        ),
    ];
    let render_cases: Vec<(&str, String, &str)> = vec![
        (
            "scene on /render",
            json!({"from": 1, "to": 2, "scene": "a.blend"}).to_string(),
            "scene",
        ),
        (
            "chunk on /render",
            json!({"from": 1, "to": 2, "chunk_size": 2}).to_string(),
            "chunk_size",
        ),
    ];
    for (path, extra) in [("/api/v1/jobs", &native_cases), ("/render", &render_cases)] {
        for (what, body, field) in common_cases.iter().chain(extra.iter()) {
            let what = format!("POST {path} {what}: {body}");
            let problem = expect_problem(post_raw(path, body), StatusCode::BAD_REQUEST, &what);
            assert_eq!(problem["field"], *field, "{what}: {problem}");
            assert!(problem["detail"].is_string(), "{what}: {problem}");
        }
        let big = format!(
            r#"{{"from": 1, "to": 2, "scene": "{}"}}"#,
            "a".repeat(100_000)
        );
        expect_problem(post_raw(path, &big), StatusCode::PAYLOAD_TOO_LARGE, path);
        let resp = http
            .post(farm.url(path))
            .header("content-type", "text/plain")
            .body(r#"{"from": 1, "to": 2}"#)
            .send()
            .unwrap();
        expect_problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, path);
        let resp = http.put(farm.url(path)).send().unwrap();
        expect_problem(resp, StatusCode::METHOD_NOT_ALLOWED, path);
    }

    // Unknown and malformed job ids: 404 "Job not found" on every job route.
    let long = "x".repeat(300);
    for key in [
        "01a2202f-24a9-70e4-8413-dcefffffc63e",
        "not-a-job",
        "1",
        "-1",
        "a%2Fb",
        "01a2202f-24a9-70e4-8413-dcefffffc63e'--",
        long.as_str(),
    ] {
        let mut requests = vec![
            ("GET", format!("/status/{key}")),
            ("GET", format!("/api/v1/jobs/{key}")),
        ];
        for action in ["cancel", "requeue", "pause", "resume"] {
            requests.push(("POST", format!("/api/v1/jobs/{key}/{action}")));
        }
        for (method, path) in requests {
            let resp = http
                .request(method.parse().unwrap(), farm.url(&path))
                .send()
                .unwrap();
            let what = format!("{method} {path}");
            let problem = expect_problem(resp, StatusCode::NOT_FOUND, &what);
            assert_eq!(problem["title"], "Job not found", "{what}");
        }
    }
    // Unknown nodes.
    for (method, path) in [
        ("POST", "/api/v1/nodes/nope:1/drain"),
        ("POST", "/api/v1/nodes/nope:1/enable"),
        ("DELETE", "/api/v1/nodes/nope:1"),
    ] {
        let resp = http
            .request(method.parse().unwrap(), farm.url(path))
            .send()
            .unwrap();
        expect_problem(resp, StatusCode::NOT_FOUND, path);
    }
    // Bad node registrations.
    for (what, body, field) in [
        ("missing url", json!({}).to_string(), "url"),
        ("null url", json!({"url": null}).to_string(), "url"),
        ("number", json!({"url": 5}).to_string(), "url"),
        ("ftp", json!({"url": "ftp://x:21"}).to_string(), "url"),
        (
            "path",
            json!({"url": "http://x:3000/path"}).to_string(),
            "url",
        ),
        ("no host", json!({"url": "http://"}).to_string(), "url"),
        (
            "space",
            json!({"url": "http://a b:3000"}).to_string(),
            "url",
        ),
        (
            "query",
            json!({"url": "http://a:3000?x=1"}).to_string(),
            "url",
        ),
        (
            "unknown field",
            json!({"url": "http://a:3000", "slots": 2}).to_string(),
            "slots",
        ),
        ("non-JSON", "url=http://a:3000".into(), "body"),
    ] {
        let what = format!("POST /api/v1/nodes {what}: {body}");
        let problem = expect_problem(
            post_raw("/api/v1/nodes", &body),
            StatusCode::BAD_REQUEST,
            &what,
        );
        assert_eq!(problem["field"], field, "{what}: {problem}");
    }
    // Bad list queries.
    for (query, field) in [
        ("state=bogus", "state"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        // Hardening defect 9: the field named is the parameter at fault.
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("sort=id", "sort"),
    ] {
        let resp = http
            .get(farm.url(&format!("/api/v1/jobs?{query}")))
            .send()
            .unwrap();
        let problem = expect_problem(resp, StatusCode::BAD_REQUEST, query);
        assert_eq!(problem["field"], field, "{query}: {problem}");
    }
    let resp = http.get(farm.url("/api/v1/nope")).send().unwrap();
    expect_problem(resp, StatusCode::NOT_FOUND, "unknown route");

    // Nothing was stored.
    let (status, list) = farm.get("/api/v1/jobs");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 0, "{list}");
    assert_eq!(list["jobs"], json!([]));
    assert_eq!(farm.get("/api/v1/nodes").1, json!([]));
}

/// Every node refuses an output pattern that names a folder (`shots/`), so the
/// orchestrator must refuse it at submission instead of storing a job that can only fail
/// after burning every attempt.
#[test]
fn an_output_pattern_the_nodes_refuse_is_refused_at_submission() {
    let farm = Farm::builder().nodes(0).start();
    let (status, problem) = farm.post(
        "/api/v1/jobs",
        &json!({"from": 1, "to": 2, "output": "shots/"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "output", "{problem}");
    assert_eq!(farm.get("/api/v1/jobs").1["total"], 0);
}

/// An offset past every job gives an empty page (or a 400), never the first page.
#[test]
fn a_huge_list_offset_does_not_wrap_around_to_the_first_page() {
    let farm = Farm::builder().nodes(0).start();
    farm.submit(&json!({"from": 1, "to": 2}));
    for offset in ["1", "9223372036854775808", "18446744073709551615"] {
        let (status, page) = farm.get(&format!("/api/v1/jobs?offset={offset}"));
        if status == StatusCode::BAD_REQUEST {
            continue;
        }
        assert_eq!(status, StatusCode::OK, "offset {offset}: {page}");
        assert_eq!(page["jobs"], json!([]), "offset {offset}: {page}");
        assert_eq!(page["total"], 1, "offset {offset}: {page}");
    }
}

/// Subscribes to `/api/v1/events`; every `(event name, data)` arrives on the channel.
fn subscribe(farm: &Farm) -> mpsc::Receiver<(String, Value)> {
    let resp = Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(farm.url("/api/v1/events"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                let value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                if tx.send((name.clone(), value)).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[test]
fn pause_holds_new_tasks_resume_finishes_and_events_tell_it_all() {
    let farm = Farm::builder().nodes(1).start();
    let events = subscribe(&farm);
    let id = farm.submit(&json!({"from": 1, "to": 6, "chunk_size": 1}));
    farm.wait_task_running_on(&id, 0);

    let (status, paused) = farm.job_action(&id, "pause");
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["state"], "paused");
    // The running task finishes; no other starts while the job is paused.
    let mut last = Value::Null;
    let idle = eventually(JOB_DEADLINE, || {
        last = farm.job(&id);
        !tasks(&last).iter().any(|t| t["state"] == "running")
    });
    assert!(idle, "a task kept running: {last}");
    let queued = |job: &Value| tasks(job).iter().filter(|t| t["state"] == "queued").count();
    let waiting = queued(&last);
    assert!(waiting >= 1, "{last}");
    std::thread::sleep(Duration::from_secs(2));
    let job = farm.job(&id);
    assert_eq!(job["state"], "paused", "{job}");
    assert_eq!(queued(&job), waiting, "a task started while paused: {job}");
    assert!(farm.busy_blenders().is_empty());
    let (status, view) = farm.get(&format!("/status/{id}"));
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "a paused job has not ended: {view}"
    );
    assert_eq!(view["status"], "Job still running");

    let (status, resumed) = farm.job_action(&id, "resume");
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_ne!(resumed["state"], "paused");
    let job = farm.wait_job_ended(&id, JOB_DEADLINE);
    assert_eq!(job["state"], "completed", "{job}");
    farm.assert_frames(&id, 1, 6);

    // Events: read until the job's completion event.
    let mut job_states = Vec::new();
    let mut task_states: HashMap<i64, Vec<String>> = HashMap::new();
    let mut frames = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while job_states.last().map(String::as_str) != Some("completed") {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((name, event)) = events.recv_timeout(left) else {
            panic!("no completion event; job states {job_states:?}, tasks {task_states:?}, frames {frames:?}");
        };
        assert_eq!(event["kind"], name.as_str(), "{event}");
        match name.as_str() {
            "job" if event["id"] == id.as_str() => {
                job_states.push(event["state"].as_str().unwrap().to_string());
                assert_eq!(event["frames_total"], 6);
            }
            "task" if event["job"] == id.as_str() => {
                assert_eq!(event["node"], farm.node_id(0).as_str(), "{event}");
                task_states
                    .entry(event["id"].as_i64().unwrap())
                    .or_default()
                    .push(event["state"].as_str().unwrap().to_string());
            }
            "frame" if event["job"] == id.as_str() => {
                let frame = event["frame"].as_i64().unwrap();
                let path = event["path"].as_str().unwrap();
                assert!(
                    path.ends_with(&format!("{id}/frame_{frame:04}.png")),
                    "{event}"
                );
                frames.insert(frame);
            }
            _ => {}
        }
    }
    assert_eq!(frames, (1..=6).collect::<BTreeSet<i64>>());
    assert_eq!(
        job_states.first().map(String::as_str),
        Some("queued"),
        "{job_states:?}"
    );
    assert!(job_states.iter().any(|s| s == "paused"), "{job_states:?}");
    assert_eq!(task_states.len(), 6, "{task_states:?}");
    for (task, states) in &task_states {
        assert_eq!(states, &["running", "completed"], "task {task}");
    }
}
