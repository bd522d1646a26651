//! `POST /job/{id}/truncate` on a real `corral node` with real Blender, cold and warm: a
//! render truncated while it runs ends completed with exactly the frames of its new range,
//! and no file beyond it; a truncation below the frame being rendered ends after that
//! frame; a queued render starts with the shorter range; an ended render answers `409`.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::{eventually, NodeProcess};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// A scene whose frames take a second or two (200 Cycles samples at 64x48, one thread),
/// so a test can truncate it while it renders frame 1 or 2. Made once per test binary.
fn medium_scene() -> PathBuf {
    static MADE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = made.as_ref() {
        return path.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("truncate-scenes");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("medium-{}.blend", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make_scene.py");
    let out = std::process::Command::new("blender")
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(&path)
        .args(["--samples", "200", "--start", "1", "--end", "10"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    *made = Some(path.clone());
    path
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    let resp = client().post(url).json(body).send().unwrap();
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

fn view(node: &NodeProcess, id: &str) -> Value {
    client()
        .get(format!("{}/job/{id}", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn wait_done(node: &NodeProcess, id: &str) -> Value {
    let mut since = 0u64;
    for _ in 0..600 {
        let resp = client()
            .get(format!("{}/job/{id}?wait=20&since={since}", node.url))
            .send()
            .unwrap();
        let status = resp.status();
        let view: Value = resp.json().unwrap();
        if status == StatusCode::OK {
            return view;
        }
        since = view["version"].as_u64().unwrap();
    }
    panic!("job {id} did not end");
}

/// Submits frames 1-10 and waits until Blender renders frame `frame`; answers the id.
fn start_at_frame(node: &NodeProcess, output: &str, frame: i64) -> String {
    let (status, job) = post(
        &format!("{}/job", node.url),
        &json!({"from": 1, "to": 10, "output": format!("{output}/f_####")}),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(60), || view(node, &id)["current_frame"]
            .as_i64()
            .is_some_and(|f| f >= frame)),
        "the render never reached frame {frame}: {}",
        view(node, &id)
    );
    id
}

fn truncate(node: &NodeProcess, id: &str, to: i64) -> (StatusCode, Value) {
    post(
        &format!("{}/job/{id}/truncate", node.url),
        &json!({ "to": to }),
    )
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The job completed with exactly frames 1-`end`, and its folder holds those files only.
fn assert_completed_with(node: &NodeProcess, done: &Value, output: &str, end: i64) {
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        (done["from"].as_i64(), done["to"].as_i64()),
        (Some(1), Some(end))
    );
    assert_eq!(done["frames_total"].as_i64(), Some(end), "{done}");
    assert_eq!(done["frames_done"].as_i64(), Some(end), "{done}");
    let frames: Vec<i64> = done["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["frame"].as_i64().unwrap())
        .collect();
    assert_eq!(frames, (1..=end).collect::<Vec<_>>());
    let expected: Vec<String> = (1..=end).map(|f| format!("f_{f:04}.png")).collect();
    assert_eq!(files(&node.out_dir().join(output)), expected);
}

fn truncation_in(mode: &str) {
    let blend = medium_scene();
    let node = NodeProcess::start(&["--blend", blend.to_str().unwrap(), "--render-mode", mode]);

    // Truncated to 3 while frame 1 renders: frames 1-3, then completed.
    let id = start_at_frame(&node, "a", 1);
    let (status, answer) = truncate(&node, &id, 3);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"to": 3}));
    let running = view(&node, &id);
    assert_eq!(
        (running["to"].as_i64(), running["frames_total"].as_i64()),
        (Some(3), Some(3))
    );
    let done = wait_done(&node, &id);
    assert_completed_with(&node, &done, "a", 3);
    if mode == "cold" {
        assert!(done["exit_code"].is_null(), "Blender was stopped: {done}");
    }
    // An ended render has nothing to truncate.
    let (status, problem) = truncate(&node, &id, 2);
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["status"], 409);
    assert!(
        problem["detail"].as_str().unwrap().contains("ended"),
        "{problem}"
    );

    // Truncated below the frame it renders: it ends after that frame.
    let id = start_at_frame(&node, "b", 2);
    let current = view(&node, &id)["current_frame"].as_i64().unwrap();
    let (status, answer) = truncate(&node, &id, 1);
    assert_eq!(status, StatusCode::OK, "{answer}");
    let end = answer["to"].as_i64().unwrap();
    assert!(
        (current..=current + 1).contains(&end),
        "rendering frame {current}, truncated to {end}"
    );
    let done = wait_done(&node, &id);
    assert_completed_with(&node, &done, "b", end);

    if let Some(workers) = view_info(&node)["workers"].as_array() {
        assert!(workers.iter().all(|w| w["state"] == "idle"), "{workers:?}");
    }
    assert!(
        common::busy_blenders_under(node.dir.path(), std::slice::from_ref(&node.url)).is_empty(),
        "a Blender still renders"
    );
}

fn view_info(node: &NodeProcess) -> Value {
    client()
        .get(format!("{}/info", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn a_cold_render_is_truncated_while_it_runs() {
    truncation_in("cold");
}

#[test]
fn a_warm_render_is_truncated_while_it_runs() {
    truncation_in("warm");
}

/// A queued render starts with its truncated range; bad truncations are refused.
#[test]
fn a_queued_render_is_truncated_and_bad_requests_are_refused() {
    let blend = medium_scene();
    let node = NodeProcess::start(&["--blend", blend.to_str().unwrap(), "--render-mode", "cold"]);
    let running = start_at_frame(&node, "a", 1);
    let (_, queued) = post(
        &format!("{}/job", node.url),
        &json!({"from": 4, "to": 10, "output": "q/f_####"}),
    );
    let queued = queued["id"].as_str().unwrap().to_string();
    assert_eq!(view(&node, &queued)["state"], "queued");
    // Below its first frame: its first frame is all it renders.
    let (status, answer) = truncate(&node, &queued, 2);
    assert_eq!((status, answer), (StatusCode::OK, json!({"to": 4})));
    let (status, answer) = truncate(&node, &queued, 5);
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"to": 4})),
        "it never grows"
    );

    for (body, field) in [
        (json!({"to": "3"}), "to"),
        (json!({"to": -1}), "to"),
        (json!({}), "to"),
        (json!({"to": 3, "from": 1}), "from"),
    ] {
        let (status, problem) = post(&format!("{}/job/{queued}/truncate", node.url), &body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let (status, _) = truncate(&node, "01a2202f-24a9-70e4-8413-dcefffffc63e", 3);
    assert_eq!(status, StatusCode::NOT_FOUND);

    client()
        .delete(format!("{}/job/{running}", node.url))
        .send()
        .unwrap();
    let done = wait_done(&node, &queued);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        (done["from"].as_i64(), done["to"].as_i64()),
        (Some(4), Some(4))
    );
    assert_eq!(files(&node.out_dir().join("q")), ["f_0004.png"]);
}
